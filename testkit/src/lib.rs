//! Real Apache Kafka for Foresight's tests and benchmarks: KRaft clusters of dedicated
//! controllers and brokers on loopback, each JVM with the Prometheus jmx_exporter Java
//! agent and Foresight's own jmx_exporter configuration
//! (`examples/jmx_exporter/kafka.yml`, the one users install), started in parallel.
//!
//! - [`Version`]: which Kafka (pinned in `scripts/kafka/pom.xml`, fetched by
//!   `scripts/kafka.sh fetch` from Maven Central on first use).
//! - [`ClusterSpec`] and [`Cluster`]: start a cluster; [`Node`]s are stopped, killed
//!   (SIGKILL), paused (SIGSTOP), resumed and restarted one by one.
//! - [`Cluster::tool`]: Kafka's own command-line tools, the tests' oracles.
//! - [`wait_until`]: waiting on a condition, never on a sleep.
//! - [`share::ShareConsumer`]: a real share consumer (Kafka's `KafkaShareConsumer`).
//! - [`postgres::Postgres`]: a real PostgreSQL server (Debian's) on loopback in a
//!   temporary directory.
//!
//! Every JVM is started from one long-lived thread with `PR_SET_PDEATHSIG`, so a test
//! process that ends (or panics) takes its brokers with it.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod postgres;
pub mod share;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// What can go wrong starting or driving a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fetching Kafka from Maven Central failed.
    #[error("fetching Kafka {version}: {message}")]
    Fetch {
        /// The version asked for.
        version: &'static str,
        /// What the fetch script said.
        message: String,
    },
    /// A file or process could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A node did not reach a state in time.
    #[error("{0}")]
    Timeout(String),
    /// A node's JVM exited while the cluster was starting; the text quotes the end of
    /// its `stdout.log` (where the JVM and its agents report a failed start) and
    /// `server.log`.
    #[error("{0}")]
    Exited(String),
    /// A tool or the storage format exited with a failure.
    #[error("{what} failed: {output}")]
    Command {
        /// The command.
        what: String,
        /// Its standard output and error.
        output: String,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// An Apache Kafka release the tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The newest 4.x that resolves on Maven Central (profile `kafka-4`).
    Kafka4,
    /// The 3.9 line (profile `kafka-3.9`), the last with ZooKeeper and the oldest
    /// Foresight is checked against.
    Kafka39,
}

impl Version {
    /// Both, newest first.
    pub const ALL: [Version; 2] = [Version::Kafka4, Version::Kafka39];

    fn profile(self) -> &'static str {
        match self {
            Version::Kafka4 => "4",
            Version::Kafka39 => "3.9",
        }
    }

    /// The directory of this version's jars, fetched on first use.
    ///
    /// # Errors
    /// [`Error::Fetch`] when Maven cannot fetch it.
    pub fn lib_dir(self) -> Result<PathBuf, Error> {
        static DIRS: Mutex<BTreeMap<&'static str, PathBuf>> = Mutex::new(BTreeMap::new());
        let mut dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = dirs.get(self.profile()) {
            return Ok(d.clone());
        }
        let out = Command::new(repo_root().join("scripts/kafka.sh"))
            .args(["fetch", self.profile()])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Error::Fetch {
                version: self.profile(),
                message: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(text.lines().last().unwrap_or_default().trim());
        if !out.status.success() || !dir.is_dir() {
            return Err(Error::Fetch {
                version: self.profile(),
                message: format!("scripts/kafka.sh fetch exited with {}: {text}", out.status),
            });
        }
        dirs.insert(self.profile(), dir.clone());
        Ok(dir)
    }

    /// The exact release, from the jar names (`kafka_2.13-4.4.0.jar`).
    ///
    /// # Errors
    /// As [`Version::lib_dir`].
    pub fn release(self) -> Result<String, Error> {
        let dir = self.lib_dir()?;
        let entries = std::fs::read_dir(&dir).map_err(io(format!("reading {}", dir.display())))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(v) = name
                .strip_prefix("kafka_2.13-")
                .and_then(|v| v.strip_suffix(".jar"))
            {
                return Ok(v.to_string());
            }
        }
        Err(Error::Fetch {
            version: self.profile(),
            message: format!("no kafka_2.13 jar in {}", dir.display()),
        })
    }
}

