//! The cost of the shared ledger: one host on its SQLite file, one host on PostgreSQL, and
//! two hosts on one PostgreSQL (clients spread over both, as behind a load balancer), all on
//! this machine, with a real `postgres` from Debian's package.
//!
//! Two loads: computed answers (`Cache-Control: no-cache`, so every request runs the model)
//! and result-cache hits (no model run: each answer is little more than its ledger commit,
//! so this row shows what the ledger itself sustains).

use std::time::Duration;

use serde_json::{Value, json};
use yolo_edge_tests::{Host, PostgresServer, fresh_data_dir};

use crate::common::{IMAGES, ROUNDS, Settings, latency_json, ms, ratio, step, target};
use crate::http;
use crate::stats::Summary;

/// The three set-ups, in table order.
const SETUPS: [&str; 3] = ["1 host, SQLite", "1 host, PostgreSQL", "2 hosts, one PostgreSQL"];

/// Clients of every throughput measurement here.
const CLIENTS: usize = 8;

/// What was measured.
pub struct SharedLedger {
    /// Computed answers per second, by set-up.
    computed: [f64; 3],
    /// Cache hits per second, by set-up.
    hits: [f64; 3],
    /// Failed requests over every run.
    failed: usize,
    /// One client, cache hits, interleaved: SQLite, then PostgreSQL.
    hit_latency: [Summary; 2],
}

/// Measure it.
pub fn shared_ledger(cfg: &Settings) -> anyhow::Result<SharedLedger> {
    step("shared ledger: one host on SQLite, one on PostgreSQL, two on one PostgreSQL");
    let pg = PostgresServer::start()?;
    let url = pg.create_database("bench")?;
    let env = [("YOLO_EDGE_DATABASE_URL", url.as_str())];
    let component = yolo_edge_tests::component().display().to_string();
    let models = yolo_edge_tests::models().display().to_string();
    let args =
        ["serve", "--component", &component, "--models", &models, "--tenant-rps", "0", "--tenant-max-concurrent", "0"];
    let sqlite = Host::start_command(&args, &fresh_data_dir())?;
    let pg_a = Host::start_command_env(&args, &fresh_data_dir(), &env)?;
    let pg_b = Host::start_command_env(&args, &fresh_data_dir(), &env)?;

    let image = &IMAGES[0];
    let computed = |h: &Host| {
        let mut t = target(h.url("/detect"), Some(&h.key), image);
        t.headers.push(("cache-control".to_owned(), "no-cache".to_owned()));
        t
    };
    let hit = |h: &Host| target(h.url("/detect"), Some(&h.key), image);
    let setups =
        |make: &dyn Fn(&Host) -> http::Target| [vec![make(&sqlite)], vec![make(&pg_a)], vec![make(&pg_a), make(&pg_b)]];
    let window = (cfg.seconds / ROUNDS).max(Duration::from_secs(3));
    let mut failed = 0;
    let mut measure = |targets: [Vec<http::Target>; 3]| {
        for t in &targets {
            // Unmeasured: the first requests, and each host's cache entry for the hit runs.
            http::throughput_spread(t, CLIENTS, Duration::from_secs(1));
        }
        let mut rps = [0.0; 3];
        for _ in 0..ROUNDS {
            for (sum, t) in rps.iter_mut().zip(&targets) {
                let (r, bad) = http::throughput_spread(t, CLIENTS, window);
                *sum += r / f64::from(ROUNDS);
                failed += bad;
            }
        }
        rps
    };
    let computed_rps = measure(setups(&computed));
    let hits_rps = measure(setups(&hit));

    let (on_sqlite, on_pg) = (hit(&sqlite), hit(&pg_a));
    let hits = http::alternating(&[&on_sqlite, &on_pg], 0, cfg.reps)?;
    let (a, b) = (&hits[0], &hits[1]);
    anyhow::ensure!(hits.iter().flatten().all(|r| r.status == 200), "a cache hit failed");

    // The ledger after all that still verifies, whichever host wrote each row.
    let (ok, out, err) = yolo_edge_tests::cli_env(&pg_a.data_dir, &env, &["ledger", "verify"]);
    anyhow::ensure!(ok, "the shared ledger does not verify after the benchmark: {out}{err}");
    Ok(SharedLedger { computed: computed_rps, hits: hits_rps, failed, hit_latency: [ms(a), ms(b)] })
}

impl SharedLedger {
    /// The BENCHMARKS.md section.
    pub fn markdown(&self) -> String {
        let row = |what: &str, r: &[f64; 3]| {
            format!(
                "| {what} | {:.1} | {:.1} | {:.1} | {:.2}× | {:.2}× |\n",
                r[0],
                r[1],
                r[2],
                ratio(r[1], r[0]),
                ratio(r[2], r[0])
            )
        };
        let mut md = format!(
            "\n## Several hosts on one PostgreSQL ledger ({}, {CLIENTS} clients, requests/s; {ROUNDS} alternating rounds)\n\n\
             | load | {} | {} | {} | PostgreSQL ÷ SQLite, 1 host | 2 hosts ÷ 1 host on SQLite |\n|---|---|---|---|---|---|\n",
            IMAGES[0].name, SETUPS[0], SETUPS[1], SETUPS[2]
        );
        md.push_str(&row("computed answers (`Cache-Control: no-cache`)", &self.computed));
        md.push_str(&row("result-cache hits (each still commits its ledger row)", &self.hits));
        md.push_str(&format!(
            "\nOne client, cache hits, interleaved: p50 {:.2} ms on SQLite, {:.2} ms on PostgreSQL (the \
             difference is the ledger commit over loopback: row, chain head, charge, in one transaction). \
             {} requests failed. Every host here shares this machine's cores, so two hosts cannot compute \
             more than one: the rows show what the shared ledger costs, not how a fleet scales; on separate \
             machines computed throughput adds up per host until the ledger's own ceiling (the cache-hit row) \
             is reached. PostgreSQL runs with its defaults (fsync on), SQLite with `synchronous = FULL`.\n",
            self.hit_latency[0].p50, self.hit_latency[1].p50, self.failed
        ));
        md
    }

    /// The BENCHMARKS.json entry.
    pub fn json(&self) -> Value {
        json!({
            "setups": SETUPS,
            "clients": CLIENTS,
            "computed_rps": self.computed,
            "cache_hit_rps": self.hits,
            "failed": self.failed,
            "cache_hit_latency": {"sqlite": latency_json(&self.hit_latency[0]), "postgres": latency_json(&self.hit_latency[1])},
        })
    }
}
