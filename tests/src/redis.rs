//! A real Redis server for the tests (Debian's `redis-server`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::fresh_data_dir;

/// A real `redis-server` (Debian's package, installed by set-up) on a free loopback port, with
/// its files in a temp dir and no persistence; stopped when dropped.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:PORT/0`.
    pub url: String,
    dir: PathBuf,
}

impl RedisServer {
    /// Start it and wait until it answers `PING`.
    pub fn start() -> anyhow::Result<Self> {
        let binary = Path::new("/usr/bin/redis-server");
        if !binary.is_file() {
            bail!("redis-server is missing: `cargo xtask test` installs Debian's redis-server package");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = fresh_data_dir();
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server")?;
        let server = Self { child, url: format!("redis://127.0.0.1:{port}/0"), dir };
        let started = std::time::Instant::now();
        loop {
            let ping = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.write_all(b"PING\r\n")?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf)?;
                Ok(buf)
            });
            if ping.is_ok_and(|b| &b == b"+PONG\r\n") {
                return Ok(server);
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("redis-server on port {port} did not answer PING within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
