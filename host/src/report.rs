//! Usage as people and collectors read it: the `yolo-edge usage` table and CSV and
//! CloudEvents JSON lines, one event per invocation (`id` = the
//! invocation id, so a collector deduplicates re-sent events).

use yolo_edge_ledger::{LedgerRow, Totals, UsageReport, rfc3339};

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

/// A fixed-width table of `report` with a total line; `money` formats tokens in the currency.
pub fn table(report: &UsageReport, money: impl Fn(i64) -> String) -> String {
    let mut rows: Vec<[String; 10]> = vec![COLUMNS.map(str::to_owned)];
    rows.extend(report.days.iter().map(|d| cells(&d.date, &d.totals)));
    rows.push(cells("total", &report.total));
    let widths: Vec<usize> = (0..10).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = format!("tenant {}\n", report.tenant);
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!("total cost: {}\n", money(report.total.tokens)));
    out
}

/// `report` as CSV: a header, one line per day (no total line). Tenant names and dates hold
/// no commas or quotes, so no field needs quoting.
pub fn csv(report: &UsageReport) -> String {
    let mut out = format!("tenant,{}\n", COLUMNS.join(","));
    for d in &report.days {
        out.push_str(&format!("{},{}\n", report.tenant, cells(&d.date, &d.totals).join(",")));
    }
    out
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
    use yolo_edge_ledger::Day;

    use super::*;

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
        let csv = csv(&report);
        assert_eq!(csv.lines().count(), 2);
        assert!(csv.lines().nth(1).unwrap().starts_with("acme,2026-11-24,2,2002,"));
        let table = table(&report, |t| format!("{t} tokens"));
        assert!(table.contains("total cost: 2002 tokens"));
        assert!(table.lines().any(|l| l.starts_with("total")));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["total"]["calls"], 2);
        assert_eq!(json["days"][0]["date"], "2026-11-24");
    }
}
