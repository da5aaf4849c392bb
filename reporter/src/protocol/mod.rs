//! A second, small Kafka client for the admin RPCs librdkafka does not have
//! (DescribeProducers, ListTransactions, DescribeTransactions, DescribeQuorum,
//! DescribeCluster, broker DescribeConfigs).
//!
//! Messages are encoded and decoded by the `kafka-protocol` crate; this module only
//! frames them, negotiates versions per broker (ApiVersions), and connects as librdkafka
//! does with the user's settings ([`security`]): plaintext, TLS, SASL PLAIN and SCRAM.
//! One connection per broker, kept between cycles and dropped on any error.

pub mod security;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub use security::{Mechanism, Security};

/// The largest response accepted: a DescribeProducers of 500 partitions is far smaller.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// What went wrong talking to a broker. Every variant names the broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A setting or broker this client does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// TLS could not be set up or negotiated.
    #[error("tls: {0}")]
    Tls(String),
    /// The connection failed.
    #[error("{addr}: {source}")]
    Io {
        /// The broker's address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The broker refused the credentials, or SASL failed.
    #[error("{addr}: SASL {mechanism} authentication failed: {message}")]
    Sasl {
        /// The broker's address.
        addr: String,
        /// The mechanism tried.
        mechanism: &'static str,
        /// What the broker (or the mechanism) said.
        message: String,
    },
    /// The broker does not offer a version of an API this client speaks.
    #[error("{addr} does not offer {api:?} in a version the agent speaks ({ours})")]
    ApiVersion {
        /// The broker's address.
        addr: String,
        /// The API.
        api: ApiKey,
        /// The versions this client speaks.
        ours: String,
    },
    /// No answer in time.
    #[error("{addr}: {api:?} timed out after {ms} ms")]
    Timeout {
        /// The broker's address.
        addr: String,
        /// The API.
        api: ApiKey,
        /// The timeout.
        ms: u128,
    },
    /// The answer could not be decoded.
    #[error("{addr}: {api:?}: malformed response: {message}")]
    Codec {
        /// The broker's address.
        addr: String,
        /// The API.
        api: ApiKey,
        /// The decoder's complaint.
        message: String,
    },
    /// No broker is known to send to.
    #[error("no broker reachable: {0}")]
    NoBroker(String),
}

