//! The HTTP front's limits, seen as a client sees them: oversized bodies and heads get their
//! JSON answer (413, 431), slow clients get 408 or a closed connection without holding an
//! instance or a tenant's place, and a cap on open connections keeps `/healthz` answering.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use yolo_edge_tests::{Host, create_key, photo_bytes, repo};

const MIB: usize = 1 << 20;

/// An answer read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        let v: Value = serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        assert_eq!(v["error"]["code"], code, "{self:?}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{self:?}");
    }
}

/// Read one answer (head, then `Content-Length` bytes of body).
fn read_answer(stream: &TcpStream) -> std::io::Result<Raw> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status =
        line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("no status line: {line:?}"))
        })?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap_or((l, ""));
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Raw { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Send `head`, then all of `body` (in 1 MiB writes), and only then read the answer, as
/// Python's `http.client` and many other clients do: the server must read what it is sent.
fn send_all_then_read(addr: SocketAddr, head: &str, body: impl Iterator<Item = Vec<u8>>) -> (std::io::Result<()>, Raw) {
    let mut s = connect(addr);
    let sent = (|| {
        s.write_all(head.as_bytes())?;
        for piece in body {
            s.write_all(&piece)?;
        }
        s.flush()
    })();
    let answer = read_answer(&s).unwrap_or_else(|e| panic!("no answer after sending (send: {sent:?}): {e}"));
    (sent, answer)
}

fn zeros(total: usize) -> impl Iterator<Item = Vec<u8>> {
    (0..total.div_ceil(MIB)).map(move |i| vec![0u8; MIB.min(total - i * MIB)])
}

fn chunked(total: usize) -> impl Iterator<Item = Vec<u8>> {
    zeros(total)
        .map(|piece| {
            let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
            c.extend_from_slice(&piece);
            c.extend_from_slice(b"\r\n");
            c
        })
        .chain(std::iter::once(b"0\r\n\r\n".to_vec()))
}

fn calls(host: &Host) -> u64 {
    host.get("/v1/usage").json()["total"]["calls"].as_u64().expect("calls")
}

#[test]
fn a_40_mib_body_gets_its_413_answer_declared_or_chunked() {
    let host = Host::start(&[]).unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", host.key);
    let declared = format!(
        "POST /detect HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        40 * MIB
    );
    let (sent, r) = send_all_then_read(host.addr, &declared, zeros(40 * MIB));
    assert!(sent.is_ok(), "the whole body was accepted: {sent:?}");
    r.assert_error(413, "payload_too_large");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");

    let chunked_head = format!(
        "POST /detect HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let (sent, r) = send_all_then_read(host.addr, &chunked_head, chunked(40 * MIB));
    assert!(sent.is_ok(), "the whole chunked body was accepted: {sent:?}");
    r.assert_error(413, "payload_too_large");
    assert!(r.body.contains(&(20 * MIB).to_string()), "names the limit: {r:?}");

    // A refusal decided before the body (no key) reaches the client the same way.
    let anonymous = format!("POST /detect HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 40 * MIB);
    let (sent, r) = send_all_then_read(host.addr, &anonymous, zeros(40 * MIB));
    assert!(sent.is_ok(), "{sent:?}");
    r.assert_error(401, "unauthorized");

    // Python's urllib writes the whole body, then reads.
    let python = repo().join(".cache/venv/bin/python");
    let script = r#"
import json, sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], data=b"\0" * (40 << 20), method="POST",
    headers={"Authorization": "Bearer " + sys.argv[2], "Content-Type": "image/png"})
try:
    urllib.request.urlopen(req, timeout=60)
    print("no error")
except urllib.error.HTTPError as e:
    print(e.code, json.loads(e.read())["error"]["code"])
"#;
    let out =
        std::process::Command::new(&python).args(["-c", script, &host.url("/detect"), &host.key]).output().unwrap();
    assert!(out.status.success(), "urllib: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "413 payload_too_large");

    // curl, with and without `Expect: 100-continue` (its default for large bodies).
    let file = host.data_dir.join("big.bin");
    std::fs::write(&file, vec![0u8; 40 * MIB]).unwrap();
    for expect in ["Expect: 100-continue", "Expect:"] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-X", "POST", "-w", "\n%{http_code}", "-H", expect, "-H", &auth[..auth.len() - 2]])
            .args(["-H", "Content-Type: image/png", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(host.url("/detect"))
            .output();
        let Ok(out) = out else {
            println!("curl is not installed: skipped");
            break;
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "curl ({expect}): {text} {}", String::from_utf8_lossy(&out.stderr));
        let (body, code) = text.rsplit_once('\n').unwrap();
        assert_eq!(code, "413", "curl ({expect}): {text}");
        assert!(body.contains("payload_too_large"), "{body}");
    }
    assert_eq!(calls(&host), 0, "nothing was billed");
    assert!(host.healthy());
}

fn raw_get(addr: SocketAddr, extra_headers: &str) -> std::io::Result<Raw> {
    let mut s = connect(addr);
    // The host may refuse before reading everything: a write error is fine, the answer counts.
    let _ = s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{extra_headers}\r\n").as_bytes());
    read_answer(&s)
}

#[test]
fn oversized_heads_get_a_431_json_answer() {
    let host = Host::start(&[]).unwrap();
    let big = format!("X-Big: {}\r\n", "a".repeat(200_000));
    raw_get(host.addr, &big).unwrap().assert_error(431, "headers_too_large");
    let many: String = (0..150).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let r = raw_get(host.addr, &many).unwrap();
    r.assert_error(431, "headers_too_large");
    assert!(r.body.contains("151 header fields"), "150 and Host: {r:?}");
    // Just under the limits: served.
    let fine: String = (0..90).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    assert_eq!(raw_get(host.addr, &fine).unwrap().status, 200);
    // A head larger than hyper's own buffer is refused by hyper: a bare 431 (or, if the
    // client is still writing, a closed connection), never an answer.
    let huge = format!("X-Big: {}\r\n", "a".repeat(2 * MIB));
    if let Ok(r) = raw_get(host.addr, &huge) {
        assert_eq!(r.status, 431, "{r:?}");
    }
    // A refused head with a body: the body is drained, the client sees the 431.
    let head = format!(
        "POST /detect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{big}Content-Length: {}\r\n\r\n",
        host.key,
        4 * MIB
    );
    let (sent, r) = send_all_then_read(host.addr, &head, zeros(4 * MIB));
    assert!(sent.is_ok(), "{sent:?}");
    r.assert_error(431, "headers_too_large");
    assert_eq!(calls(&host), 0);

    // The limits are settings.
    let strict = Host::start(&["--max-header-bytes", "4096", "--max-headers", "10"]).unwrap();
    raw_get(strict.addr, &format!("X-Big: {}\r\n", "a".repeat(5000))).unwrap().assert_error(431, "headers_too_large");
    let eleven: String = (0..11).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    raw_get(strict.addr, &eleven).unwrap().assert_error(431, "headers_too_large");
    assert_eq!(raw_get(strict.addr, "X-Small: 1\r\n").unwrap().status, 200);
}

#[test]
fn a_stalled_body_gets_408_and_holds_no_slot_nor_tenant_place() {
    let host = Host::start(&[
        "--max-instances",
        "1",
        "--tenant-max-concurrent",
        "1",
        "--body-read-timeout-ms",
        "2500",
        "--header-read-timeout-ms",
        "1000",
    ])
    .unwrap();
    let other = create_key(&host.data_dir, "other", 1_000_000_000);
    let png = photo_bytes("coffee.png");
    let mut stalled = connect(host.addr);
    let head = format!(
        "POST /detect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        host.key,
        png.len()
    );
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&png[..1000]).unwrap();
    let started = Instant::now();

    // A head that trickles in: the connection is closed, nothing is answered.
    let mut trickle = connect(host.addr);
    trickle.write_all(b"POST /detect HTTP/1.1\r\nHost: x\r\n").unwrap();

    // Meanwhile the same tenant (cap: 1 in flight), another tenant (1 instance) and
    // /healthz are served.
    let r = host.detect_raw("image/png", &png, "");
    assert_eq!(r.status, 200, "{r:?}");
    let r = host.post_with("/detect", Some("image/png"), &png, &[("authorization", &format!("Bearer {other}"))]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(host.healthy());
    assert!(started.elapsed() < Duration::from_millis(2500), "served while the body stalled: {:?}", started.elapsed());

    let r = read_answer(&stalled).unwrap();
    r.assert_error(408, "request_timeout");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(started.elapsed() >= Duration::from_millis(2400), "{:?}", started.elapsed());
    let mut rest = Vec::new();
    assert_eq!(trickle.read_to_end(&mut rest).unwrap_or(0), 0, "closed without an answer: {rest:?}");

    // A body that keeps trickling but takes too long in all.
    let slow = Host::start(&["--body-read-timeout-ms", "1000", "--body-timeout-ms", "1500"]).unwrap();
    let mut s = connect(slow.addr);
    let head = format!(
        "POST /detect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\n\r\n",
        slow.key
    );
    s.write_all(head.as_bytes()).unwrap();
    let t = Instant::now();
    let answered = std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_answer(&s));
        let mut w = &s;
        for _ in 0..20 {
            if w.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            if reader.is_finished() {
                break;
            }
        }
        reader.join().unwrap().unwrap()
    });
    answered.assert_error(408, "request_timeout");
    assert!(answered.body.contains("1500 ms"), "{answered:?}");
    assert!(t.elapsed() < Duration::from_millis(3000));

    // Nothing was billed for the slow clients: only the two answered invocations.
    assert_eq!(calls(&host), 1);
    let (ok, out, err) = host.cli(&["ledger", "verify"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 rows"), "{out}");
    assert_eq!(calls(&slow), 0);
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// `POST /detect` on a connection of its own (no pooled connection holds a place).
fn detect_fresh(host: &Host, png: &[u8]) -> yolo_edge_tests::Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let r = agent
        .post(host.url("/detect"))
        .header("authorization", &format!("Bearer {}", host.key))
        .header("content-type", "image/png")
        .send(png)
        .expect("POST");
    yolo_edge_tests::Reply::from(r)
}

#[test]
fn a_flood_of_idle_connections_is_capped_and_healthz_still_answers() {
    let host = Host::start(&["--max-connections", "4", "--header-read-timeout-ms", "20000"]).unwrap();
    let png = photo_bytes("coffee.png");
    assert_eq!(raw_get(host.addr, "").unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let idle_fds = open_fds(host.pid());

    let mut idle: Vec<TcpStream> = (0..4).map(|_| connect(host.addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = raw_get(host.addr, "").unwrap();
    assert_eq!(r.status, 200, "/healthz answers at the cap: {r:?}");
    assert_eq!(r.header("connection"), Some("close"), "one request per connection over the cap");
    let r = detect_fresh(&host, &png);
    r.assert_error(503, "overloaded");
    assert!(r.header("retry-after").is_some());

    // Far more idle sockets than the cap: the host keeps at most cap + reserve of them.
    idle.extend((0..60).map(|_| connect(host.addr)));
    std::thread::sleep(Duration::from_millis(500));
    let flooded = open_fds(host.pid());
    assert!(flooded <= idle_fds + 4 + 16 + 2, "{flooded} fds open (idle: {idle_fds})");

    drop(idle);
    let t = Instant::now();
    loop {
        let r = detect_fresh(&host, &png);
        if r.status == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "still refused once the flood left: {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = Instant::now();
    while open_fds(host.pid()) > idle_fds && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(open_fds(host.pid()) <= idle_fds, "{} fds, {idle_fds} when idle", open_fds(host.pid()));
}
