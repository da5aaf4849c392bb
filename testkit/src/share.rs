//! A real share consumer (KIP-932, Kafka's own `KafkaShareConsumer`) for the tests:
//! `testkit/java/ShareConsumerProbe.java`, run as a single source file on the cluster's
//! classpath, so that no build tool is needed. The test tells it how to acknowledge
//! (accept, reject, release) and reads back what it acknowledged.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Cluster, Error, io, java_binary, repo_root};

/// How a share consumer acknowledges the records it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledge {
    /// Processed: the record is done.
    Accept,
    /// Unprocessable (a poison message): archived, never delivered again.
    Reject,
    /// Given back: delivered again, to this or another member.
    Release,
}

/// What a share consumer has acknowledged so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acknowledged {
    /// Records accepted.
    pub accepted: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Records released.
    pub released: u64,
}

/// A running share consumer, a member of its share group until [`ShareConsumer::close`]
/// or drop (which kills it).
pub struct ShareConsumer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    last: Acknowledged,
}

impl ShareConsumer {
    /// Starts one in `group` on `topic` of `cluster`, accepting, and waits until it has
    /// subscribed.
    ///
    /// # Errors
    /// [`Error::Io`] when java cannot start, [`Error::Timeout`] when it does not
    /// subscribe within two minutes.
    pub fn start(cluster: &Cluster, group: &str, topic: &str) -> Result<Self, Error> {
        let source = repo_root().join("testkit/java/ShareConsumerProbe.java");
        let mut child = Command::new(java_binary())
            .args(["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-cp")
            .arg(format!("{}/*", cluster.lib.display()))
            .arg(&source)
            .args([cluster.bootstrap().as_str(), group, topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(format!("starting {}", source.display())))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut consumer = ShareConsumer {
            child,
            stdin,
            lines,
            last: Acknowledged::default(),
        };
        consumer.next_line(Duration::from_secs(120), |l| l == "ready")?;
        Ok(consumer)
    }

    /// Acknowledges the records it gets from now on as `how`.
    ///
    /// # Errors
    /// [`Error::Io`] when the process has gone.
    pub fn acknowledge(&mut self, how: Acknowledge) -> Result<(), Error> {
        let word = match how {
            Acknowledge::Accept => "accept",
            Acknowledge::Reject => "reject",
            Acknowledge::Release => "release",
        };
        self.say(word)
    }

    /// Waits until it has acknowledged at least what `enough` asks.
    ///
    /// # Errors
    /// [`Error::Timeout`] saying what it had acknowledged when `within` passed.
    pub fn wait_acknowledged(
        &mut self,
        within: Duration,
        enough: impl Fn(&Acknowledged) -> bool,
    ) -> Result<Acknowledged, Error> {
        if enough(&self.last) {
            return Ok(self.last);
        }
        let mut last = self.last;
        let found = self.next_line(within, |l| {
            let n: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if let [accepted, rejected, released] = n[..] {
                last = Acknowledged {
                    accepted,
                    rejected,
                    released,
                };
            }
            enough(&last)
        });
        self.last = last;
        found.map(|_| last).map_err(|_| {
            Error::Timeout(format!(
                "the share consumer had acknowledged {last:?} after {within:?}"
            ))
        })
    }

    /// Closes it: it leaves its group. Waits up to a minute for the process to end.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it does not end in time (it is then killed).
    pub fn close(mut self) -> Result<(), Error> {
        let _ = self.say("quit");
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Timeout(
            "the share consumer did not close within a minute".into(),
        ))
    }

    fn say(&mut self, word: &str) -> Result<(), Error> {
        let stdin = self.stdin.as_mut().ok_or_else(|| Error::Io {
            what: "telling the share consumer".into(),
            source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        })?;
        writeln!(stdin, "{word}")
            .and_then(|()| stdin.flush())
            .map_err(io("telling the share consumer"))
    }

    fn next_line(
        &mut self,
        within: Duration,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> Result<String, Error> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Ok(line),
                Ok(_) => {}
                Err(_) => {
                    return Err(Error::Timeout(format!(
                        "the share consumer said nothing wanted within {within:?}"
                    )));
                }
            }
        }
    }
}

impl Drop for ShareConsumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