impl ProtocolError {
    /// Whether the broker lacks the API (an old broker, or a ZooKeeper-mode one without
    /// the quorum), as opposed to a failure worth retrying.
    pub fn is_unsupported_api(&self) -> bool {
        matches!(self, ProtocolError::ApiVersion { .. })
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One authenticated connection with the versions its broker offers.
struct Conn {
    addr: String,
    stream: Box<dyn Stream>,
    versions: HashMap<i16, (i16, i16)>,
    correlation: i32,
}

impl Conn {
    async fn open(
        addr: &str,
        security: &Security,
        timeout: Duration,
    ) -> Result<Conn, ProtocolError> {
        let io = |source| ProtocolError::Io {
            addr: addr.to_string(),
            source,
        };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
            .map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let stream: Box<dyn Stream> = match &security.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| ProtocolError::Tls(format!("{addr}: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(tls.clone());
                let s = tokio::time::timeout(timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| io(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
                    .map_err(|e| ProtocolError::Tls(format!("{addr}: {e}")))?;
                Box::new(s)
            }
        };
        let mut conn = Conn {
            addr: addr.to_string(),
            stream,
            versions: HashMap::new(),
            correlation: 0,
        };
        conn.negotiate(timeout).await?;
        if let Some(sasl) = &security.sasl {
            conn.authenticate(sasl, timeout).await?;
        }
        Ok(conn)
    }

    /// ApiVersions at v3, or at v0 for a broker that answers v3 with
    /// UNSUPPORTED_VERSION (it then lists its versions in the v0 form).
    async fn negotiate(&mut self, timeout: Duration) -> Result<(), ProtocolError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("foresight-agent"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response: ApiVersionsResponse = match self.call(&request, 3, timeout).await {
            Ok(r) => r,
            Err(ProtocolError::Codec { .. }) => self.call(&request, 0, timeout).await?,
            Err(e) => return Err(e),
        };
        if response.error_code == 35 {
            response = self.call(&request, 0, timeout).await?;
        }
        if response.error_code != 0 {
            return Err(ProtocolError::Codec {
                addr: self.addr.clone(),
                api: ApiKey::ApiVersions,
                message: format!("error code {}", response.error_code),
            });
        }
        self.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(())
    }

    async fn authenticate(
        &mut self,
        sasl: &security::Sasl,
        timeout: Duration,
    ) -> Result<(), ProtocolError> {
        let fail = |addr: &str, message: String| ProtocolError::Sasl {
            addr: addr.to_string(),
            mechanism: sasl.mechanism.name(),
            message,
        };
        let hs = self
            .send(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(sasl.mechanism.name())),
                timeout,
            )
            .await?;
        if hs.error_code != 0 {
            let offered: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(fail(
                &self.addr,
                format!("the broker offers {}", offered.join(", ")),
            ));
        }
        let mut mechanism: Box<dyn sasl::client::Mechanism + Send> = match sasl.mechanism {
            Mechanism::Plain => Box::new(sasl::client::mechanisms::Plain::new(
                sasl.username.clone(),
                sasl.password.clone(),
            )),
            Mechanism::ScramSha256 => Box::new(
                sasl::client::mechanisms::Scram::<sasl::common::scram::Sha256>::new(
                    sasl.username.clone(),
                    sasl.password.clone(),
                    sasl::common::ChannelBinding::None,
                )
                .map_err(|e| fail(&self.addr, format!("{e:?}")))?,
            ),
            Mechanism::ScramSha512 => Box::new(
                sasl::client::mechanisms::Scram::<Sha512>::new(
                    sasl.username.clone(),
                    sasl.password.clone(),
                    sasl::common::ChannelBinding::None,
                )
                .map_err(|e| fail(&self.addr, format!("{e:?}")))?,
            ),
        };
        let mut out = mechanism.initial();
        let plain = sasl.mechanism == Mechanism::Plain;
        // PLAIN is one round; SCRAM is client-first, server-first, client-final,
        // server-final.
        for round in 0.. {
            let r = self
                .send(
                    &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(out)),
                    timeout,
                )
                .await?;
            if r.error_code != 0 {
                return Err(fail(
                    &self.addr,
                    r.error_message
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("error code {}", r.error_code)),
                ));
            }
            if plain {
                return Ok(());
            }
            if round == 0 {
                out = mechanism
                    .response(&r.auth_bytes)
                    .map_err(|e| fail(&self.addr, e.to_string()))?;
            } else {
                return mechanism
                    .success(&r.auth_bytes)
                    .map_err(|e| fail(&self.addr, e.to_string()));
            }
        }
        unreachable!("the loop returns")
    }

    /// The version to send `R` at: the highest both sides speak, at most `cap`.
    fn version_of<R: Request>(&self, cap: i16) -> Result<i16, ProtocolError> {
        let mut ours = R::VERSIONS;
        ours.max = ours.max.min(cap);
        let err = || ProtocolError::ApiVersion {
            addr: self.addr.clone(),
            api: ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions),
            ours: format!("v{}–v{}", ours.min, ours.max),
        };
        let (min, max) = *self.versions.get(&R::KEY).ok_or_else(err)?;
        let v = max.min(ours.max);
        if v < min.max(ours.min) {
            return Err(err());
        }
        Ok(v)
    }

    async fn send<R: Request>(
        &mut self,
        request: &R,
        timeout: Duration,
    ) -> Result<R::Response, ProtocolError> {
        self.send_capped(request, i16::MAX, timeout).await
    }

    async fn send_capped<R: Request>(
        &mut self,
        request: &R,
        cap: i16,
        timeout: Duration,
    ) -> Result<R::Response, ProtocolError> {
        let v = self.version_of::<R>(cap)?;
        self.call(request, v, timeout).await
    }