/// The checkout's root (this crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace root")
        .to_path_buf()
}

/// Foresight's jmx_exporter configuration for brokers and controllers, the one the README
/// tells users to install and the JVMs run with by default.
pub fn jmx_exporter_config() -> PathBuf {
    repo_root().join("examples/jmx_exporter/kafka.yml")
}

/// The jmx_exporter project's example KRaft configuration, which many operators run
/// instead, from the conformance data beside the checkout (`../shared/conformance/`):
/// `None` on a plain clone, which has no such folder.
pub fn upstream_jmx_exporter_config() -> Option<PathBuf> {
    let path = repo_root().join("../shared/conformance/jmx_exporter-4b843c6/kafka-kraft-3_0_0.yml");
    path.is_file().then_some(path)
}

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A KRaft controller (`process.roles=controller`).
    Controller,
    /// A broker (`process.roles=broker`).
    Broker,
}

/// The shape of a cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Which Kafka.
    pub version: Version,
    /// Dedicated controllers (node ids 101, 102, …).
    pub controllers: usize,
    /// Brokers (node ids 1, 2, …).
    pub brokers: usize,
    /// Log dirs per broker (more than one makes JBOD).
    pub log_dirs: usize,
    /// Broker properties over the defaults ([`ClusterSpec::broker_defaults`]).
    pub broker_props: BTreeMap<String, String>,
    /// Controller properties (`broker.session.timeout.ms` is one: the controllers
    /// decide when a silent broker is fenced).
    pub controller_props: BTreeMap<String, String>,
    /// Maximum heap of each JVM, in MiB.
    pub heap_mib: u32,
    /// A broker whose last log dir is a tmpfs of this many bytes, to fill: `(broker
    /// id, bytes)`. Mounting needs root; [`Cluster::start`] says so when it fails.
    pub small_log_dir: Option<(i32, u64)>,
    /// Whether each JVM also runs Jolokia's JVM agent (for the agent's Jolokia
    /// collector), beside the jmx_exporter.
    pub jolokia: bool,
    /// Whether brokers also listen on `SSL`, `SASL_SSL` and `SASL_PLAINTEXT` (PLAIN,
    /// SCRAM-SHA-256 and SCRAM-SHA-512 for [`SASL_USER`]), with a certificate for
    /// `localhost` and `127.0.0.1` signed by [`Cluster::ca_file`].
    pub secure: bool,
    /// The jmx_exporter configuration of every JVM ([`jmx_exporter_config`] by default).
    pub jmx_exporter_config: PathBuf,
    /// The release whose feature levels the cluster is formatted at (`kafka-storage
    /// format --release-version`, e.g. `3.9-IV0` on 4.x binaries: an upgrade rolled out
    /// and not finalized); the binaries' own by default.
    pub release_version: Option<String>,
}

/// The SASL user of a [`ClusterSpec::secure`] cluster, for every mechanism.
pub const SASL_USER: &str = "foresight";
/// Its password.
pub const SASL_PASSWORD: &str = "foresight-secret";

/// The security protocols of a [`ClusterSpec::secure`] cluster's extra listeners.
pub const SECURE_PROTOCOLS: &[&str] = &["SSL", "SASL_SSL", "SASL_PLAINTEXT"];

impl ClusterSpec {
    /// Three controllers and three brokers, as production clusters run.
    pub fn new(version: Version) -> Self {
        ClusterSpec {
            version,
            controllers: 3,
            brokers: 3,
            log_dirs: 1,
            broker_props: BTreeMap::new(),
            controller_props: BTreeMap::new(),
            heap_mib: 320,
            small_log_dir: None,
            jolokia: false,
            secure: false,
            jmx_exporter_config: jmx_exporter_config(),
            release_version: None,
        }
    }

    /// Sets a broker property.
    pub fn broker_prop(mut self, key: &str, value: impl ToString) -> Self {
        self.broker_props.insert(key.into(), value.to_string());
        self
    }

    /// Sets a controller property.
    pub fn controller_prop(mut self, key: &str, value: impl ToString) -> Self {
        self.controller_props.insert(key.into(), value.to_string());
        self
    }

    /// Sets the number of controllers and brokers.
    pub fn nodes(mut self, controllers: usize, brokers: usize) -> Self {
        self.controllers = controllers;
        self.brokers = brokers;
        self
    }

