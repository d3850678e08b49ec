//! The demo page (`GET /`) in a real headless Chromium, and the OpenAPI document
//! (`GET /openapi.json`) against the routes the host answers.
//!
//! Chromium is Debian's `chromium`, driven through WebDriver by Debian's `chromedriver`
//! (`chromium-driver`), both installed by `cargo xtask setup`. WebDriver is plain HTTP +
//! JSON, so the tests speak it with the HTTP client they already use.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use yolo_edge_tests::{Host, fresh_data_dir, photo, photo_bytes, repo};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const CREDIT: i64 = 1_000_000_000;

/// A chromedriver process and one headless Chromium session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    fn start() -> Self {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).is_file(),
                "{path} is missing, so the page cannot be tested in a browser: install Debian's `{package}` \
                 package (`cargo xtask setup` does: apt-get install -y chromium chromium-driver)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Self { driver, base, session: String::new(), agent };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser.agent.get(format!("{}/status", browser.base)).call().ok().and_then(|mut r| {
                let body = r.body_mut().read_to_string().ok()?;
                serde_json::from_str::<Value>(&body).ok().map(|v| v["value"]["ready"] == true)
            });
            if ready == Some(true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not get ready within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = fresh_data_dir().join("chromium-profile");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1100,1400",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let created = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                "goog:loggingPrefs": {"browser": "ALL"},
            }}}),
        );
        browser.session = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        browser
    }

    /// A WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).header("content-type", "application/json").send(body.to_string()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {method} {path} answered {status}: {reply}");
        reply["value"].clone()
    }

    fn session(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call("POST", &self.session("/url"), json!({"url": url}));
    }

    fn find(&self, css: &str) -> String {
        let found = self.call("POST", &self.session("/element"), json!({"using": "css selector", "value": css}));
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    /// Type `text` into an element (for a file input: the file's path).
    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call("POST", &self.session(&format!("/element/{element}/value")), json!({"text": text}));
    }

    fn clear(&self, css: &str) {
        let element = self.find(css);
        self.call("POST", &self.session(&format!("/element/{element}/clear")), json!({}));
    }

    fn script(&self, body: &str) -> Value {
        self.call("POST", &self.session("/execute/sync"), json!({"script": body, "args": []}))
    }

    /// Wait until the page's status leaves `busy` after an upload; (state, text).
    fn wait_for_answer(&self) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status =
                self.script("const s = document.getElementById('status'); return [s.dataset.state, s.textContent];");
            let state = status[0].as_str().unwrap_or_default().to_owned();
            if state == "done" || state == "error" {
                return (state, status[1].as_str().unwrap_or_default().to_owned());
            }
            assert!(Instant::now() < deadline, "the page did not answer within 60 s: {status}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The browser console's messages so far.
    fn console(&self) -> Vec<String> {
        let entries = self.call("POST", &self.session("/se/log"), json!({"type": "browser"}));
        entries.as_array().into_iter().flatten().map(|e| format!("{} {}", e["level"], e["message"])).collect()
    }

    fn screenshot(&self, path: &Path) {
        let png = self.call("GET", &self.session("/screenshot"), Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.agent.delete(format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn screenshots() -> PathBuf {
    repo().join("target/web-test")
}

fn digits(text: &str) -> i64 {
    let d: String = text.chars().filter(|c| c.is_ascii_digit() || *c == '-').collect();
    d.parse().unwrap_or_else(|_| panic!("{text:?} is not a number"))
}

#[test]
fn the_page_detects_the_cup_in_a_real_browser() {
    let host = Host::start(&[]).expect("start the host");
    let browser = Browser::start();
    browser.goto(&host.url("/"));
    assert_eq!(browser.script("return document.title"), "yolo-edge: object detection");
    browser.type_into("#key", &host.key);
    let coffee = photo("coffee.png");
    browser.type_into("#file", coffee.to_str().unwrap());
    let (state, text) = browser.wait_for_answer();
    browser.screenshot(&screenshots().join("coffee.png"));
    assert_eq!(state, "done", "the page shows: {text}");

    // The table: one row, a cup.
    let rows = browser.script(
        "return [...document.querySelectorAll('#detections tbody tr')].map(r => [...r.cells].map(c => c.textContent));",
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], "cup", "{rows:?}");
    let confidence: f64 = rows[0][2].as_str().unwrap().parse().unwrap();
    assert!((confidence - 0.596).abs() < 0.01, "{rows:?}");

    // The box drawn on the canvas, over the photograph, in its stroke colour.
    let canvas = browser.script(
        "const c = document.getElementById('canvas'); return [c.width, c.height, c.dataset.boxes, c.dataset.drawn];",
    );
    assert_eq!((canvas[0].as_u64(), canvas[1].as_u64()), (Some(600), Some(400)), "{canvas}");
    assert_eq!(canvas[2], "1", "{canvas}");
    let drawn: Value = serde_json::from_str(canvas[3].as_str().unwrap()).unwrap();
    assert_eq!(drawn[0]["class_name"], "cup");
    let bbox: Vec<i64> = drawn[0]["bbox"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    for (got, want) in bbox.iter().zip([149, 22, 428, 311]) {
        assert!((got - want).abs() <= 2, "box {bbox:?}");
    }
    // Pixels on the box's left edge have the stroke colour (#ffcc00 for class 41); the
    // photograph shows inside the box.
    let probe = format!(
        "const ctx = document.getElementById('canvas').getContext('2d');
         return [[...ctx.getImageData({x}, {y}, 1, 1).data], [...ctx.getImageData({cx}, {y}, 1, 1).data]];",
        x = bbox[0],
        y = (bbox[1] + bbox[3]) / 2,
        cx = (bbox[0] + bbox[2]) / 2
    );
    let pixels = browser.script(&probe);
    let rgb = |v: &Value| -> Vec<i64> { v.as_array().unwrap()[..3].iter().map(|c| c.as_i64().unwrap()).collect() };
    let edge = rgb(&pixels[0]);
    for (got, want) in edge.iter().zip([0xff, 0xcc, 0x00]) {
        assert!((got - want).abs() <= 12, "the box's edge is not drawn: pixel {edge:?}");
    }
    assert_ne!(rgb(&pixels[1]), edge, "the photograph is drawn under the box");

    // What the call cost, from x-tokens and x-balance, as the ledger has it.
    let shown = browser
        .script("return ['tokens', 'balance', 'invocation'].map(id => document.getElementById(id).textContent);");
    let tokens = digits(shown[0].as_str().unwrap());
    let balance = digits(shown[1].as_str().unwrap());
    assert!(tokens > 0, "{shown}");
    assert_eq!(balance, CREDIT - tokens, "the only billed call of the tenant: {shown}");
    let id = shown[2].as_str().unwrap();
    let row = host.get(&format!("/v1/invocations/{id}"));
    assert_eq!(row.status, 200, "{row:?}");
    assert_eq!(row.json()["tokens"].as_i64(), Some(tokens), "the page shows the ledger's price: {row:?}");
    let status_line = shown_status(&browser);
    assert!(status_line.contains("1 object") && status_line.contains(&shown[0].as_str().unwrap().to_owned()));

    let console = browser.console();
    assert!(!console.iter().any(|m| m.contains("SEVERE")), "the page ran without errors: {console:?}");

    // The key stays in local storage; a wrong one shows the JSON error.
    browser.goto(&host.url("/"));
    assert_eq!(browser.script("return document.getElementById('key').value"), host.key.as_str());
    browser.clear("#key");
    browser.type_into("#key", "ye_notakey_0000");
    browser.type_into("#file", coffee.to_str().unwrap());
    let (state, text) = browser.wait_for_answer();
    browser.screenshot(&screenshots().join("unauthorized.png"));
    assert_eq!(state, "error");
    assert!(text.contains("401") && text.contains("unauthorized"), "{text}");
    let console = browser.console();
    assert!(console.iter().any(|m| m.contains("401")), "the console is read: it has the failed request: {console:?}");
    assert!(!console.iter().any(|m| m.contains("Content Security Policy")), "{console:?}");
    assert_eq!(
        browser.script("return localStorage.getItem('yolo-edge.api-key')"),
        "ye_notakey_0000",
        "the key typed last is kept"
    );
    let (ok, usage, err) = host.cli(&["usage", "--tenant", "test", "--format", "json"]);
    assert!(ok, "{err}");
    let usage: Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(usage["total"]["calls"], 1, "one billed call: {usage}");
}

fn shown_status(browser: &Browser) -> String {
    browser.script("return document.getElementById('status').textContent").as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_page_and_its_assets_are_served_with_their_types_and_a_strict_policy() {
    let host = Host::shared();
    for (path, ty) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/openapi.json", "application/json"),
    ] {
        let r = host.get_with(path, &[]);
        assert_eq!(r.status, 200, "{path}: no key needed: {r:?}");
        assert_eq!(r.header("content-type"), Some(ty), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert!(r.header("x-tokens").is_none(), "{path} is not billed");
        let r = host.call("POST", path);
        r.assert_error(405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
}

#[test]
fn the_openapi_document_describes_every_route() {
    let host = Host::shared();
    let r = host.get_with("/openapi.json", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["Error"].is_object());
    let detect = &doc["paths"]["/detect"]["post"];
    for header in ["x-tokens", "x-balance", "x-invocation-id", "x-fuel", "x-nn-us"] {
        assert!(detect["responses"]["200"]["headers"][header].is_object(), "{header} is documented");
    }

    // An invocation to look up, and the photograph to send.
    let coffee = photo_bytes("coffee.png");
    let first = host.detect_raw("image/png", &coffee, "");
    assert_eq!(first.status, 200, "{first:?}");
    let id = first.header("x-invocation-id").unwrap().to_owned();

    let paths = doc["paths"].as_object().unwrap();
    let mut checked = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let url = path.replace("{id}", &id);
            let open = operation["security"].as_array().is_some_and(Vec::is_empty);
            let auth = format!("Bearer {}", host.key);
            let headers: Vec<(&str, &str)> = if open { vec![] } else { vec![("authorization", auth.as_str())] };
            let reply = match method.as_str() {
                "get" => host.get_with(&url, &headers),
                // The raw photograph where the operation takes images, else JSON with it in base64.
                "post" if operation["requestBody"]["content"]["image/png"].is_object() => {
                    host.post_with(&url, Some("image/png"), &coffee, &headers)
                }
                "post" => {
                    // The one field the request schema requires: `image`, or `images` (a list).
                    let schema = &operation["requestBody"]["content"]["application/json"]["schema"]["$ref"];
                    let pointer = schema.as_str().and_then(|r| r.strip_prefix('#')).unwrap_or_default();
                    let required = &doc.pointer(pointer).unwrap_or(&Value::Null)["required"];
                    let image = Value::String(base64::engine::general_purpose::STANDARD.encode(&coffee));
                    let body =
                        if required[0] == "images" { json!({"images": [image]}) } else { json!({"image": image}) };
                    host.post_with(&url, Some("application/json"), body.to_string().as_bytes(), &headers)
                }
                other => panic!("{other} {path}: the tests do not know how to call it"),
            };
            let code = serde_json::from_str::<Value>(&reply.body).ok().map(|v| v["error"]["code"].clone());
            assert!(
                !(reply.status == 404 && code == Some(json!("not_found"))),
                "{method} {path} is documented but not routed: {reply:?}"
            );
            assert_eq!(reply.status, 200, "{method} {path} answers as documented: {reply:?}");
            assert!(operation["responses"]["200"].is_object(), "{method} {path}: 200 documented");
            checked.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    // The routes the README names are all there (the unit test in host/src/web.rs compares
    // the document with the router's own list, routes::ROUTES).
    for route in [
        "POST /detect",
        "GET /healthz",
        "GET /metrics",
        "GET /v1/usage",
        "GET /v1/invocations/{id}",
        "GET /",
        "GET /openapi.json",
    ] {
        assert!(checked.iter().any(|c| c == route), "{route} is missing from {checked:?}");
    }
    // The documented annotated answer: the image, the detections in x-detections.
    let documented = &detect["responses"]["200"]["content"];
    assert!(documented["image/png"].is_object() && detect["responses"]["200"]["headers"]["x-detections"].is_object());
    let annotated = host.detect_raw("image/png", &coffee, "annotate=png");
    assert_eq!(annotated.status, 200, "{}", annotated.status);
    assert_eq!(annotated.header("content-type"), Some("image/png"));
    let shown: Value = serde_json::from_str(annotated.header("x-detections").unwrap_or_default()).unwrap();
    assert_eq!(shown["count"], 1, "{shown}");

    // Anything else is not routed.
    host.get("/nowhere").assert_error(404, "not_found");
}
