//! Usage reports over the ledger: per-day totals for `GET /v1/usage` and
//! `yolo-edge usage`, as JSON, a table, CSV, or CloudEvents JSON lines (one event per
//! invocation, `id` = invocation id, so a collector deduplicates re-sent events).

use rusqlite::params;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};

use crate::db::Db;
use crate::ledger::LedgerRow;

/// A time range `[from_us, to_us)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Start, µs since the epoch, inclusive.
    pub from_us: i64,
    /// End, µs since the epoch, exclusive.
    pub to_us: i64,
}

fn parse_bound(text: &str, end: bool) -> Result<i64, String> {
    let us = |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX);
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(us(t));
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    match Date::parse(text, &date_format) {
        // A date as `to` includes the whole day.
        Ok(d) if end => Ok(us(d.next_day().unwrap_or(d).with_time(Time::MIDNIGHT).assume_utc())),
        Ok(d) => Ok(us(d.with_time(Time::MIDNIGHT).assume_utc())),
        Err(_) => Err(format!("{text:?} is neither a date (2026-11-24) nor an RFC 3339 time (2026-11-24T10:00:00Z)")),
    }
}

impl Period {
    /// Parse `from` / `to` (dates `YYYY-MM-DD`, a date as `to` included whole, or RFC 3339
    /// times); missing bounds are open.
    pub fn parse(from: Option<&str>, to: Option<&str>) -> Result<Self, String> {
        let from_us = from.filter(|s| !s.is_empty()).map(|f| parse_bound(f, false)).transpose()?.unwrap_or(0);
        let to_us = to.filter(|s| !s.is_empty()).map(|t| parse_bound(t, true)).transpose()?.unwrap_or(i64::MAX);
        if to_us <= from_us {
            return Err("`to` must be after `from`".to_owned());
        }
        Ok(Self { from_us, to_us })
    }
}

/// RFC 3339 text of a µs timestamp.
pub fn rfc3339(us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Totals over some invocations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Invocations (replays included).
    pub calls: i64,
    /// Tokens charged.
    pub tokens: i64,
    /// Guest fuel.
    pub fuel: i64,
    /// Wall time, µs.
    pub wall_us: i64,
    /// Inference time, µs.
    pub nn_us: i64,
    /// Decoded pixels.
    pub pixels: i64,
    /// Invocations answered with a 5xx status.
    pub failed: i64,
    /// Idempotent replays.
    pub replays: i64,
    /// Cache hits.
    pub cache_hits: i64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.calls += o.calls;
        self.tokens += o.tokens;
        self.fuel += o.fuel;
        self.wall_us += o.wall_us;
        self.nn_us += o.nn_us;
        self.pixels += o.pixels;
        self.failed += o.failed;
        self.replays += o.replays;
        self.cache_hits += o.cache_hits;
    }
}

/// One UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Its totals.
    #[serde(flatten)]
    pub totals: Totals,
}

/// `{"tenant", "from", "to", "total", "days"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// The tenant.
    pub tenant: String,
    /// Start of the period (RFC 3339), if bounded.
    pub from: Option<String>,
    /// End of the period, exclusive (RFC 3339), if bounded.
    pub to: Option<String>,
    /// Totals over the period.
    pub total: Totals,
    /// Per-day totals, oldest first.
    pub days: Vec<Day>,
}

impl UsageReport {
    /// The report of `tenant` over `period` from its per-day totals (oldest first).
    pub fn new(tenant: &str, period: Period, days: Vec<Day>) -> Self {
        let mut total = Totals::default();
        for d in &days {
            total.add(&d.totals);
        }
        Self {
            tenant: tenant.to_owned(),
            from: (period.from_us > 0).then(|| rfc3339(period.from_us)),
            to: (period.to_us < i64::MAX).then(|| rfc3339(period.to_us)),
            total,
            days,
        }
    }
}