    async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ProtocolError> {
        let api = ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions);
        let codec = |addr: &str, message: String| ProtocolError::Codec {
            addr: addr.to_string(),
            api,
            message,
        };
        self.correlation = self.correlation.wrapping_add(1);
        let id = self.correlation;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("foresight-agent")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|()| request.encode(&mut body, version))
            .map_err(|e| codec(&self.addr, format!("encoding: {e}")))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_u32(body.len() as u32);
        frame.extend_from_slice(&body);
        let addr = self.addr.clone();
        let exchange = async {
            self.stream.write_all(&frame).await?;
            self.stream.flush().await?;
            let len = self.stream.read_u32().await? as usize;
            if len > MAX_RESPONSE_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a {len}-byte response is larger than {MAX_RESPONSE_BYTES}"),
                ));
            }
            let mut buf = vec![0u8; len];
            self.stream.read_exact(&mut buf).await?;
            Ok(Bytes::from(buf))
        };
        let buf = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ProtocolError::Timeout {
                addr: addr.clone(),
                api,
                ms: timeout.as_millis(),
            })?
            .map_err(|source| ProtocolError::Io {
                addr: addr.clone(),
                source,
            })?;
        decode_response::<R>(buf, version, id).map_err(|m| codec(&addr, m))
    }
}

pub use foresight_decode::kafka::decode_response;

/// SCRAM-SHA-512 for the `sasl` crate, which ships SHA-1 and SHA-256 only.
struct Sha512;

impl sasl::common::scram::ScramProvider for Sha512 {
    type Secret = sasl::secret::Plain;

