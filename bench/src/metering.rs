//! The cost of fuel metering: the same requests to yolo-edge with fuel on and with `--no-fuel`,
//! interleaved, judged on whole requests (paired by round) and on guest time.

use yolo_edge_tests::Host;

use crate::common::{IMAGES, Settings, guest_time_ms, latencies, ms, step, target};
use crate::http;
use crate::stats::{Summary, paired_overhead, summarize};

/// Fuel on against fuel off, one image, in alternating rounds.
pub struct Metering {
    /// Client latency, fuel on.
    pub on: Summary,
    /// Client latency, fuel off.
    pub off: Summary,
    /// Guest time (wall − inference), fuel on.
    pub guest_on: Summary,
    /// Guest time, fuel off.
    pub guest_off: Summary,
    /// What fuel costs whole requests: [`paired_overhead`] of the rounds' latencies.
    pub paired: f64,
}

impl Metering {
    /// What fuel costs from guest time: the guest p50s' difference over the fuel-off p50.
    pub fn guest_share(&self) -> f64 {
        if self.off.p50 > 0.0 { (self.guest_on.p50 - self.guest_off.p50) / self.off.p50 } else { f64::NAN }
    }
}

/// [`Metering`] of every image in [`IMAGES`] order; stops `no_fuel` when done.
pub fn metering(cfg: &Settings, host: &Host, no_fuel: Host) -> anyhow::Result<Vec<Metering>> {
    step("metering cost: fuel on vs off, interleaved");
    let mut metering = Vec::new();
    for image in &IMAGES {
        let on = target(host.url("/detect"), Some(&host.key), image);
        let off = target(no_fuel.url("/detect"), Some(&no_fuel.key), image);
        // Twice the usual rounds: this row decides a target and is a few percent of 50 ms.
        let answers = http::alternating(&[&on, &off], 2, 2 * cfg.reps)?;
        let guest = |answers: &[http::Answer]| summarize(&answers.iter().map(guest_time_ms).collect::<Vec<_>>());
        metering.push(Metering {
            on: ms(&answers[0]),
            off: ms(&answers[1]),
            guest_on: guest(&answers[0]),
            guest_off: guest(&answers[1]),
            paired: paired_overhead(&latencies(&answers[0]), &latencies(&answers[1])).unwrap_or(f64::NAN),
        });
    }
    drop(no_fuel);
    Ok(metering)
}
