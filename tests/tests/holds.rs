//! Holds survive a host that dies mid-call: the real host, killed with a call's hold open,
//! then started again on the same data directory.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use yolo_edge_tests::{Host, component, create_key, fresh_data_dir, models, repo};

/// `(open holds, tokens they hold, the tenants' held column summed)` in the SQLite ledger.
fn open_holds(data_dir: &std::path::Path) -> (i64, i64, i64) {
    let script = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
                  print(*c.execute('SELECT COUNT(*), COALESCE(SUM(tokens), 0), \
                  (SELECT COALESCE(SUM(held), 0) FROM tenants) FROM holds').fetchone())";
    let out = std::process::Command::new(repo().join(".cache/venv/bin/python"))
        .args(["-c", script])
        .arg(data_dir.join("yolo-edge.sqlite3"))
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let n: Vec<i64> = text.split_whitespace().map(|v| v.parse().unwrap()).collect();
    (n[0], n[1], n[2])
}

#[test]
fn a_host_killed_with_holds_open_releases_them_when_it_starts_again() {
    let data_dir = fresh_data_dir();
    let host = Host::start_full(&component(), &models(), &data_dir, &[]).unwrap();
    let key = create_key(&data_dir, "acme", 10_000);
    // Two calls admitted (each holds its price) whose bodies never finish arriving.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(host.addr).unwrap();
        write!(
            s,
            "POST /detect HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
        )
        .unwrap();
        s.write_all(&[0x89, b'P', b'N', b'G']).unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    while open_holds(&data_dir).0 < 2 {
        assert!(started.elapsed() < Duration::from_secs(20), "the two calls were never admitted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, held, column) = open_holds(&data_dir);
    assert_eq!((held, column), (2_000, 2_000), "each holds per_call (nothing priced yet)");
    host.kill();
    drop(slow);
    assert_eq!(open_holds(&data_dir).0, 2, "a killed host leaves its holds");

    let host = Host::start_full(&component(), &models(), &data_dir, &[]).unwrap();
    assert_eq!(open_holds(&data_dir), (0, 0, 0), "released at start");
    let (ok, out, err) = host.cli(&["ledger", "verify"]);
    assert!(ok && out.contains("ledger ok"), "{out}{err}");
    let (ok, out, err) = host.cli(&["credit", "add", "--tenant", "acme", "--tokens", "0", "--note", "probe"]);
    assert!(ok && out.contains("balance 10000 "), "no tokens lost or created: {out}{err}");
    let _ = std::fs::remove_dir_all(data_dir);
}
