//! The independent reference: `tests/reference/reference.py` (Pillow + the `onnxruntime`
//! package) and how our detections are compared with its own.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{models, photo, repo};

/// Reference detections for `images` from `tests/reference/reference.py`, keyed by file name.
pub fn reference(images: &[&str], args: &[&str]) -> Value {
    let python = repo().join(".cache/venv/bin/python");
    let out = Command::new(&python)
        .arg(repo().join("tests/reference/reference.py"))
        .arg("--model-dir")
        .arg(models().join("yolov3-tiny"))
        .args(args)
        .args(images.iter().map(|i| photo(i)))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): run `cargo xtask test`", python.display()));
    assert!(out.status.success(), "reference.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let all: Value = serde_json::from_slice(&out.stdout).expect("reference JSON");
    let mut by_name = serde_json::Map::new();
    for (path, v) in all.as_object().expect("object") {
        let name = Path::new(path).file_name().and_then(|n| n.to_str()).expect("name").to_owned();
        by_name.insert(name, v.clone());
    }
    Value::Object(by_name)
}

/// How close an answer must be to the reference.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Largest confidence difference.
    pub conf: f64,
    /// Largest difference of a box coordinate, in original image pixels.
    pub px: f64,
}

impl Tolerance {
    /// The contract for lossless images (PNG, WebP): decoded pixels are identical to
    /// Pillow's, so answers agree to 0.01 confidence and 1 px.
    pub const LOSSLESS: Self = Self { conf: 0.01, px: 1.0 };

    /// For JPEG: the `image` crate's decoder (zune-jpeg) and Pillow's libjpeg-turbo upsample
    /// 4:2:0 chroma differently (up to 4 levels on ~15% of the pixels of our photographs),
    /// so boxes are held to 1 px of the model's input grid (416 px), i.e. 1 px scaled to the
    /// photograph; confidences keep the 0.01 bound.
    pub fn jpeg(width: f64, height: f64, input: f64) -> Self {
        Self { conf: 0.01, px: (width.max(height) / input).max(1.0) }
    }
}

fn iou(a: &Value, b: &Value) -> f64 {
    let f = |v: &Value, k: usize| v["bbox"][k].as_f64().unwrap_or(0.0);
    let iw = (f(a, 2).min(f(b, 2)) - f(a, 0).max(f(b, 0))).max(0.0);
    let ih = (f(a, 3).min(f(b, 3)) - f(a, 1).max(f(b, 1))).max(0.0);
    let area = |v: &Value| (f(v, 2) - f(v, 0)) * (f(v, 3) - f(v, 1));
    let inter = iw * ih;
    inter / (area(a) + area(b) - inter).max(1e-9)
}

/// Pair `/detect` detections across two answers as [`assert_matches_reference`] does: each of
/// `reference`'s, in order, with the unused one of `ours` of the same class that overlaps it
/// best (IoU above 0.5). For every reference detection, the index of its pair in `ours`, if any.
pub fn pair_detections(ours: &[Value], reference: &[Value]) -> Vec<Option<usize>> {
    let mut used = vec![false; ours.len()];
    reference
        .iter()
        .map(|y| {
            let best = ours
                .iter()
                .enumerate()
                .filter(|(i, x)| !used[*i] && x["class_id"] == y["class_id"])
                .map(|(i, x)| (i, iou(x, y)))
                .max_by(|p, q| p.1.total_cmp(&q.1))
                .filter(|(_, overlap)| *overlap > 0.5)
                .map(|(i, _)| i);
            if let Some(i) = best {
                used[i] = true;
            }
            best
        })
        .collect()
}

/// Assert that `ours` (a `/detect` answer) matches `expected` (a reference entry): same
/// image size; detections sorted by confidence; each reference detection paired with one
/// of ours of the same class (best IoU), confidence and every box coordinate within
/// `tol`. A detection may be missing on either side only when its confidence is within
/// `tol.conf` of the threshold `conf` (the two pipelines may fall on either side of it).
pub fn assert_matches_reference(ours: &Value, expected: &Value, tol: Tolerance, conf: f64, what: &str) {
    assert_eq!(ours["image"], expected["image"], "{what}: image size");
    let a = ours["detections"].as_array().expect("detections");
    let b = expected["detections"].as_array().expect("reference detections");
    assert_eq!(ours["count"].as_u64(), Some(a.len() as u64), "{what}: count");
    let confidence = |v: &Value| v["confidence"].as_f64().unwrap_or(-1.0);
    assert!(a.windows(2).all(|w| confidence(&w[0]) >= confidence(&w[1])), "{what}: not sorted: {a:?}");
    let borderline = |v: &Value| (confidence(v) - conf).abs() <= tol.conf;
    let pairs = pair_detections(a, b);
    let mut used = vec![false; a.len()];
    for (y, pair) in b.iter().zip(pairs) {
        let Some(i) = pair else {
            assert!(borderline(y), "{what}: reference detection {y} has no counterpart in {a:?}");
            continue;
        };
        used[i] = true;
        let x = &a[i];
        assert_eq!(x["class_name"], y["class_name"], "{what}");
        let dc = (confidence(x) - confidence(y)).abs();
        assert!(dc <= tol.conf, "{what}: confidence differs by {dc}: {x} vs {y}");
        for k in 0..4 {
            let d = (x["bbox"][k].as_f64().unwrap() - y["bbox"][k].as_f64().unwrap()).abs();
            assert!(d <= tol.px, "{what}: bbox[{k}] differs by {d}px (tolerance {}): {x} vs {y}", tol.px);
        }
    }
    for (x, used) in a.iter().zip(used) {
        assert!(used || borderline(x), "{what}: detection {x} is not in the reference {b:?}");
    }
}
