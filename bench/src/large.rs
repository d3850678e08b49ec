//! A large photograph, one client: yolo-edge with each JPEG decode mode against the Python
//! in-process pipeline, request by request.

use std::time::Duration;

use serde_json::Value;
use yolo_edge_tests::{Host, photo};

use crate::common::{Image, guest_time_ms, header_median, median, ms, step, target};
use crate::stats::{Summary, summarize};
use crate::{http, python};

/// The large photograph of [`large_photo`].
pub const XLARGE: Image = Image { name: "xlarge.jpg", content_type: "image/jpeg", what: "2560x1440 JPEG" };

/// The decode modes compared on [`XLARGE`], `auto` (the default) first.
pub const DECODE_MODES: [&str; 3] = ["auto", "fast", "full"];

/// What one decode mode measured.
pub struct Mode {
    /// Client-observed latency.
    pub latency: Summary,
    /// Guest time (wall − inference), median, ms.
    pub guest_ms: f64,
    /// Fuel, median.
    pub fuel: f64,
    /// The first answer's first detection: class and confidence.
    pub first_detection: String,
}

/// [`large_photo`]'s numbers.
pub struct LargePhoto {
    /// yolo-edge, by mode in [`DECODE_MODES`] order.
    pub modes: Vec<Mode>,
    /// Python in-process.
    pub python: Summary,
}

/// One client on [`XLARGE`]: the host with each of [`DECODE_MODES`] and the Python in-process
/// pipeline (which decodes the whole image, as `Image.open` does), request by request.
/// Stops the Python worker when done: nothing after this runs it.
pub fn large_photo(
    reps: usize,
    host: &Host,
    agent: &ureq::Agent,
    mut python: python::Worker,
) -> anyhow::Result<LargePhoto> {
    step("a large photograph: yolo-edge's three decode modes and Python in-process, interleaved");
    let targets: Vec<http::Target> = DECODE_MODES
        .iter()
        .map(|mode| target(host.url(&format!("/detect?decode={mode}")), Some(&host.key), &XLARGE))
        .collect();
    let path = photo(XLARGE.name);
    let mut answers: Vec<Vec<http::Answer>> = targets.iter().map(|_| Vec::new()).collect();
    let mut py = Vec::new();
    for rep in 0..reps + 3 {
        for (t, into) in targets.iter().zip(&mut answers) {
            let a = http::send(agent, t)?;
            anyhow::ensure!(a.status == 200, "the host failed on {}: {}", XLARGE.name, a.body);
            if rep >= 3 {
                into.push(a);
            }
        }
        // onnxruntime's workers spin for a while after a run (see `one_client::interleaved`).
        std::thread::sleep(Duration::from_millis(60));
        let ms = python.run(&path)?;
        std::thread::sleep(Duration::from_millis(60));
        if rep >= 3 {
            py.push(ms);
        }
    }
    drop(python);
    Ok(LargePhoto::of(&answers, &py))
}

impl LargePhoto {
    /// From the host's answers by mode and Python's latencies (ms).
    fn of(answers: &[Vec<http::Answer>], python: &[f64]) -> Self {
        let modes = answers
            .iter()
            .map(|a| Mode {
                latency: ms(a),
                guest_ms: median(a.iter().map(guest_time_ms)),
                fuel: header_median(a, "x-fuel"),
                first_detection: first_detection(a),
            })
            .collect();
        Self { modes, python: summarize(python) }
    }
}

/// The first answer's first detection, as the table shows it.
fn first_detection(answers: &[http::Answer]) -> String {
    let v: Value = serde_json::from_str(&answers[0].body).unwrap_or(Value::Null);
    let d = &v["detections"][0];
    format!("{} {:.3}", d["class_name"].as_str().unwrap_or("none"), d["confidence"].as_f64().unwrap_or(0.0))
}
