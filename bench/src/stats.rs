//! Latency samples and their summary, and the closed-loop driver behind every throughput.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// `workers` threads, each with its own `state`, call `job` back to back for `duration`.
/// Returns successful calls per second (over the time until the last call in flight ends)
/// and the number of failed calls.
pub fn closed_loop<S>(
    workers: usize,
    duration: Duration,
    state: impl Fn() -> S + Sync,
    job: impl Fn(&S) -> bool + Sync,
) -> (f64, usize) {
    let ok = AtomicUsize::new(0);
    let bad = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let state = state();
                while !stop.load(Ordering::Relaxed) {
                    let counter = if job(&state) { &ok } else { &bad };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    (ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(), bad.load(Ordering::Relaxed))
}

/// Median, p99 and mean of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Mean.
    pub mean: f64,
}

/// Summarise `samples` (ms).
pub fn summarize(samples: &[f64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = |q: f64| s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Summary { n: s.len(), p50: rank(0.5), p99: rank(0.99), mean: s.iter().sum::<f64>() / s.len() as f64 }
}

/// What `on` costs over `off`, from samples taken in rounds (`on[k]` and `off[k]` in the same
/// round): the median of the rounds' `on[k] / off[k]`, minus one. Pairing each sample with its
/// neighbour cancels the machine's slow swings, which move both sides of a round together,
/// where two medians subtracted carry each side's swings; the median drops the rounds that one
/// outlier spoils. `None` without a pair.
pub fn paired_overhead(on: &[f64], off: &[f64]) -> Option<f64> {
    let mut ratios: Vec<f64> = on.iter().zip(off).filter(|&(_, &b)| b > 0.0).map(|(&a, &b)| a / b).collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    let median = if ratios.len() % 2 == 1 { ratios[mid] } else { (ratios[mid - 1] + ratios[mid]) / 2.0 };
    Some(median - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&v);
        assert_eq!((s.n, s.p50, s.p99), (100, 50.0, 99.0));
        assert_eq!(s.mean, 50.5);
        assert_eq!(summarize(&[]).n, 0);
    }

    /// A 2 % cost in every round but one spoiled round, while the machine's speed swings
    /// tenfold between rounds: the pairs say 2 %; the medians of each side (102 ÷ 10) would not.
    #[test]
    fn paired_overhead_follows_the_rounds() {
        let (on, off) = ([102.0, 10.2, 200.0], [100.0, 10.0, 10.0]);
        let got = paired_overhead(&on, &off).unwrap();
        assert!((got - 0.02).abs() < 1e-9, "{got}");
        assert!(summarize(&on).p50 / summarize(&off).p50 > 10.0);
        assert_eq!(
            paired_overhead(&on[..2], &off),
            paired_overhead(&on[..2], &off[..2]),
            "unpaired rounds are left out"
        );
        assert_eq!(paired_overhead(&[], &off), None);
        assert_eq!(paired_overhead(&[1.0, 3.0], &[1.0, 2.0]), Some(0.25));
    }
}