    /// The brokers' properties besides listeners and directories: small internal
    /// topics replicated over every broker, no rebalance delay, and failure detection
    /// fast enough for tests.
    pub fn broker_defaults(&self) -> BTreeMap<String, String> {
        let rf = self.brokers.clamp(1, 3);
        let min_isr = if rf >= 3 { 2 } else { 1 };
        [
            ("offsets.topic.num.partitions", "3".to_string()),
            ("offsets.topic.replication.factor", rf.to_string()),
            ("transaction.state.log.num.partitions", "3".to_string()),
            ("transaction.state.log.replication.factor", rf.to_string()),
            ("transaction.state.log.min.isr", min_isr.to_string()),
            // Share groups' state topic (Kafka 4.x; 3.9 ignores the keys, with a warning).
            (
                "share.coordinator.state.topic.replication.factor",
                rf.to_string(),
            ),
            ("share.coordinator.state.topic.min.isr", min_isr.to_string()),
            ("group.initial.rebalance.delay.ms", "0".to_string()),
            ("num.partitions", "1".to_string()),
            ("default.replication.factor", rf.to_string()),
            ("auto.create.topics.enable", "false".to_string()),
            ("replica.lag.time.max.ms", "6000".to_string()),
            ("broker.heartbeat.interval.ms", "500".to_string()),
            ("log.segment.bytes", "1048576".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// One JVM of the cluster.
pub struct Node {
    /// Its `node.id`.
    pub id: i32,
    /// Controller or broker.
    pub role: Role,
    /// The client listener (brokers) or controller listener (controllers).
    pub port: u16,
    /// The jmx_exporter agent's HTTP port.
    pub jmx_port: u16,
    /// Jolokia's HTTP port, when the cluster runs it ([`ClusterSpec::jolokia`]).
    pub jolokia_port: Option<u16>,
    /// A secure cluster's broker listeners by security protocol ([`SECURE_PROTOCOLS`]).
    pub secure_ports: BTreeMap<String, u16>,
    /// Its directory: `server.properties`, `data*/`, `logs/`.
    pub dir: PathBuf,
    /// Its log dirs (brokers), or metadata dir (controllers).
    pub log_dirs: Vec<PathBuf>,
    child: Mutex<Option<Child>>,
    /// How its last process ended on its own (not killed or stopped by the test).
    exit: Mutex<Option<std::process::ExitStatus>>,
    command: Vec<String>,
}

impl Node {
    /// `http://127.0.0.1:<port>/metrics`, the jmx_exporter's endpoint.
    pub fn jmx_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.jmx_port)
    }

    /// `http://127.0.0.1:<port>/jolokia/`, when the cluster runs Jolokia.
    pub fn jolokia_url(&self) -> Option<String> {
        self.jolokia_port
            .map(|p| format!("http://127.0.0.1:{p}/jolokia/"))
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Child::id)
    }

    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = self
            .pid()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// SIGKILL, as a host that loses power: nothing flushed, nothing said to the quorum.
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and a wait for a controlled shutdown (SIGKILL after `within`).
    pub fn stop(&self, within: Duration) {
        let taken = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut c) = taken {
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing, like a long GC
    /// pause or a hung host.
    pub fn pause(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    /// Starts it again (after [`Node::kill`] or [`Node::stop`]) with the same
    /// configuration and data. A running node is left alone.
    ///
    /// # Errors
    /// [`Error::Io`] when the JVM cannot be started.
    pub fn start(&self) -> Result<(), Error> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if child.is_none() {
            let log = self.dir.join("logs/stdout.log");
            *child = Some(spawn(&self.command, &log)?);
        }
        Ok(())
    }

    /// Whether the process runs (a paused one does).
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(status) => {
                if let Ok(Some(status)) = status {
                    *self.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                }
                *child = None;
                false
            }
            None => false,
        }
    }

