//! Usage over the ledger: a [`Period`], and per-day totals ([`UsageReport`]) for
//! `GET /v1/usage` and `yolo-edge usage` (rendered as a table, CSV or CloudEvents by the host).

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};

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
}