impl Db {
    /// `tenant`'s usage in `period`.
    pub fn usage(&self, tenant: &str, period: Period) -> anyhow::Result<UsageReport> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT date(ts_us / 1000000, 'unixepoch') AS day, COUNT(*), SUM(tokens), SUM(fuel), SUM(wall_us),
                    SUM(nn_us), SUM(pixels), SUM(status >= 500), SUM(replay), SUM(cache_hit)
             FROM invocations WHERE tenant = ?1 AND ts_us >= ?2 AND ts_us < ?3
             GROUP BY day ORDER BY day",
        )?;
        let days = stmt
            .query_map(params![tenant, period.from_us, period.to_us], |r| {
                Ok(Day {
                    date: r.get(0)?,
                    totals: Totals {
                        calls: r.get(1)?,
                        tokens: r.get(2)?,
                        fuel: r.get(3)?,
                        wall_us: r.get(4)?,
                        nn_us: r.get(5)?,
                        pixels: r.get(6)?,
                        failed: r.get(7)?,
                        replays: r.get(8)?,
                        cache_hits: r.get(9)?,
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UsageReport::new(tenant, period, days))
    }
}

const COLUMNS: [&str; 10] =
    ["date", "calls", "tokens", "fuel", "wall_us", "nn_us", "pixels", "failed", "replays", "cache_hits"];

fn cells(label: &str, t: &Totals) -> [String; 10] {
    [
        label.to_owned(),
        t.calls.to_string(),
        t.tokens.to_string(),
        t.fuel.to_string(),
        t.wall_us.to_string(),
        t.nn_us.to_string(),
        t.pixels.to_string(),
        t.failed.to_string(),
        t.replays.to_string(),
        t.cache_hits.to_string(),
    ]
}

impl UsageReport {
    /// A fixed-width table with a total line; `money` formats tokens in the currency.
    pub fn table(&self, money: impl Fn(i64) -> String) -> String {
        let mut rows: Vec<[String; 10]> = vec![COLUMNS.map(str::to_owned)];
        rows.extend(self.days.iter().map(|d| cells(&d.date, &d.totals)));
        rows.push(cells("total", &self.total));
        let widths: Vec<usize> = (0..10).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
        let mut out = format!("tenant {}\n", self.tenant);
        for row in &rows {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(
                    |(i, c)| {
                        if i == 0 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) }
                    },
                )
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out.push_str(&format!("total cost: {}\n", money(self.total.tokens)));
        out
    }

    /// CSV: a header, one line per day (no total line).
    pub fn csv(&self) -> String {
        let mut out = format!("tenant,{}\n", COLUMNS.join(","));
        for d in &self.days {
            out.push_str(&format!("{},{}\n", self.tenant, cells(&d.date, &d.totals).join(",")));
        }
        out
    }
}

/// One CloudEvents 1.0 event (JSON) for a ledger row.
pub fn cloudevent(row: &LedgerRow) -> serde_json::Value {
    let e = &row.entry;
    serde_json::json!({
        "specversion": "1.0",
        "id": e.id,
        "source": "yolo-edge",
        "type": "com.yolo-edge.invocation",
        "subject": e.tenant,
        "time": rfc3339(e.ts_us),
        "datacontenttype": "application/json",
        "data": {
            "tenant": e.tenant, "key_id": e.key_id, "route": e.route, "status": e.status, "outcome": e.outcome,
            "tokens": e.tokens, "fuel": e.fuel, "wall_us": e.wall_us, "nn_us": e.nn_us,
            "peak_memory": e.peak_memory, "pixels": e.pixels, "cache_hit": e.cache_hit, "replay": e.replay,
            "ledger_seq": row.seq, "ledger_hash": row.hash,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        let p = Period::parse(Some("2026-11-24"), Some("2026-11-24")).unwrap();
        assert_eq!(p.to_us - p.from_us, 86_400_000_000, "a date as `to` includes the day");
        assert_eq!(rfc3339(p.from_us), "2026-11-24T00:00:00Z");
        let p = Period::parse(Some("2026-11-24T10:00:00Z"), None).unwrap();
        assert_eq!(rfc3339(p.from_us), "2026-11-24T10:00:00Z");
        assert_eq!(p.to_us, i64::MAX);
        assert_eq!(Period::parse(None, None).unwrap(), Period { from_us: 0, to_us: i64::MAX });
        assert!(Period::parse(Some("yesterday"), None).is_err());
        assert!(Period::parse(Some("2026-11-25"), Some("2026-11-24")).is_err());
    }

    #[test]
    fn formats() {
        let day = Totals { calls: 2, tokens: 2002, ..Totals::default() };
        let report = UsageReport {
            tenant: "acme".into(),
            from: None,
            to: None,
            total: day.clone(),
            days: vec![Day { date: "2026-11-24".into(), totals: day }],
        };
        let csv = report.csv();
        assert_eq!(csv.lines().count(), 2);
        assert!(csv.lines().nth(1).unwrap().starts_with("acme,2026-11-24,2,2002,"));
        let table = report.table(|t| format!("{t} tokens"));
        assert!(table.contains("total cost: 2002 tokens"));
        assert!(table.lines().any(|l| l.starts_with("total")));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["total"]["calls"], 2);
        assert_eq!(json["days"][0]["date"], "2026-11-24");
    }
}