    /// The tail of its server log, for a failing test's message.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        for name in ["logs/server.log", "logs/stdout.log"] {
            text.push_str(&self.file_tail(name, lines));
        }
        text
    }

    /// Why it exited, as far as its logs tell: the first line of `stdout.log` that
    /// names an exception or a fatal error (a JVM agent's failure is a long trace whose
    /// cause is near the top), then the tails of `stdout.log` and `server.log`.
    fn exit_report(&self) -> String {
        let status = match *self.exit.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(status) => status.to_string(),
            None => "an unknown status".to_string(),
        };
        let mut text = format!(
            "node {} ({:?}) exited with {status} while the cluster started\n",
            self.id, self.role
        );
        let stdout = std::fs::read_to_string(self.dir.join("logs/stdout.log")).unwrap_or_default();
        let cause = stdout.lines().filter(|l| {
            l.contains("Caused by")
                || l.contains("Exception")
                || l.starts_with("Failed")
                || l.contains("FATAL")
                || l.starts_with("Error")
        });
        for l in cause.take(3) {
            let _ = writeln!(text, "cause: {l}");
        }
        text.push_str(&self.file_tail("logs/stdout.log", 40));
        text.push_str(&self.file_tail("logs/server.log", 15));
        text
    }

    /// The last `lines` lines of one of its files, headed with the node and the name.
    fn file_tail(&self, name: &str, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join(name)) {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            let tail: Vec<&str> = s.lines().rev().take(lines).collect();
            let _ = writeln!(text, "== node {} {name}", self.id);
            for l in tail.into_iter().rev() {
                let _ = writeln!(text, "{l}");
            }
        }
        text
    }
}

/// A running KRaft cluster on loopback.
pub struct Cluster {
    /// How it was started.
    pub spec: ClusterSpec,
    /// Its cluster id.
    pub cluster_id: String,
    /// Controllers first, then brokers.
    pub nodes: Vec<Node>,
    lib: PathBuf,
    mounts: Vec<PathBuf>,
    ca_file: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.resume();
            n.kill();
        }
        for m in &self.mounts {
            unmount(m);
        }
    }
}

/// A secure cluster's key material: a CA, and the brokers' key and certificate.
struct Tls {
    ca: PathBuf,
    /// The brokers' private key and certificate, PEM, in one file (Kafka's PEM keystore).
    keystore: PathBuf,
}

fn write_certificates(dir: &Path) -> Result<Tls, Error> {
    let fail = |e: rcgen::Error| Error::Io {
        what: "generating test certificates".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let ca_key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "foresight test CA");
    let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(fail)?;
    let cert = params.signed_by(&key, &issuer).map_err(fail)?;
    let tls = Tls {
        ca: dir.join("ca.pem"),
        keystore: dir.join("broker.pem"),
    };
    write(&tls.ca, &ca_cert.pem())?;
    write(
        &tls.keystore,
        &format!("{}{}", key.serialize_pem(), cert.pem()),
    )?;
    Ok(tls)
}

/// Listener settings of a secure broker: a PEM keystore for both TLS listeners, and
/// PLAIN and SCRAM for both SASL ones.
fn secure_broker_props(tls: &Tls) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    p.insert(
        "listener.security.protocol.map".into(),
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,\
         SASL_PLAINTEXT:SASL_PLAINTEXT"
            .into(),
    );
    p.insert("ssl.keystore.type".into(), "PEM".into());
    p.insert(
        "ssl.keystore.location".into(),
        tls.keystore.display().to_string(),
    );
    p.insert(
        "sasl.enabled.mechanisms".into(),
        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into(),
    );
    for listener in ["sasl_ssl", "sasl_plaintext"] {
        p.insert(
            format!("listener.name.{listener}.plain.sasl.jaas.config"),
            format!(
                "org.apache.kafka.common.security.plain.PlainLoginModule required \
                 user_{SASL_USER}=\"{SASL_PASSWORD}\";"
            ),
        );
        for m in ["scram-sha-256", "scram-sha-512"] {
            p.insert(
                format!("listener.name.{listener}.{m}.sasl.jaas.config"),
                "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
            );
        }
    }
    p
}

fn unmount(path: &Path) {
    let _ = Command::new("umount")
        .arg("-l")
        .arg(path)
        .stderr(Stdio::null())
        .status();
}

/// Mount points at or under `dir`, from `/proc/mounts`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// A JVM spawned from the one long-lived thread, so that `PR_SET_PDEATHSIG` (which
/// fires when the *thread* that forked ends) means "when this process ends".
fn spawn(command: &[String], log: &Path) -> Result<Child, Error> {
    spawn_as(command, log, None)
}