    fn name() -> &'static str {
        "SHA-512"
    }

    fn hash(data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha512::digest(data).to_vec()
    }

    fn hmac(data: &[u8], key: &[u8]) -> Result<Vec<u8>, hmac::digest::InvalidLength> {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(key)?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    fn derive(
        password: &sasl::common::Password,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Vec<u8>, sasl::common::scram::DeriveError> {
        match password {
            sasl::common::Password::Plain(plain) => {
                let mut out = vec![0; 64];
                pbkdf2::pbkdf2::<hmac::Hmac<sha2::Sha512>>(
                    plain.as_bytes(),
                    salt,
                    iterations,
                    &mut out,
                )?;
                Ok(out)
            }
            sasl::common::Password::Pbkdf2 { method, .. } => {
                Err(sasl::common::scram::DeriveError::IncompatibleHashingMethod(
                    method.clone(),
                    Self::name().to_string(),
                ))
            }
        }
    }
}

/// Brokers by id, and a connection to each once used.
pub struct Client {
    security: Security,
    bootstrap: Vec<String>,
    timeout: Duration,
    brokers: std::sync::Mutex<BTreeMap<i32, String>>,
    conns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Conn>>>>>,
}

impl Client {
    /// A client for `bootstrap_servers` (comma-separated) with librdkafka's
    /// `properties`; connects lazily.
    ///
    /// # Errors
    /// [`ProtocolError::Unsupported`] or [`ProtocolError::Tls`] for settings it cannot
    /// honour.
    pub fn new(
        bootstrap_servers: &str,
        properties: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Self, ProtocolError> {
        Ok(Client {
            security: security::from_properties(properties)?,
            bootstrap: bootstrap_servers
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            timeout,
            brokers: std::sync::Mutex::new(BTreeMap::new()),
            conns: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Sets the brokers' addresses, as the cluster metadata gives them.
    pub fn set_brokers(&self, brokers: impl IntoIterator<Item = (i32, String)>) {
        *self
            .brokers
            .lock()
            .expect("broker map lock is never poisoned") = brokers.into_iter().collect();
    }

    /// The brokers' ids, as last set.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.brokers
            .lock()
            .expect("broker map lock is never poisoned")
            .keys()
            .copied()
            .collect()
    }

    fn address_of(&self, broker: i32) -> Result<String, ProtocolError> {
        self.brokers
            .lock()
            .expect("broker map lock is never poisoned")
            .get(&broker)
            .cloned()
            .ok_or_else(|| {
                ProtocolError::NoBroker(format!("broker {broker} is not in the metadata"))
            })
    }

    /// Sends `request` to the broker with id `broker`.
    ///
    /// # Errors
    /// [`ProtocolError`] naming the broker; the connection is dropped and opened
    /// afresh on the next request.
    pub async fn send_to<R: Request>(
        &self,
        broker: i32,
        request: &R,
    ) -> Result<R::Response, ProtocolError> {
        let addr = self.address_of(broker)?;
        self.send_addr(&addr, request).await
    }

    /// Sends `request` to an address (a coordinator or bootstrap server).
    ///
    /// # Errors
    /// As [`Client::send_to`].
    pub async fn send_addr<R: Request>(
        &self,
        addr: &str,
        request: &R,
    ) -> Result<R::Response, ProtocolError> {
        self.send_addr_capped(addr, request, i16::MAX).await
    }

    /// Sends `request` to `broker` at a version no higher than `max_version`, for a
    /// request whose meaning changes with the version (Produce v12 and later imply
    /// KIP-890's server-side transaction checks).
    ///
    /// # Errors
    /// As [`Client::send_to`].
    pub async fn send_to_at_most<R: Request>(
        &self,
        broker: i32,
        request: &R,
        max_version: i16,
    ) -> Result<R::Response, ProtocolError> {
        let addr = self.address_of(broker)?;
        self.send_addr_capped(&addr, request, max_version).await
    }

    async fn send_addr_capped<R: Request>(
        &self,
        addr: &str,
        request: &R,
        cap: i16,
    ) -> Result<R::Response, ProtocolError> {
        let slot = self
            .conns
            .lock()
            .expect("connection map lock is never poisoned")
            .entry(addr.to_string())
            .or_default()
            .clone();
        let mut conn = slot.lock().await;
        if conn.is_none() {
            *conn = Some(Conn::open(addr, &self.security, self.timeout).await?);
        }
        let Some(c) = conn.as_mut() else {
            unreachable!("opened above")
        };
        let result = c.send_capped(request, cap, self.timeout).await;
        if matches!(
            result,
            Err(ProtocolError::Io { .. }
                | ProtocolError::Timeout { .. }
                | ProtocolError::Codec { .. })
        ) {
            // The stream may be mid-frame: never reuse it.
            *conn = None;
        }
        result
    }

    /// Sends `request` to the known brokers, then the bootstrap servers, until one
    /// answers; an API a broker lacks is not retried elsewhere.
    ///
    /// # Errors
    /// The last broker's error.
    pub async fn send_any<R: Request>(&self, request: &R) -> Result<R::Response, ProtocolError> {
        let mut addrs: Vec<String> = self
            .brokers
            .lock()
            .expect("broker map lock is never poisoned")
            .values()
            .cloned()
            .collect();
        for b in &self.bootstrap {
            if !addrs.contains(b) {
                addrs.push(b.clone());
            }
        }
        let mut last = ProtocolError::NoBroker("no bootstrap servers".into());
        for addr in addrs {
            match self.send_addr(&addr, request).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_unsupported_api() => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Kafka's name for an error code, for messages.
pub fn error_name(code: i16) -> String {
    kafka_protocol::ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| format!("error code {code}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{DescribeProducersRequest, DescribeQuorumRequest};

    #[test]
    fn a_huge_declared_array_is_an_error_not_an_abort() {
        // Response header v1 (correlation id 1, no tagged fields), then DescribeProducers
        // v0: throttle time, and a topics array declaring 2^35 - 1 elements.
        let frame = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f];
        let r = decode_response::<DescribeProducersRequest>(Bytes::copy_from_slice(&frame), 0, 1);
        assert!(r.is_err());
    }

    #[test]
    fn a_response_to_another_request_is_refused() {
        let frame = [0, 0, 0, 9, 0];
        let err = decode_response::<DescribeQuorumRequest>(Bytes::copy_from_slice(&frame), 2, 1)
            .unwrap_err();
        assert!(err.contains("correlation id 9 answers request 1"), "{err}");
    }
}
