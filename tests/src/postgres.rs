//! A real PostgreSQL server for the tests (Debian's `postgresql`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::fresh_data_dir;

/// A real PostgreSQL server (Debian's `postgresql` package, installed by set-up) on a free
/// loopback port, its cluster in a temp dir (owned by the `postgres` user when the tests run
/// as root, as `initdb` refuses root); shut down and removed when dropped.
pub struct PostgresServer {
    child: Option<Child>,
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    as_user: Option<(u32, u32)>,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
}

fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is missing: `cargo xtask test` installs Debian's postgresql package")?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).context("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql package")
}

fn id_of(flag: &str) -> anyhow::Result<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output()?;
    anyhow::ensure!(out.status.success(), "no `postgres` user (Debian's postgresql package creates it)");
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

impl PostgresServer {
    /// Create a cluster, start it, and wait until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let dir = fresh_data_dir();
        let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n"))?;
        let as_user = if root { Some((id_of("-u")?, id_of("-g")?)) } else { None };
        if let Some((uid, gid)) = as_user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let mut server = Self { child: None, bin, port, dir, as_user, url };
        let init = server
            .command("initdb")
            .arg("-D")
            .arg(server.dir.join("data"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .context("cannot run initdb")?;
        anyhow::ensure!(init.status.success(), "initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        server.resume()?;
        Ok(server)
    }

    /// One of the server's programs, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt as _;
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.as_user {
            c.uid(uid).gid(gid);
        }
        c
    }

    /// Stop the server at once (SIGQUIT, as a crash of the database would look to clients);
    /// its data stays for [`PostgresServer::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-QUIT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Start the (stopped) server again on the same port and data, and wait until it is ready.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let log_path = self.dir.join("postgres.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        if let Some((uid, gid)) = self.as_user {
            std::os::unix::fs::chown(&log_path, Some(uid), Some(gid))?;
        }
        let port = self.port.to_string();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &port, "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"])
            .arg("-k")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start postgres")?;
        self.child = Some(child);
        let started = std::time::Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .output()?;
            if ready.status.success() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("postgres on port {port} was not ready within 30 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// A new, empty database on this server: its URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(format!("postgres://postgres@127.0.0.1:{}/{name}", self.port))
    }

    /// Run SQL with `psql` in `database`; its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", database])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .context("cannot run psql")?;
        anyhow::ensure!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT): the postmaster stops its backends, then exits.
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
