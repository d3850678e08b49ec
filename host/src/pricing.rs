//! From measured usage to billable tokens, in integers only.
//!
//! ```text
//! tokens = ceil( per_call                       (per_cache_hit instead, for a cache hit)
//!              + per_started_ms_wall      × ⌈wall µs / 1000⌉
//!              + per_started_ms_inference × ⌈inference µs / 1000⌉
//!              + per_million_fuel         × fuel / 10^6
//!              + per_gb_second            × peak memory bytes / 2^30 × wall µs / 10^6
//!              + per_megapixel            × pixels / 10^6 )
//! ```
//!
//! Every term is an exact rational number; the sum is computed over one common
//! denominator in 128-bit integers and rounded up once, at the end. Idempotent replays cost
//! nothing.

use std::fmt;

use serde::Deserialize;

use crate::metering::Usage;

/// Prices, in tokens per unit. Integers: money never goes through floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriceSheet {
    /// Per invocation.
    pub per_call: u64,
    /// Per invocation answered from the cache (instead of `per_call`).
    pub per_cache_hit: u64,
    /// Per started millisecond of wall time (rounded up, as Lambda does).
    pub per_started_ms_wall: u64,
    /// Per started millisecond inside inference.
    pub per_started_ms_inference: u64,
    /// Per million units of guest fuel.
    pub per_million_fuel: u64,
    /// Per GiB-second of peak linear memory × wall time (1 GiB = 1024 MiB, as Lambda counts).
    pub per_gb_second: u64,
    /// Per megapixel (10^6 pixels) of decoded input.
    pub per_megapixel: u64,
}

impl Default for PriceSheet {
    /// The seed's example prices with 1 token = 1 µ¥: 0.001 ¥ a call (1000 tokens) and
    /// 0.000008 ¥ per MB·s (8 tokens per MiB·s = 8192 per GiB·s).
    fn default() -> Self {
        Self {
            per_call: 1000,
            per_cache_hit: 100,
            per_started_ms_wall: 0,
            per_started_ms_inference: 0,
            per_million_fuel: 0,
            per_gb_second: 8192,
            per_megapixel: 0,
        }
    }
}

/// What the invocation was, for pricing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Executed: priced by its usage.
    Executed,
    /// Answered from the cache.
    CacheHit,
    /// An idempotent replay of an earlier answer: free.
    Replay,
}

const US_PER_MS: u128 = 1_000;
const US_PER_S: u128 = 1_000_000;
const GIB: u128 = 1 << 30;
const MILLION: u128 = 1_000_000;
/// Common denominator of all terms: fuel and pixels divide by 10^6, GB·s by 2^30 × 10^6.
const DENOMINATOR: u128 = GIB * US_PER_S;

impl PriceSheet {
    /// The tokens an invocation costs.
    pub fn tokens(&self, usage: &Usage, charge: Charge) -> u64 {
        let per_call = match charge {
            Charge::Replay => return 0,
            Charge::CacheHit => self.per_cache_hit,
            Charge::Executed => self.per_call,
        };
        let u = |v: u64| u128::from(v);
        let started_ms = |us: u128| us.div_ceil(US_PER_MS);
        let wall_us = usage.wall.as_micros();
        let nn_us = usage.inference.as_micros();
        let numerator = u(per_call) * DENOMINATOR
            + u(self.per_started_ms_wall) * started_ms(wall_us) * DENOMINATOR
            + u(self.per_started_ms_inference) * started_ms(nn_us) * DENOMINATOR
            + u(self.per_million_fuel) * u(usage.fuel) * (DENOMINATOR / MILLION)
            + u(self.per_gb_second) * u(usage.peak_memory) * wall_us
            + u(self.per_megapixel) * u(usage.pixels) * (DENOMINATOR / MILLION);
        u64::try_from(numerator.div_ceil(DENOMINATOR)).unwrap_or(u64::MAX)
    }
}

/// What one token is worth, as an exact decimal (`"0.000001"`) in a currency.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenValue {
    /// ISO currency code or any label.
    pub currency: String,
    /// The value of one token, a decimal string.
    pub value: String,
}

impl Default for TokenValue {
    /// 1 token = 0.000001 CNY (1 µ¥).
    fn default() -> Self {
        Self { currency: "CNY".to_owned(), value: "0.000001".to_owned() }
    }
}

