//! A real PostgreSQL server for tests: Debian's binaries (`/usr/lib/postgresql/N/bin`,
//! the newest N, or `FORESIGHT_PG_BIN`), a cluster made by `initdb` in a temporary
//! directory, listening on one loopback port, dying with the test process. As root it
//! runs as the `postgres` user, since PostgreSQL refuses root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::Duration;

use crate::{Error, free_port, io, spawn_as, wait_until};

/// A PostgreSQL server on `127.0.0.1`.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
    child: Mutex<Option<Child>>,
}

/// The database and role the tests use.
pub const DATABASE: &str = "foresight";

fn bin_dir() -> Result<PathBuf, Error> {
    if let Ok(d) = std::env::var("FORESIGHT_PG_BIN") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(io(
            "looking for PostgreSQL in /usr/lib/postgresql (scripts/test-deps.sh installs Debian's postgresql)",
        ))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| Error::Command {
        what: "finding PostgreSQL".into(),
        output: "no /usr/lib/postgresql/N/bin/postgres: scripts/test-deps.sh installs it".into(),
    })
}

/// The `postgres` user's ids when this process is root.
fn owner() -> Result<Option<(u32, u32)>, Error> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .map_err(io("id -u postgres"))?;
    let gid = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .map_err(io("id -g postgres"))?;
    let parse = |o: &std::process::Output| -> Option<u32> {
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    match (parse(&out), parse(&gid)) {
        (Some(u), Some(g)) => Ok(Some((u, g))),
        _ => Err(Error::Command {
            what: "finding the postgres user".into(),
            output: "running as root needs the postgres user of Debian's package".into(),
        }),
    }
}

impl Postgres {
    /// Makes a cluster with `initdb` and starts it, with the database and role
    /// [`DATABASE`] (trust authentication on loopback).
    ///
    /// # Errors
    /// [`Error`] when PostgreSQL is missing or does not start within 60 s.
    pub fn start() -> Result<Postgres, Error> {
        let bin = bin_dir()?;
        let user = owner()?;
        let dir = tempfile::Builder::new()
            .prefix("foresight-pg-")
            .tempdir()
            .map_err(io("making PostgreSQL's directory"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(io("handing PostgreSQL's directory to postgres"))?;
        }
        let data = dir.path().join("data");
        let log = dir.path().join("initdb.log");
        let mut initdb = spawn_as(
            &[
                bin.join("initdb").display().to_string(),
                "-D".into(),
                data.display().to_string(),
                "-U".into(),
                DATABASE.into(),
                "-A".into(),
                "trust".into(),
                "--no-sync".into(),
                "-E".into(),
                "UTF8".into(),
            ],
            &log,
            user,
        )?;
        let status = initdb.wait().map_err(io("waiting for initdb"))?;
        if !status.success() {
            return Err(Error::Command {
                what: "initdb".into(),
                output: std::fs::read_to_string(&log).unwrap_or_default(),
            });
        }
        let pg = Postgres {
            port: free_port()?,
            dir,
            bin,
            user,
            child: Mutex::new(None),
        };
        pg.start_server()?;
        let created = Command::new(pg.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                DATABASE,
                DATABASE,
            ])
            .output()
            .map_err(io("createdb"))?;
        if !created.status.success() {
            return Err(Error::Command {
                what: "createdb".into(),
                output: String::from_utf8_lossy(&created.stderr).into_owned(),
            });
        }
        Ok(pg)
    }

    fn start_server(&self) -> Result<(), Error> {
        let log = self.dir.path().join("postgres.log");
        let child = spawn_as(
            &[
                self.bin.join("postgres").display().to_string(),
                "-D".into(),
                self.dir.path().join("data").display().to_string(),
                "-p".into(),
                self.port.to_string(),
                "-k".into(),
                self.dir.path().display().to_string(),
                "-c".into(),
                "listen_addresses=127.0.0.1".into(),
                "-c".into(),
                "fsync=off".into(),
                "-c".into(),
                "max_connections=200".into(),
            ],
            &log,
            self.user,
        )?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let ready = wait_until(Duration::from_secs(60), || {
            Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .ok()
                .filter(|s| s.success())
        });
        ready.map(|_| ()).ok_or_else(|| {
            Error::Timeout(format!(
                "PostgreSQL did not accept connections within 60 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ))
        })
    }

    /// The URL of [`DATABASE`].
    pub fn url(&self) -> String {
        format!("postgres://{DATABASE}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory (data and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills it (SIGKILL) and waits for it to end.
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it as an operator would (SIGINT: fast shutdown, connections closed) and
    /// waits for it to end.
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
            let _ = c.wait();
        }
    }

    /// Stops it and starts it again on the same port with the same data.
    ///
    /// # Errors
    /// [`Error`] when it does not come back within 60 s.
    pub fn restart(&self) -> Result<(), Error> {
        self.stop();
        self.start_server()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_answers_and_restarts() {
        let pg = Postgres::start().unwrap();
        let psql = |sql: &str| {
            let bin = bin_dir().unwrap();
            let out = Command::new(bin.join("psql"))
                .args([&pg.url(), "-tAc", sql])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        psql("CREATE TABLE t (v int); INSERT INTO t VALUES (42)");
        pg.restart().unwrap();
        assert_eq!(psql("SELECT v FROM t"), "42");
    }
}