/// [`spawn`] as another user (uid, gid): PostgreSQL refuses to run as root.
pub(crate) fn spawn_as(
    command: &[String],
    log: &Path,
    user: Option<(u32, u32)>,
) -> Result<Child, Error> {
    type Job = (
        Vec<String>,
        PathBuf,
        Option<(u32, u32)>,
        mpsc::Sender<Result<Child, Error>>,
    );
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kafka-spawner".into())
            .spawn(move || {
                for (command, log, user, reply) in rx {
                    let _ = reply.send(spawn_here(&command, &log, user));
                }
            })
            .expect("spawner thread starts");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command.to_vec(), log.to_path_buf(), user, reply))
        .expect("spawner thread lives as long as the process");
    answer.recv().expect("spawner thread answers every request")
}

fn spawn_here(command: &[String], log: &Path, user: Option<(u32, u32)>) -> Result<Child, Error> {
    use std::os::unix::process::CommandExt as _;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(format!("opening {}", log.display())))?;
    let err = out.try_clone().map_err(io("duplicating a log handle"))?;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some((uid, gid)) = user {
        // std changes the ids before the pre_exec hook below, which a change of ids
        // would otherwise clear.
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: only an async-signal-safe system call between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn().map_err(io(format!("starting {}", command[0])))
}

/// A loopback port nothing listens on, never the same twice in this process: clusters
/// started in parallel choose their ports at the same time, and a port is only taken
/// when its JVM binds it, seconds later.
pub(crate) fn free_port() -> Result<u16, Error> {
    static HANDED_OUT: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(io("binding a loopback port"))?
            .local_addr()
            .map_err(io("reading a bound port"))?
            .port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
}

/// A Kafka `Uuid` in its text form (22 characters of URL-safe base64), random enough
/// for a test cluster's id.
fn kafka_uuid() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut bytes = Vec::with_capacity(16);
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        bytes.extend_from_slice(&h.finish().to_be_bytes());
    }
    // The first character must not be '-': kafka-storage would read the id as an option
    // (Kafka's own Uuid.randomUuid avoids it too). A clear top bit keeps it in A-Z, a-f.
    bytes[0] &= 0x7f;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = String::new();
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