impl TokenValue {
    fn decimal(&self) -> anyhow::Result<Decimal> {
        Decimal::parse(&self.value)
    }

    /// Check that `value` is a decimal number.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.decimal().map(|_| ())
    }

    /// `tokens` in the currency, exactly (e.g. `"0.005916"`).
    pub fn format(&self, tokens: i64) -> String {
        match self.decimal() {
            Ok(d) => d.times(tokens).to_string(),
            Err(_) => "?".to_owned(),
        }
    }
}

/// A non-negative exact decimal: `digits / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    digits: i128,
    scale: u32,
}

impl Decimal {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let t = text.trim();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let valid = !(int.is_empty() && frac.is_empty())
            && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
            && frac.len() <= 18;
        if !valid {
            anyhow::bail!("token value {text:?} is not a decimal number like \"0.000001\"");
        }
        let digits =
            format!("{int}{frac}").parse::<i128>().map_err(|_| anyhow::anyhow!("token value {text:?} is too large"))?;
        Ok(Self { digits, scale: frac.len() as u32 })
    }

    fn times(self, n: i64) -> Self {
        Self { digits: self.digits.saturating_mul(i128::from(n)), scale: self.scale }
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.digits < 0 { "-" } else { "" };
        let abs = self.digits.unsigned_abs().to_string();
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{abs}");
        }
        let padded = format!("{abs:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The seed's worked example: 0.001 ¥ per call + 2048 MB × 0.3 s × 0.000008 ¥ per MB·s
    /// = 0.0059152 ¥ per image; with 1 token = 1 µ¥, rounded up: 5916 tokens.
    #[test]
    fn the_seed_example() {
        let usage = Usage { wall: Duration::from_millis(300), peak_memory: 2048 << 20, ..Usage::default() };
        let tokens = PriceSheet::default().tokens(&usage, Charge::Executed);
        assert_eq!(tokens, 5916);
        // And exactly 0.0059152 ¥ before rounding: 5915.2 tokens.
        let value = TokenValue::default();
        assert_eq!(value.format(5916), "0.005916");
    }

    #[test]
    fn every_term_counts_and_rounds_up_once() {
        let sheet = PriceSheet {
            per_call: 10,
            per_cache_hit: 1,
            per_started_ms_wall: 2,
            per_started_ms_inference: 3,
            per_million_fuel: 5,
            per_gb_second: 0,
            per_megapixel: 7,
        };
        let usage = Usage {
            wall: Duration::from_micros(2_001),    // 3 started ms → 6
            inference: Duration::from_micros(999), // 1 started ms → 3
            fuel: 1_500_000,                       // 7.5
            pixels: 500_000,                       // 3.5
            ..Usage::default()
        };
        // 10 + 6 + 3 + 7.5 + 3.5 = 30 exactly.
        assert_eq!(sheet.tokens(&usage, Charge::Executed), 30);
        let usage = Usage { fuel: 1_500_001, ..usage };
        assert_eq!(sheet.tokens(&usage, Charge::Executed), 31, "a fraction of a token rounds up");
        assert_eq!(sheet.tokens(&usage, Charge::CacheHit), 22);
        assert_eq!(sheet.tokens(&usage, Charge::Replay), 0);
        assert_eq!(sheet.tokens(&Usage::default(), Charge::Executed), 10);
    }

    #[test]
    fn huge_usage_does_not_overflow() {
        let usage = Usage {
            wall: Duration::from_secs(3600),
            peak_memory: u64::from(u32::MAX),
            fuel: u64::MAX,
            pixels: u64::MAX,
            ..Usage::default()
        };
        let t = PriceSheet { per_million_fuel: 1_000_000, ..PriceSheet::default() }.tokens(&usage, Charge::Executed);
        assert!(t > 1 << 40);
    }

    #[test]
    fn decimals() {
        let v = |s: &str| TokenValue { currency: "X".into(), value: s.into() };
        assert_eq!(v("0.000001").format(5916), "0.005916");
        assert_eq!(v("0.5").format(3), "1.5");
        assert_eq!(v("2").format(3), "6");
        assert_eq!(v("0.000001").format(-12), "-0.000012");
        assert!(v("1e-6").validate().is_err());
        assert!(v("").validate().is_err());
    }
}
