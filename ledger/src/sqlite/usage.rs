//! Usage's SQL: per-day totals of a tenant's rows.

use rusqlite::params;

use super::Db;
use crate::usage::{Day, Period, Totals, UsageReport};

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