/// Where clusters' directories go; a directory left by a process that is gone is
/// removed when the next cluster starts.
fn clusters_root() -> Result<PathBuf, Error> {
    let root = std::env::temp_dir().join("foresight-kafka");
    std::fs::create_dir_all(&root).map_err(io(format!("creating {}", root.display())))?;
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let owner = std::fs::read_to_string(e.path().join("owner.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            let alive = owner.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                for m in mounts_under(&e.path()) {
                    unmount(&m);
                }
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(root)
}

impl Cluster {
    /// Formats and starts a cluster as `spec` says, every JVM in parallel, and returns
    /// once every broker is registered and every exporter answers.
    ///
    /// # Errors
    /// [`Error`] when Kafka cannot be fetched, formatted or started within three minutes.
    pub fn start(spec: ClusterSpec) -> Result<Cluster, Error> {
        // The agent would fail every JVM at start, with the reason only in stdout.log.
        if !spec.jmx_exporter_config.is_file() {
            return Err(Error::Io {
                what: format!(
                    "the jmx_exporter configuration {}",
                    spec.jmx_exporter_config.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let lib = spec.version.lib_dir()?;
        let release = spec.version.release()?;
        let dir = tempfile::Builder::new()
            .prefix("cluster-")
            .tempdir_in(clusters_root()?)
            .map_err(io("creating the cluster directory"))?;
        write(
            &dir.path().join("owner.pid"),
            &std::process::id().to_string(),
        )?;
        let cluster_id = kafka_uuid();
        let controllers: Vec<(i32, u16)> = (0..spec.controllers)
            .map(|i| Ok((101 + i as i32, free_port()?)))
            .collect::<Result<_, Error>>()?;
        let voters = controllers
            .iter()
            .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let tls = if spec.secure {
            Some(write_certificates(dir.path())?)
        } else {
            None
        };
        let mut plans = Vec::new();
        for (id, port) in &controllers {
            plans.push((*id, Role::Controller, *port));
        }
        for i in 0..spec.brokers {
            plans.push((1 + i as i32, Role::Broker, free_port()?));
        }
        let jar = |prefix: &str| {
            std::fs::read_dir(&lib)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
        };
        let agent = jar("jmx_prometheus_javaagent").ok_or_else(|| Error::Fetch {
            version: spec.version.profile(),
            message: "no jmx_prometheus_javaagent jar".into(),
        })?;
        let jolokia_agent = match spec.jolokia {
            true => Some(jar("jolokia-agent-jvm").ok_or_else(|| Error::Fetch {
                version: spec.version.profile(),
                message: "no jolokia-agent-jvm jar".into(),
            })?),
            false => None,
        };
        let classpath = format!("{}/*", lib.display());
        let mut mounts = Vec::new();
        let java = java_binary();
        let mut nodes = Vec::new();
        let mut formats = Vec::new();
        for (id, role, port) in plans {
            let node_dir = dir.path().join(format!("node-{id}"));
            let logs = node_dir.join("logs");
            std::fs::create_dir_all(&logs).map_err(io(format!("creating {}", logs.display())))?;
            let log_dirs: Vec<PathBuf> = match role {
                Role::Controller => vec![node_dir.join("metadata")],
                Role::Broker => (0..spec.log_dirs.max(1))
                    .map(|i| node_dir.join(format!("data-{i}")))
                    .collect(),
            };
            if let (Role::Broker, Some((small, bytes))) = (role, spec.small_log_dir)
                && small == id
                && let Some(last) = log_dirs.last()
            {
                std::fs::create_dir_all(last)
                    .map_err(io(format!("creating {}", last.display())))?;
                let out = Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
                    .arg(last)
                    .output()
                    .map_err(io("running mount"))?;
                if !out.status.success() {
                    return Err(Error::Command {
                        what: format!(
                            "mounting a {bytes}-byte tmpfs at {} (needs root)",
                            last.display()
                        ),
                        output: String::from_utf8_lossy(&out.stderr).into_owned(),
                    });
                }
                mounts.push(last.clone());
            }
            let mut props: BTreeMap<String, String> = BTreeMap::new();
            let mut secure_ports = BTreeMap::new();
            let set = |p: &mut BTreeMap<String, String>, k: &str, v: String| {
                p.insert(k.to_string(), v);
            };
            set(&mut props, "node.id", id.to_string());
            set(&mut props, "controller.quorum.voters", voters.clone());
            set(&mut props, "controller.listener.names", "CONTROLLER".into());
            set(
                &mut props,
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
            );
            set(
                &mut props,
                "log.dirs",
                log_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            match role {
                Role::Controller => {
                    set(&mut props, "process.roles", "controller".into());
                    set(
                        &mut props,
                        "listeners",
                        format!("CONTROLLER://127.0.0.1:{port}"),
                    );
                    props.extend(spec.controller_props.clone());
                }
                Role::Broker => {
                    set(&mut props, "process.roles", "broker".into());
                    let mut listeners = vec![format!("PLAINTEXT://127.0.0.1:{port}")];
                    if let Some(pem) = &tls {
                        for protocol in SECURE_PROTOCOLS {
                            let p = free_port()?;
                            secure_ports.insert((*protocol).to_string(), p);
                            listeners.push(format!("{protocol}://127.0.0.1:{p}"));
                        }
                        props.extend(secure_broker_props(pem));
                    }
                    set(&mut props, "listeners", listeners.join(","));
                    set(&mut props, "advertised.listeners", listeners.join(","));
                    set(&mut props, "inter.broker.listener.name", "PLAINTEXT".into());
                    set(&mut props, "broker.rack", format!("rack-{id}"));
                    props.extend(spec.broker_defaults());
                    props.extend(spec.broker_props.clone());
                }
            }
            let mut text = String::new();
            for (k, v) in &props {
                let _ = writeln!(text, "{k}={v}");
            }
            let config = node_dir.join("server.properties");
            write(&config, &text)?;
            write(
                &node_dir.join("log4j2.properties"),
                &format!(
                    "status = warn\nappender.file.type = File\nappender.file.name = FILE\n\
                     appender.file.fileName = {logs}/server.log\n\
                     appender.file.layout.type = PatternLayout\n\
                     appender.file.layout.pattern = [%d] %p %m (%c)%n\n\
                     rootLogger.level = INFO\nrootLogger.appenderRef.file.ref = FILE\n",
                    logs = logs.display()
                ),
            )?;
            write(
                &node_dir.join("log4j.properties"),
                &format!(
                    "log4j.rootLogger=INFO, file\n\
                     log4j.appender.file=org.apache.log4j.FileAppender\n\
                     log4j.appender.file.File={logs}/server.log\n\
                     log4j.appender.file.layout=org.apache.log4j.PatternLayout\n\
                     log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n",
                    logs = logs.display()
                ),
            )?;
            let jmx_port = free_port()?;
            let jolokia_port = match &jolokia_agent {
                Some(_) => Some(free_port()?),
                None => None,
            };
            let jvm = |main: &str, agent_arg: Option<String>| -> Vec<String> {
                let mut c = vec![
                    java.clone(),
                    format!("-Xmx{}m", spec.heap_mib),
                    "-Xms64m".into(),
                    "-XX:+UseSerialGC".into(),
                    "-XX:TieredStopAtLevel=1".into(),
                    "-XX:-UsePerfData".into(),
                    "-Djava.awt.headless=true".into(),
                    format!("-Dkafka.logs.dir={}", logs.display()),
                    format!(
                        "-Dlog4j2.configurationFile={}",
                        node_dir.join("log4j2.properties").display()
                    ),
                    format!(
                        "-Dlog4j.configuration=file:{}",
                        node_dir.join("log4j.properties").display()
                    ),
                ];
                c.extend(agent_arg);
                c.extend(["-cp".into(), classpath.clone(), main.into()]);
                c
            };
            let mut format_cmd = jvm("kafka.tools.StorageTool", None);
            format_cmd.extend([
                "format".into(),
                "--config".into(),
                config.display().to_string(),
                "--cluster-id".into(),
                cluster_id.clone(),
                "--ignore-formatted".into(),
            ]);
            if let Some(release) = &spec.release_version {
                format_cmd.extend(["--release-version".into(), release.clone()]);
            }
            if spec.secure {
                for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
                    format_cmd.extend([
                        "--add-scram".into(),
                        format!("{mechanism}=[name={SASL_USER},password={SASL_PASSWORD}]"),
                    ]);
                }
            }
            formats.push((
                id,
                Command::new(&format_cmd[0])
                    .args(&format_cmd[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(io("starting kafka-storage format"))?,
            ));
            let mut command = jvm(
                "kafka.Kafka",
                Some(format!(
                    "-javaagent:{}=127.0.0.1:{jmx_port}:{}",
                    agent.display(),
                    spec.jmx_exporter_config.display()
                )),
            );
            if let (Some(jar), Some(port)) = (&jolokia_agent, jolokia_port) {
                // Before the main class: JVM options, not program arguments.
                let at = command.len() - 3;
                command.insert(
                    at,
                    format!("-javaagent:{}=host=127.0.0.1,port={port}", jar.display()),
                );
            }
            command.push(config.display().to_string());
            nodes.push(Node {
                id,
                role,
                port,
                jmx_port,
                jolokia_port,
                secure_ports,
                dir: node_dir,
                log_dirs,
                child: Mutex::new(None),
                exit: Mutex::new(None),
                command,
            });
        }
        for (id, f) in formats {
            let out = f
                .wait_with_output()
                .map_err(io("waiting for kafka-storage format"))?;
            if !out.status.success() {
                return Err(Error::Command {
                    what: format!("kafka-storage format of node {id} ({release})"),
                    output: format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                });
            }
        }
        for n in &nodes {
            n.start()?;
        }
        let cluster = Cluster {
            spec,
            cluster_id,
            nodes,
            lib,
            mounts,
            ca_file: tls.map(|t| t.ca),
            _dir: dir,
        };
        cluster.wait_healthy(Duration::from_secs(180))?;
        Ok(cluster)
    }

    /// The CA certificate (PEM) that signed a secure cluster's broker certificates.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// A secure cluster's `bootstrap.servers` for `protocol` (one of
    /// [`SECURE_PROTOCOLS`]); `None` for a cluster without it.
    pub fn bootstrap_for(&self, protocol: &str) -> Option<String> {
        let addrs: Option<Vec<String>> = self
            .brokers()
            .map(|b| {
                b.secure_ports
                    .get(protocol)
                    .map(|p| format!("127.0.0.1:{p}"))
            })
            .collect();
        addrs.map(|a| a.join(","))
    }

    /// The brokers' `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.brokers()
            .map(Node::address)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The brokers.
    pub fn brokers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Broker)
    }

    /// The controllers.
    pub fn controllers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Controller)
    }

    /// The node with `node.id` `id`.
    ///
    /// # Panics
    /// When the cluster has no such node: a test's mistake.
    pub fn node(&self, id: i32) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// The controller listeners, for `--bootstrap-controller`.
    pub fn bootstrap_controllers(&self) -> String {
        self.controllers()
            .map(Node::address)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The broker ids registered in the metadata, as a client sees them.
    pub fn registered_brokers(&self) -> Option<Vec<i32>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("log_level", "0")
            .create()
            .ok()?;
        let md = consumer.fetch_metadata(None, Duration::from_secs(3)).ok()?;
        let mut ids: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
        ids.sort_unstable();
        Some(ids)
    }

    /// Waits until every running broker is registered and every running node's
    /// exporter accepts connections.
    ///
    /// # Errors
    /// [`Error::Timeout`] naming what was not ready, with the nodes' log tails.
    pub fn wait_healthy(&self, within: Duration) -> Result<(), Error> {
        // Started and not stopped by the test, though perhaps exited already.
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.pid().is_some()).collect();
        let want: Vec<i32> = running
            .iter()
            .filter(|n| n.role == Role::Broker)
            .map(|n| n.id)
            .collect();
        let outcome = wait_until(within, || {
            // A JVM that exits while we wait will not come back: say why at once rather
            // than at the deadline.
            let exited: Vec<&Node> = running
                .iter()
                .copied()
                .filter(|n| !n.is_running())
                .collect();
            if !exited.is_empty() {
                return Some(Err(exited));
            }
            let exporters = running
                .iter()
                .all(|n| TcpStream::connect(("127.0.0.1", n.jmx_port)).is_ok());
            let registered = self
                .registered_brokers()
                .is_some_and(|ids| want.iter().all(|w| ids.contains(w)));
            (exporters && registered).then_some(Ok(()))
        });
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(exited)) => Err(Error::Exited(
                exited.iter().map(|n| n.exit_report()).collect(),
            )),
            None => {
                let logs: String = self.nodes.iter().map(|n| n.log_tail(15)).collect();
                Err(Error::Timeout(format!(
                    "cluster not healthy within {within:?} (brokers {want:?} registered: {:?})\n{logs}",
                    self.registered_brokers()
                )))
            }
        }
    }

    /// Runs one of Kafka's tools (`org.apache.kafka.tools.TransactionsCommand`, …)
    /// against this cluster's classpath and returns its output.
    ///
    /// # Errors
    /// [`Error::Io`] when java cannot start; a failing tool is not an error here: its
    /// status is in the [`Output`].
    pub fn tool(&self, class: &str, args: &[&str]) -> Result<Output, Error> {
        tool(&self.lib, class, args)
    }
}

