//! Several hosts on one PostgreSQL ledger (`--database-url`): a real `postgres` from Debian's
//! package on a loopback port, real hosts with the real component and model.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use yolo_edge_tests::{Host, PostgresServer, cli_env, create_key_env, fresh_data_dir, photo_bytes};

const URL_VAR: &str = "YOLO_EDGE_DATABASE_URL";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// What one detection request got: status, invocation id, replay flag, body.
struct Answer {
    status: u16,
    invocation_id: Option<String>,
    replayed: bool,
    body: String,
}

fn detect(
    agent: &ureq::Agent,
    addr: std::net::SocketAddr,
    key: &str,
    image: &[u8],
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let mut req = agent
        .post(format!("http://{addr}/detect"))
        .header("content-type", "image/png")
        .header("authorization", &format!("Bearer {key}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(image).map_err(|e| e.to_string())?;
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (invocation_id, replayed) = (header("x-invocation-id"), header("x-replayed").is_some());
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok(Answer { status, invocation_id, replayed, body })
}

fn verify(data_dir: &std::path::Path, url: &str) -> (bool, String) {
    let (ok, out, err) = cli_env(data_dir, &[(URL_VAR, url)], &["ledger", "verify"]);
    (ok, format!("{out}{err}"))
}

#[test]
fn admin_commands_migrations_and_verify_work_on_postgres() {
    let pg = PostgresServer::start().expect("start postgres");
    let url = pg.create_database("admin").unwrap();
    let dir = fresh_data_dir();
    let env = [(URL_VAR, url.as_str())];
    let key = create_key_env(&dir, &env, "acme", 500);
    assert!(key.starts_with("ye_"), "{key}");
    assert!(!dir.join("yolo-edge.sqlite3").exists(), "nothing is written to SQLite when a database URL is given");
    // Every step of the schema (1: the ledger, 2: holds), each recorded once.
    let steps = yolo_edge_ledger::postgres::MIGRATIONS.len();
    assert_eq!(pg.psql("admin", "SELECT version, name FROM schema_migrations").unwrap().lines().count(), steps);
    assert_eq!(pg.psql("admin", "SELECT balance FROM tenants WHERE name = 'acme'").unwrap(), "500");

    let (ok, out, err) = cli_env(&dir, &env, &["credit", "add", "--tenant", "acme", "--tokens", "250"]);
    assert!(ok && out.contains("balance 750"), "{out}{err}");
    let (ok, out, _) = cli_env(&dir, &env, &["keys", "list", "--tenant", "acme"]);
    assert!(ok && out.contains("acme") && out.contains("active"), "{out}");
    let (ok, report) = verify(&dir, &url);
    assert!(ok && report.contains("ledger ok: 0 rows"), "{report}");
    // Opening again applies nothing twice.
    create_key_env(&dir, &env, "acme", 0);
    assert_eq!(pg.psql("admin", "SELECT count(*) FROM schema_migrations").unwrap(), steps.to_string());

    // A database migrated by a newer yolo-edge is refused, with the reason.
    pg.psql("admin", "INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')").unwrap();
    let (ok, _, err) = cli_env(&dir, &env, &["keys", "list"]);
    assert!(!ok && err.contains("schema version 999"), "{err}");
    pg.psql("admin", "DELETE FROM schema_migrations WHERE version = 999").unwrap();

    // Clear errors for a server that is not there and for a URL that is not PostgreSQL's.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("postgres://yolo:hunter2@127.0.0.1:{closed}/x");
    let (ok, _, err) = cli_env(&dir, &[(URL_VAR, nowhere.as_str())], &["keys", "list"]);
    assert!(!ok && err.contains("cannot connect to PostgreSQL") && !err.contains("hunter2"), "{err}");
    let (ok, _, err) = cli_env(&dir, &[(URL_VAR, "mysql://db/x")], &["keys", "list"]);
    assert!(!ok && err.contains("unsupported database URL"), "{err}");
}

/// Two hosts on one database, eight clients spread over both, one host killed (SIGKILL) in
/// the middle: every answer that carries an invocation id has exactly one ledger row, a row
/// without an answer can only belong to a request cut off by the kill, the chain verifies
/// and the balance is what was credited minus what the rows charged.
#[test]
fn two_hosts_share_one_ledger_and_a_killed_host_loses_nothing() {
    let pg = PostgresServer::start().expect("start postgres");
    let url = pg.create_database("fleet").unwrap();
    let env = [(URL_VAR, url.as_str())];
    let args = ["serve", "--no-result-cache", "--tenant-rps", "0", "--tenant-max-concurrent", "0"];
    let start = || {
        let component = yolo_edge_tests::component().display().to_string();
        let models = yolo_edge_tests::models().display().to_string();
        let mut full = args.to_vec();
        full.extend(["--component", &component, "--models", &models]);
        Host::start_command_env(&full, &fresh_data_dir(), &env).expect("start a host")
    };
    let a = start();
    let b = start();
    // A key made through one host's data directory works on the other: keys live in PostgreSQL.
    let key = a.key.clone();
    let image = photo_bytes("coffee.png");
    let addrs = [a.addr, b.addr];
    let b_addr = b.addr;
    let b = Mutex::new(Some(b));

    let answered = Mutex::new(Vec::<String>::new());
    let cut_off = AtomicUsize::new(0);
    let sent = AtomicUsize::new(0);
    let killed = AtomicBool::new(false);
    const PER_CLIENT: usize = 8;
    std::thread::scope(|s| {
        for client in 0..8 {
            let (answered, cut_off, sent, killed, key, image) = (&answered, &cut_off, &sent, &killed, &key, &image);
            s.spawn(move || {
                let agent = agent();
                for i in 0..PER_CLIENT {
                    let mut addr = addrs[(client + i) % 2];
                    if addr == b_addr && killed.load(Ordering::SeqCst) {
                        addr = addrs[0];
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    match detect(&agent, addr, key, image, &[]) {
                        Ok(r) => {
                            assert_eq!(r.status, 200, "{}", r.body);
                            answered.lock().unwrap().push(r.invocation_id.expect("an invocation id"));
                        }
                        // Only requests to the host that was killed may go unanswered.
                        Err(e) => {
                            assert_eq!(addr, b_addr, "host A failed a request: {e}");
                            cut_off.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
        // Kill B once a quarter of the requests are under way, while it has some in flight.
        while sent.load(Ordering::SeqCst) < 16 {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(40));
        killed.store(true, Ordering::SeqCst);
        b.lock().unwrap().take().expect("B runs").kill();
    });

    let answered = answered.into_inner().unwrap();
    let unique: HashSet<&String> = answered.iter().collect();
    assert_eq!(unique.len(), answered.len(), "an invocation id was answered twice");
    let rows: Vec<String> =
        pg.psql("fleet", "SELECT id FROM invocations ORDER BY seq").unwrap().lines().map(str::to_owned).collect();
    let in_ledger: HashSet<&String> = rows.iter().collect();
    assert_eq!(in_ledger.len(), rows.len(), "duplicate ledger rows");
    for id in &answered {
        assert!(in_ledger.contains(id), "answer {id} has no ledger row");
    }
    let orphans = rows.len() - answered.len();
    let cut_off = cut_off.load(Ordering::SeqCst);
    eprintln!("{} answered, {cut_off} cut off by the kill, {orphans} rows without an answer", answered.len());
    assert!(
        orphans <= cut_off,
        "{orphans} rows without an answer, but only {cut_off} requests were cut off by the kill"
    );
    assert!(answered.len() >= 8 * PER_CLIENT - cut_off, "every request not cut off was answered");
    assert!(answered.len() > 40, "most requests were answered: {}", answered.len());

    let (ok, report) = verify(&a.data_dir, &url);
    assert!(ok, "{report}");
    assert!(report.contains(&format!("ledger ok: {} rows", rows.len())), "{report}");
    // Two hosts each credited 1e9 to tenant `test` when their keys were made.
    let spent: i64 = pg.psql("fleet", "SELECT sum(tokens) FROM invocations").unwrap().parse().unwrap();
    let balance: i64 = pg.psql("fleet", "SELECT balance FROM tenants WHERE name = 'test'").unwrap().parse().unwrap();
    assert_eq!(balance, 2_000_000_000 - spent);
    let (ok, out, err) = cli_env(&a.data_dir, &env, &["usage", "--tenant", "test", "--format", "json"]);
    assert!(ok, "{err}");
    let usage: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(usage["total"]["calls"].as_u64(), Some(rows.len() as u64), "{usage}");
    assert_eq!(usage["total"]["tokens"].as_i64(), Some(spent), "{usage}");

    // The surviving host still serves, and a tampered row is named by `ledger verify`.
    let after = detect(&agent(), a.addr, &key, &image, &[]).unwrap();
    assert_eq!(after.status, 200);
    pg.psql("fleet", "UPDATE invocations SET tokens = tokens + 1 WHERE seq = 3").unwrap();
    let (ok, report) = verify(&a.data_dir, &url);
    assert!(!ok && report.contains("row 3") && report.contains("altered"), "{report}");
}

/// The same `Idempotency-Key` sent to both hosts at the same moment runs once and is billed
/// once: the other host waits for the first and replays its answer.
#[test]
fn an_idempotency_key_sent_to_both_hosts_at_once_is_billed_once() {
    let pg = PostgresServer::start().expect("start postgres");
    let url = pg.create_database("idem").unwrap();
    let env = [(URL_VAR, url.as_str())];
    let start = || {
        let component = yolo_edge_tests::component().display().to_string();
        let models = yolo_edge_tests::models().display().to_string();
        let args = ["serve", "--no-result-cache", "--component", &component, "--models", &models];
        Host::start_command_env(&args, &fresh_data_dir(), &env).expect("start a host")
    };
    let (a, b) = (start(), start());
    let image = photo_bytes("coffee.png");
    for round in 0..4 {
        let idem_key = format!("order-{round}");
        let barrier = std::sync::Barrier::new(2);
        let answers: Vec<Answer> = std::thread::scope(|s| {
            let handles: Vec<_> = [a.addr, b.addr]
                .into_iter()
                .map(|addr| {
                    let (barrier, image, key, idem_key) = (&barrier, &image, &a.key, &idem_key);
                    s.spawn(move || {
                        let agent = agent();
                        barrier.wait();
                        detect(&agent, addr, key, image, &[("idempotency-key", idem_key)]).expect("answered")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(answers.iter().all(|r| r.status == 200), "round {round}");
        assert_eq!(answers.iter().filter(|r| r.replayed).count(), 1, "round {round}: one ran, one replayed");
        assert_eq!(answers[0].body, answers[1].body, "round {round}: the replay is the same answer");
        let rows = pg
            .psql(
                "idem",
                &format!(
                    "SELECT replay, tokens > 0 FROM invocations WHERE idempotency_key = '{idem_key}' ORDER BY seq"
                ),
            )
            .unwrap();
        assert_eq!(rows, "f|t\nt|f", "round {round}: one billed run, then one free replay");
    }
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for line in pg.psql("idem", "SELECT idempotency_key FROM invocations WHERE NOT replay").unwrap().lines() {
        *by_key.entry(line.to_owned()).or_default() += 1;
    }
    assert!(by_key.values().all(|n| *n == 1), "each key executed once: {by_key:?}");
    let (ok, report) = verify(&a.data_dir, &url);
    assert!(ok, "{report}");
}

/// PostgreSQL going away is a clear `503 ledger_unavailable` (nothing charged, the host up),
/// and the host serves again, on fresh connections, once it is back.
#[test]
fn a_database_outage_is_a_503_and_the_host_recovers() {
    let mut pg = PostgresServer::start().expect("start postgres");
    let url = pg.create_database("outage").unwrap();
    let env = [(URL_VAR, url.as_str())];
    let component = yolo_edge_tests::component().display().to_string();
    let models = yolo_edge_tests::models().display().to_string();
    let args = ["serve", "--no-result-cache", "--component", &component, "--models", &models];
    let host = Host::start_command_env(&args, &fresh_data_dir(), &env).expect("start a host");
    let image = photo_bytes("coffee.png");
    assert_eq!(host.detect_raw("image/png", &image, "").status, 200);

    pg.stop();
    let r = host.detect_raw("image/png", &image, "");
    r.assert_error(503, "ledger_unavailable");
    assert!(r.header("retry-after").is_some());
    host.get("/v1/usage").assert_error(503, "ledger_unavailable");
    assert!(host.healthy(), "the host itself stays up");

    pg.resume().expect("restart postgres");
    let again = host.detect_raw("image/png", &image, "");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(pg.psql("outage", "SELECT count(*) FROM invocations").unwrap(), "2", "two answers, two rows");
    let (ok, report) = verify(&host.data_dir, &url);
    assert!(ok, "{report}");
}
