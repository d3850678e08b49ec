//! [`Host`]: the real `yolo-edge` binary started on a free port with a fresh data directory,
//! and its command line (`cli`, keys).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::Value;

use crate::{Reply, component, host_binary, models, repo, test_guest};

/// A running host process with its own fresh data directory and a tenant `test` whose key
/// every request carries unless told otherwise. It stops when this is dropped, or when the
/// test process exits (its standard input closes).
pub struct Host {
    child: Child,
    _stdin: ChildStdin,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The API key of tenant `test` (1 000 000 000 tokens of credit).
    pub key: String,
    agent: ureq::Agent,
    stderr: std::sync::Arc<Mutex<String>>,
}

static DATA_DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A new, empty data directory under the system temp dir.
pub fn fresh_data_dir() -> PathBuf {
    let n = DATA_DIRS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("yolo-edge-test-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a data dir");
    dir
}

/// Run `yolo-edge ARGS --data-dir DIR`; returns (success, stdout, stderr).
pub fn cli(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    cli_env(data_dir, &[], args)
}

/// [`cli`] with extra environment variables (e.g. `YOLO_EDGE_DATABASE_URL`).
pub fn cli_env(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(host_binary())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .expect("run yolo-edge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `yolo-edge keys create --tenant T --credit N`: the key, read from the last line of stdout.
pub fn create_key(data_dir: &Path, tenant: &str, credit: i64) -> String {
    create_key_env(data_dir, &[], tenant, credit)
}

/// [`create_key`] with extra environment variables.
pub fn create_key_env(data_dir: &Path, env: &[(&str, &str)], tenant: &str, credit: i64) -> String {
    let credit = credit.to_string();
    let (ok, out, err) = cli_env(data_dir, env, &["keys", "create", "--tenant", tenant, "--credit", &credit]);
    assert!(ok, "keys create failed: {err}");
    out.lines().last().expect("a key on the last line").trim().to_owned()
}

impl Host {
    /// Start `yolo-edge serve` on a free port with the real component and models, plus `extra` flags.
    pub fn start(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_models(&models(), extra)
    }

    /// Like [`Host::start`] with another models directory.
    pub fn start_with_models(models: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_full(&component(), models, &fresh_data_dir(), extra)
    }

    /// Serve the test-only misbehaving component instead of the function.
    pub fn start_test_guest(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_full(&test_guest(), &models(), &fresh_data_dir(), extra)
    }

    /// Start with a given component and data directory (e.g. to restart on the same state).
    pub fn start_full(component: &Path, models: &Path, data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let component = component.display().to_string();
        let models = models.display().to_string();
        let mut args = vec!["serve", "--component", component.as_str(), "--models", models.as_str()];
        args.extend_from_slice(extra);
        Self::start_command(&args, data_dir)
    }

    /// Run `yolo-edge ARGS` (a serving subcommand: `serve ...`, `up ...`) on a free port with
    /// `data_dir`, and wait until it listens.
    pub fn start_command(args: &[&str], data_dir: &Path) -> anyhow::Result<Self> {
        Self::start_command_env(args, data_dir, &[])
    }

    /// [`Host::start_command`] with extra environment variables, for the host and for the
    /// `keys create` that makes its test key (e.g. `YOLO_EDGE_DATABASE_URL`).
    pub fn start_command_env(args: &[&str], data_dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let key = create_key_env(data_dir, env, "test", 1_000_000_000);
        let bin = host_binary();
        if !bin.is_file() {
            bail!("{} is missing: run the tests with `cargo xtask test`", bin.display());
        }
        let mut child = Command::new(&bin)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--exit-on-stdin-eof", "--log-format", "json"])
            .arg("--data-dir")
            .arg(data_dir)
            .envs(env.iter().copied())
            .current_dir(repo())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stderr_log = std::sync::Arc::new(Mutex::new(String::new()));
        let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
        let sink = stderr_log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push_str(&line);
                line.clear();
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("yolo-edge listening on http://") else {
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            bail!(
                "the host did not start (stdout {line:?}); its log:\n{}",
                stderr_log.lock().unwrap_or_else(|p| p.into_inner())
            );
        };
        let addr: SocketAddr = url.parse()?;
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(Self { child, _stdin: stdin, addr, data_dir: data_dir.to_owned(), key, agent, stderr: stderr_log })
    }

    /// One host shared by the tests of a test binary (default settings).
    pub fn shared() -> &'static Host {
        static HOST: OnceLock<Host> = OnceLock::new();
        HOST.get_or_init(|| Host::start(&[]).expect("start the shared host"))
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the host logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the host logs `text` within `within` (its log is read by another thread, so a
    /// line may arrive a moment after what caused it).
    pub fn logs_within(&self, text: &str, within: Duration) -> bool {
        let started = std::time::Instant::now();
        while !self.log().contains(text) {
            if started.elapsed() > within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `POST path` with a body and a content type (none when `None`), as tenant `test`.
    pub fn post(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        self.post_with(path, content_type, body, &[("authorization", &format!("Bearer {}", self.key))])
    }

    /// `POST path` with exactly the given extra headers (no default key).
    pub fn post_with(&self, path: &str, content_type: Option<&str>, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.post(self.url(path));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.send(body).expect("POST"))
    }

    /// `GET path` with exactly the given headers (no default key).
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.call().expect("GET"))
    }

    /// `GET path` as tenant `test`.
    pub fn get(&self, path: &str) -> Reply {
        self.get_with(path, &[("authorization", &format!("Bearer {}", self.key))])
    }

    /// Run `yolo-edge ARGS` on this host's data directory.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        cli(&self.data_dir, args)
    }

    /// `POST /detect` with raw image bytes and query options.
    pub fn detect_raw(&self, content_type: &str, image: &[u8], query: &str) -> Reply {
        let path = if query.is_empty() { "/detect".to_owned() } else { format!("/detect?{query}") };
        self.post(&path, Some(content_type), image)
    }

    /// `POST /detect` with JSON `{"image": base64, ...options}`.
    pub fn detect_json(&self, image: &[u8], options: Value) -> Reply {
        let mut body = options;
        body["image"] = Value::String(base64::engine::general_purpose::STANDARD.encode(image));
        self.post("/detect", Some("application/json"), body.to_string().as_bytes())
    }

    /// A request with any method and no body, as tenant `test`.
    pub fn call(&self, method: &str, path: &str) -> Reply {
        let url = self.url(path);
        let auth = format!("Bearer {}", self.key);
        let resp = match method {
            "GET" => self.agent.get(&url).header("authorization", &auth).call(),
            "DELETE" => self.agent.delete(&url).header("authorization", &auth).call(),
            "PUT" => self.agent.put(&url).header("authorization", &auth).send(&[][..]),
            "PATCH" => self.agent.patch(&url).header("authorization", &auth).send(&[][..]),
            "POST" => self.agent.post(&url).header("authorization", &auth).send(&[][..]),
            other => panic!("unsupported method {other}"),
        };
        Reply::from(resp.expect(method))
    }

    /// Send raw bytes on a new connection and return the raw response (up to the
    /// connection's end or `timeout`). For what a well-behaved client would not send.
    pub fn raw(&self, request: &[u8], timeout: Duration) -> String {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(timeout)).expect("timeout");
        // The host may answer and close before reading everything: a write error is fine.
        let _ = stream.write_all(request);
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `GET /healthz` answers 200.
    pub fn healthy(&self) -> bool {
        self.call("GET", "/healthz").status == 200
    }
}

impl Host {
    /// Kill the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGTERM and wait for the process to exit; its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
