//! The server certificate: the configured one, or a self-signed one generated once
//! into the data dir, whose SHA-256 fingerprint agents pin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// A loaded server identity.
pub struct ServerIdentity {
    /// rustls configuration for the listener.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 fingerprint of the leaf certificate, colon-separated hex.
    pub fingerprint: String,
    /// Where the certificate came from.
    pub cert_path: PathBuf,
    /// Whether it was generated now.
    pub generated: bool,
}

/// Loads `cert`/`key`, or when not configured, `data_dir/tls/{cert,key}.pem`, generating
/// a self-signed pair for localhost and this host's name if they do not exist.
///
/// # Errors
/// [`TlsError`] naming the file and the problem.
pub fn load_or_generate(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<ServerIdentity, TlsError> {
    let (cert_path, key_path, generated) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), false),
        (None, None) => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            let generated = !c.exists() || !k.exists();
            if generated {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| TlsError(format!("{}: {e}", dir.display())))?;
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                let mut names = vec![
                    "localhost".to_string(),
                    "127.0.0.1".to_string(),
                    "::1".to_string(),
                ];
                if !host.is_empty() {
                    names.push(host);
                }
                let ck = rcgen::generate_simple_self_signed(names)
                    .map_err(|e| TlsError(e.to_string()))?;
                write_private(&k, ck.signing_key.serialize_pem().as_bytes())?;
                std::fs::write(&c, ck.cert.pem())
                    .map_err(|e| TlsError(format!("{}: {e}", c.display())))?;
            }
            (c, k, generated)
        }
        _ => {
            return Err(TlsError(
                "set both tls.cert_file and tls.key_file, or neither".into(),
            ));
        }
    };
    let certs = read_certs(&cert_path)?;
    let fingerprint = crate::fingerprint(certs[0].as_ref());
    let key: PrivateKeyDer<'static> = {
        let pem = std::fs::read(&key_path)
            .map_err(|e| TlsError(format!("{}: {e}", key_path.display())))?;
        rustls_pemfile::private_key(&mut pem.as_slice())
            .map_err(|e| TlsError(format!("{}: {e}", key_path.display())))?
            .ok_or_else(|| TlsError(format!("{}: no private key found", key_path.display())))?
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError(format!("{}: {e}", cert_path.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerIdentity {
        config: Arc::new(config),
        fingerprint,
        cert_path,
        generated,
    })
}

/// The certificates of a PEM file, the leaf first; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// The SHA-256 fingerprint agents pin, of the leaf certificate in a PEM file.
///
/// # Errors
/// [`TlsError`] naming the file when it cannot be read or holds no certificate.
pub fn fingerprint_of(cert_path: &Path) -> Result<String, TlsError> {
    Ok(crate::fingerprint(read_certs(cert_path)?[0].as_ref()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))
}
