//! Harness for the end-to-end tests: start the real `yolo-edge` host (the release binary
//! `cargo xtask` built) with the real component and model, talk HTTP to it, and compute
//! independent reference answers with `tests/reference/reference.py` (Pillow + the
//! `onnxruntime` Python package) in the set-up venv.
#![deny(missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_owned()
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| repo().join(default))
}

/// The host binary (`YOLO_EDGE_BIN`, default `target/release/yolo-edge`).
pub fn host_binary() -> PathBuf {
    env_path("YOLO_EDGE_BIN", "target/release/yolo-edge")
}

/// The function component (`YOLO_EDGE_COMPONENT`).
pub fn component() -> PathBuf {
    env_path("YOLO_EDGE_COMPONENT", "target/wasm32-wasip2/wasm/yolo_edge_function.wasm")
}

/// The misbehaving test-only component (`tests/guest`).
pub fn test_guest() -> PathBuf {
    repo().join("target/wasm32-wasip2/wasm/yolo_edge_test_guest.wasm")
}

/// The models directory set-up produced.
pub fn models() -> PathBuf {
    repo().join("models")
}

/// A test photograph from `tests/data/`.
pub fn photo(name: &str) -> PathBuf {
    repo().join("tests/data").join(name)
}

/// The bytes of a test photograph.
pub fn photo_bytes(name: &str) -> Vec<u8> {
    let path = photo(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask test`, which fetches it)", path.display()))
}

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

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl From<ureq::http::Response<ureq::Body>> for Reply {
    fn from(mut r: ureq::http::Response<ureq::Body>) -> Self {
        let headers =
            r.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        Self { status: r.status().as_u16(), headers, body }
    }
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A numeric header.
    pub fn header_u64(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number in {self:?}"))
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// Assert a JSON error answer: status, content type and `error.code`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{self:?}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {self:?}");
    }
}

/// Reference detections for `images` from `tests/reference/reference.py`, keyed by file name.
pub fn reference(images: &[&str], args: &[&str]) -> Value {
    let python = repo().join(".cache/venv/bin/python");
    let out = Command::new(&python)
        .arg(repo().join("tests/reference/reference.py"))
        .arg("--model-dir")
        .arg(models().join("yolov3-tiny"))
        .args(args)
        .args(images.iter().map(|i| photo(i)))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): run `cargo xtask test`", python.display()));
    assert!(out.status.success(), "reference.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let all: Value = serde_json::from_slice(&out.stdout).expect("reference JSON");
    let mut by_name = serde_json::Map::new();
    for (path, v) in all.as_object().expect("object") {
        let name = Path::new(path).file_name().and_then(|n| n.to_str()).expect("name").to_owned();
        by_name.insert(name, v.clone());
    }
    Value::Object(by_name)
}

/// How close an answer must be to the reference.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Largest confidence difference.
    pub conf: f64,
    /// Largest difference of a box coordinate, in original image pixels.
    pub px: f64,
}

impl Tolerance {
    /// The contract for lossless images (PNG, WebP): decoded pixels are identical to
    /// Pillow's, so answers agree to 0.01 confidence and 1 px.
    pub const LOSSLESS: Self = Self { conf: 0.01, px: 1.0 };

    /// For JPEG: the `image` crate's decoder (zune-jpeg) and Pillow's libjpeg-turbo upsample
    /// 4:2:0 chroma differently (up to 4 levels on ~15% of the pixels of our photographs),
    /// so boxes are held to 1 px of the model's input grid (416 px), i.e. 1 px scaled to the
    /// photograph; confidences keep the 0.01 bound.
    pub fn jpeg(width: f64, height: f64, input: f64) -> Self {
        Self { conf: 0.01, px: (width.max(height) / input).max(1.0) }
    }
}

fn iou(a: &Value, b: &Value) -> f64 {
    let f = |v: &Value, k: usize| v["bbox"][k].as_f64().unwrap_or(0.0);
    let iw = (f(a, 2).min(f(b, 2)) - f(a, 0).max(f(b, 0))).max(0.0);
    let ih = (f(a, 3).min(f(b, 3)) - f(a, 1).max(f(b, 1))).max(0.0);
    let area = |v: &Value| (f(v, 2) - f(v, 0)) * (f(v, 3) - f(v, 1));
    let inter = iw * ih;
    inter / (area(a) + area(b) - inter).max(1e-9)
}

/// Pair `/detect` detections across two answers as [`assert_matches_reference`] does: each of
/// `reference`'s, in order, with the unused one of `ours` of the same class that overlaps it
/// best (IoU above 0.5). For every reference detection, the index of its pair in `ours`, if any.
pub fn pair_detections(ours: &[Value], reference: &[Value]) -> Vec<Option<usize>> {
    let mut used = vec![false; ours.len()];
    reference
        .iter()
        .map(|y| {
            let best = ours
                .iter()
                .enumerate()
                .filter(|(i, x)| !used[*i] && x["class_id"] == y["class_id"])
                .map(|(i, x)| (i, iou(x, y)))
                .max_by(|p, q| p.1.total_cmp(&q.1))
                .filter(|(_, overlap)| *overlap > 0.5)
                .map(|(i, _)| i);
            if let Some(i) = best {
                used[i] = true;
            }
            best
        })
        .collect()
}

/// Assert that `ours` (a `/detect` answer) matches `expected` (a reference entry): same
/// image size; detections sorted by confidence; each reference detection paired with one
/// of ours of the same class (best IoU), confidence and every box coordinate within
/// `tol`. A detection may be missing on either side only when its confidence is within
/// `tol.conf` of the threshold `conf` (the two pipelines may fall on either side of it).
pub fn assert_matches_reference(ours: &Value, expected: &Value, tol: Tolerance, conf: f64, what: &str) {
    assert_eq!(ours["image"], expected["image"], "{what}: image size");
    let a = ours["detections"].as_array().expect("detections");
    let b = expected["detections"].as_array().expect("reference detections");
    assert_eq!(ours["count"].as_u64(), Some(a.len() as u64), "{what}: count");
    let confidence = |v: &Value| v["confidence"].as_f64().unwrap_or(-1.0);
    assert!(a.windows(2).all(|w| confidence(&w[0]) >= confidence(&w[1])), "{what}: not sorted: {a:?}");
    let borderline = |v: &Value| (confidence(v) - conf).abs() <= tol.conf;
    let pairs = pair_detections(a, b);
    let mut used = vec![false; a.len()];
    for (y, pair) in b.iter().zip(pairs) {
        let Some(i) = pair else {
            assert!(borderline(y), "{what}: reference detection {y} has no counterpart in {a:?}");
            continue;
        };
        used[i] = true;
        let x = &a[i];
        assert_eq!(x["class_name"], y["class_name"], "{what}");
        let dc = (confidence(x) - confidence(y)).abs();
        assert!(dc <= tol.conf, "{what}: confidence differs by {dc}: {x} vs {y}");
        for k in 0..4 {
            let d = (x["bbox"][k].as_f64().unwrap() - y["bbox"][k].as_f64().unwrap()).abs();
            assert!(d <= tol.px, "{what}: bbox[{k}] differs by {d}px (tolerance {}): {x} vs {y}", tol.px);
        }
    }
    for (x, used) in a.iter().zip(used) {
        assert!(used || borderline(x), "{what}: detection {x} is not in the reference {b:?}");
    }
}

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
