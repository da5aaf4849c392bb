//! The connection settings the user gave librdkafka, read the way librdkafka reads them,
//! so that the second client reaches the cluster exactly as the first does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::ProtocolError;

/// A SASL mechanism the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `PLAIN`: the password in the clear (only sensible inside TLS).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl Mechanism {
    /// The name brokers know it by.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials.
#[derive(Clone)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// `sasl.username`.
    pub username: String,
    /// `sasl.password`.
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to connect: TLS or not, SASL or not.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS configuration for `SSL` and `SASL_SSL`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL for `SASL_PLAINTEXT` and `SASL_SSL`.
    pub sasl: Option<Sasl>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

/// Properties this client reads; any other `security.`, `sasl.` or `ssl.` property is
/// refused by name, so that a setting librdkafka honours is never silently ignored.
const KNOWN: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification",
];

/// Reads `security.protocol`, `sasl.*` and `ssl.*` from librdkafka properties.
///
/// # Errors
/// [`ProtocolError::Unsupported`] naming the property for what this client does not do
/// (GSSAPI, OAUTHBEARER, PKCS#12 keystores, encrypted keys), and
/// [`ProtocolError::Tls`] for certificate files that cannot be read.
pub fn from_properties(props: &BTreeMap<String, String>) -> Result<Security, ProtocolError> {
    let get = |k: &str| props.get(k).map(|v| v.trim().to_string());
    for k in props.keys() {
        let scoped = k.starts_with("security.") || k.starts_with("sasl.") || k.starts_with("ssl.");
        if scoped && !KNOWN.contains(&k.as_str()) {
            return Err(ProtocolError::Unsupported(format!(
                "the agent's protocol client does not support the librdkafka property {k:?}"
            )));
        }
    }
    let protocol = get("security.protocol")
        .unwrap_or_else(|| "plaintext".into())
        .to_ascii_lowercase();
    let (tls, sasl) = match protocol.as_str() {
        "plaintext" => (false, false),
        "ssl" => (true, false),
        "sasl_plaintext" => (false, true),
        "sasl_ssl" => (true, true),
        other => {
            return Err(ProtocolError::Unsupported(format!(
                "security.protocol {other:?} (expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
            )));
        }
    };
    let sasl = if sasl {
        let mechanism = get("sasl.mechanisms")
            .or_else(|| get("sasl.mechanism"))
            .unwrap_or_else(|| "GSSAPI".into());
        let mechanism = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => Mechanism::Plain,
            "SCRAM-SHA-256" => Mechanism::ScramSha256,
            "SCRAM-SHA-512" => Mechanism::ScramSha512,
            other => {
                return Err(ProtocolError::Unsupported(format!(
                    "sasl.mechanisms {other:?}: the agent's protocol client speaks PLAIN, \
                     SCRAM-SHA-256 and SCRAM-SHA-512"
                )));
            }
        };
        let username = get("sasl.username").ok_or_else(|| {
            ProtocolError::Unsupported(format!(
                "sasl.username is required for {}",
                mechanism.name()
            ))
        })?;
        let password = props.get("sasl.password").cloned().ok_or_else(|| {
            ProtocolError::Unsupported(format!(
                "sasl.password is required for {}",
                mechanism.name()
            ))
        })?;
        Some(Sasl {
            mechanism,
            username,
            password,
        })
    } else {
        None
    };
    let tls = if tls {
        Some(Arc::new(tls_config(props)?))
    } else {
        None
    };
    Ok(Security { tls, sasl })
}

fn tls_err(what: &str, path: &str, e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Tls(format!("{what} {path}: {e}"))
}

fn tls_config(props: &BTreeMap<String, String>) -> Result<rustls::ClientConfig, ProtocolError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProtocolError::Tls(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    match props.get("ssl.ca.location").map(|s| s.trim()) {
        Some(path) if path != "probe" => {
            if Path::new(path).is_dir() {
                return Err(ProtocolError::Unsupported(format!(
                    "ssl.ca.location {path:?} is a directory; the agent's protocol client reads a PEM file"
                )));
            }
            let pem = std::fs::read(path).map_err(|e| tls_err("ssl.ca.location", path, e))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| tls_err("ssl.ca.location", path, e))?;
                roots
                    .add(cert)
                    .map_err(|e| tls_err("ssl.ca.location", path, e))?;
            }
            if roots.is_empty() {
                return Err(tls_err("ssl.ca.location", path, "no certificates found"));
            }
        }
        _ => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let verify = props
        .get("enable.ssl.certificate.verification")
        .is_none_or(|v| !v.trim().eq_ignore_ascii_case("false"));
    let check_name = props
        .get("ssl.endpoint.identification.algorithm")
        .is_none_or(|v| !v.trim().eq_ignore_ascii_case("none"));
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ProtocolError::Tls(format!("ssl.ca.location: {e}")))?;
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            inner,
            verify,
            check_name,
        }));
    let cert = props.get("ssl.certificate.location");
    let key = props.get("ssl.key.location");
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let pem =
                std::fs::read(cert).map_err(|e| tls_err("ssl.certificate.location", cert, e))?;
            let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| tls_err("ssl.certificate.location", cert, e))?;
            let pem = std::fs::read(key).map_err(|e| tls_err("ssl.key.location", key, e))?;
            let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| tls_err("ssl.key.location", key, e))?
                .ok_or_else(|| {
                    tls_err(
                        "ssl.key.location",
                        key,
                        "no unencrypted private key found (encrypted keys are not supported)",
                    )
                })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| ProtocolError::Tls(format!("client certificate: {e}")))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(ProtocolError::Unsupported(
            "ssl.certificate.location and ssl.key.location go together".into(),
        )),
    }
}

/// librdkafka's two switches over the usual WebPKI check: no verification at all
/// (`enable.ssl.certificate.verification=false`), or the chain without the host name
/// (`ssl.endpoint.identification.algorithm=none`).
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    verify: bool,
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.verify {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plaintext_by_default_and_sasl_read_as_librdkafka_reads_it() {
        let s = from_properties(&BTreeMap::new()).unwrap();
        assert!(s.tls.is_none() && s.sasl.is_none());
        let s = from_properties(&props(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanisms", "scram-sha-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]))
        .unwrap();
        assert_eq!(s.sasl.unwrap().mechanism, Mechanism::ScramSha512);
    }

    #[test]
    fn what_it_cannot_do_is_refused_by_name() {
        for (kv, needle) in [
            (vec![("security.protocol", "SASL_SSL")], "GSSAPI"),
            (
                vec![
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanisms", "OAUTHBEARER"),
                ],
                "OAUTHBEARER",
            ),
            (
                vec![("ssl.keystore.location", "/k.p12")],
                "ssl.keystore.location",
            ),
            (
                vec![("security.protocol", "carrier-pigeon")],
                "carrier-pigeon",
            ),
            (
                vec![
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanisms", "PLAIN"),
                ],
                "sasl.username",
            ),
        ] {
            let err = from_properties(&props(&kv)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn a_missing_ca_file_names_the_property_and_the_path() {
        let err = from_properties(&props(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", "/nonexistent/ca.pem"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ssl.ca.location /nonexistent/ca.pem"), "{err}");
    }
}