/// Runs `class` from Kafka's classpath at `lib`.
///
/// # Errors
/// [`Error::Io`] when java cannot start.
pub fn tool(lib: &Path, class: &str, args: &[&str]) -> Result<Output, Error> {
    Command::new(java_binary())
        .args([
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData",
            "-Dlog4j2.level=error",
            "-Dlog4j.rootLogger=ERROR",
        ])
        .arg("-cp")
        .arg(format!("{}/*", lib.display()))
        .arg(class)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("running {class}")))
}

fn java_binary() -> String {
    match std::env::var("JAVA_HOME") {
        Ok(home) if !home.is_empty() => format!("{home}/bin/java"),
        _ => "java".into(),
    }
}

/// Calls `probe` every 200 ms until it gives a value or `within` passes.
pub fn wait_until<T>(within: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Scrapes a jmx_exporter endpoint: the body of `GET url`, over plain HTTP/1.0 on
/// loopback, so that tests need no HTTP client of their own.
///
/// # Errors
/// [`Error::Io`] when the endpoint does not answer.
pub fn scrape(url: &str) -> Result<String, Error> {
    use std::io::Write as _;
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(authority).map_err(io(format!("connecting to {url}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(io("setting a timeout"))?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(io(format!("asking {url}")))?;
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .map_err(io(format!("reading {url}")))?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_uuid_is_22_url_safe_characters() {
        let id = kafka_uuid();
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(id, kafka_uuid());
    }
}
