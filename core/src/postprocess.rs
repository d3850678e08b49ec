//! From the raw output tensor to detections: decode the layout, keep what is confident
//! enough, class-wise non-maximum suppression, and map back to the original image.

use crate::error::{ApiError, ErrorCode};
use crate::letterbox::Letterbox;
use crate::model::{Labels, OutputLayout};
use crate::options::DetectOptions;
use crate::response::Detection;

/// A box that passed the confidence threshold, in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// `[x1, y1, x2, y2]` in model-input pixels.
    pub bbox: [f32; 4],
    /// Confidence (objectness × class score for YOLOv5, class score for YOLOv8).
    pub score: f32,
    /// Best class.
    pub class_id: u32,
}

/// Decode an output tensor of shape `dims` into the candidates above `options.conf`, keeping
/// only `options.classes` when set.
pub fn candidates(
    layout: OutputLayout,
    data: &[f32],
    dims: &[u32],
    num_classes: usize,
    options: &DetectOptions,
) -> Result<Vec<Candidate>, ApiError> {
    let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let dims = match dims.as_slice() {
        [1, rest @ ..] if rest.len() == 2 => rest,
        rest => rest,
    };
    let (attrs, boxes) = match (layout, dims) {
        (OutputLayout::Yolov5, &[n, a]) => (a, n),
        (OutputLayout::Yolov8, &[a, n]) => (a, n),
        _ => return Err(shape_error(layout, dims, num_classes)),
    };
    let expected_attrs = match layout {
        OutputLayout::Yolov5 => 5 + num_classes,
        OutputLayout::Yolov8 => 4 + num_classes,
    };
    if attrs != expected_attrs || data.len() != attrs * boxes {
        return Err(shape_error(layout, dims, num_classes));
    }
    // Element `k` of box `i`.
    let at = |i: usize, k: usize| match layout {
        OutputLayout::Yolov5 => data[i * attrs + k],
        OutputLayout::Yolov8 => data[k * boxes + i],
    };
    let first_class = attrs - num_classes;
    let wanted = |c: usize| options.classes.as_ref().is_none_or(|list| list.contains(&(c as u32)));
    let mut out = Vec::new();
    for i in 0..boxes {
        let objectness = match layout {
            OutputLayout::Yolov5 => {
                let obj = at(i, 4);
                // obj * class <= obj: a box whose objectness is not above the threshold cannot pass.
                if !above(obj, options.conf) {
                    continue;
                }
                obj
            }
            OutputLayout::Yolov8 => 1.0,
        };
        let (mut best, mut best_score) = (0usize, f32::NEG_INFINITY);
        for c in 0..num_classes {
            let s = at(i, first_class + c);
            if s > best_score {
                best = c;
                best_score = s;
            }
        }
        let score = objectness * best_score;
        if !above(score, options.conf) || !wanted(best) {
            continue;
        }
        let (cx, cy, w, h) = (at(i, 0), at(i, 1), at(i, 2), at(i, 3));
        out.push(Candidate {
            bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            score,
            class_id: best as u32,
        });
    }
    Ok(out)
}

/// `value > threshold`, false for NaN (a NaN score never passes).
fn above(value: f32, threshold: f32) -> bool {
    value.partial_cmp(&threshold) == Some(std::cmp::Ordering::Greater)
}

fn shape_error(layout: OutputLayout, dims: &[usize], num_classes: usize) -> ApiError {
    let expected = match layout {
        OutputLayout::Yolov5 => format!("[1, N, {}]", 5 + num_classes),
        OutputLayout::Yolov8 => format!("[1, {}, N]", 4 + num_classes),
    };
    ApiError::new(
        ErrorCode::ModelInvalid,
        format!(
            "the model output has shape {dims:?}, but layout {layout:?} with {num_classes} classes expects {expected}"
        ),
    )
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes (0 when either is empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Class-wise greedy NMS: best first, a box is dropped when its IoU with an already kept
/// box of the same class is above `iou_threshold`; stops at `max_det` boxes. The result is
/// sorted by confidence, highest first.
pub fn nms(mut candidates: Vec<Candidate>, iou_threshold: f32, max_det: usize) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept.len() >= max_det {
            break;
        }
        let suppressed = kept.iter().any(|k| k.class_id == c.class_id && iou(&k.bbox, &c.bbox) > iou_threshold);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

/// The whole post-processing: candidates, NMS, and mapping back to original pixels.
pub fn detections(
    layout: OutputLayout,
    data: &[f32],
    dims: &[u32],
    labels: &Labels,
    letterbox: &Letterbox,
    options: &DetectOptions,
) -> Result<Vec<Detection>, ApiError> {
    let found = candidates(layout, data, dims, labels.len(), options)?;
    Ok(nms(found, options.iou, options.max_det)
        .into_iter()
        .map(|c| Detection::new(c.class_id, labels.name(c.class_id as usize), c.score, letterbox.to_original(c.bbox)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(conf: f32) -> DetectOptions {
        DetectOptions { conf, ..Default::default() }
    }

    /// Two classes; rows are cx, cy, w, h, obj, c0, c1.
    fn v5_rows() -> Vec<[f32; 7]> {
        vec![
            [50.0, 50.0, 20.0, 10.0, 0.9, 0.1, 0.8], // class 1, 0.72
            [52.0, 50.0, 20.0, 10.0, 0.8, 0.2, 0.7], // class 1, 0.56, overlaps the first
            [52.0, 50.0, 20.0, 10.0, 0.8, 0.6, 0.1], // class 0, 0.48, same place, other class
            [10.0, 10.0, 4.0, 4.0, 0.2, 0.9, 0.0],   // obj too low
            [90.0, 90.0, 4.0, 4.0, 0.5, 0.4, 0.45],  // class 1, 0.225: below 0.25
        ]
    }

    #[test]
    fn yolov5_layout_uses_objectness() {
        let data: Vec<f32> = v5_rows().concat();
        let c = candidates(OutputLayout::Yolov5, &data, &[1, 5, 7], 2, &opts(0.25)).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].class_id, 1);
        assert!((c[0].score - 0.72).abs() < 1e-6);
        assert_eq!(c[0].bbox, [40.0, 45.0, 60.0, 55.0]);
        assert_eq!(c[2].class_id, 0);
        assert!((c[2].score - 0.48).abs() < 1e-6);
    }

    #[test]
    fn yolov8_layout_is_transposed_and_has_no_objectness() {
        // Same boxes without the objectness column, stored attribute-major: [1, 4 + 2, 5].
        let rows = v5_rows();
        let mut data = Vec::new();
        for k in [0, 1, 2, 3, 5, 6] {
            data.extend(rows.iter().map(|r| r[k]));
        }
        let c = candidates(OutputLayout::Yolov8, &data, &[1, 6, 5], 2, &opts(0.25)).unwrap();
        let scores: Vec<f32> = c.iter().map(|c| c.score).collect();
        assert_eq!(scores, vec![0.8, 0.7, 0.6, 0.9, 0.45]);
        assert_eq!(c[3].bbox, [8.0, 8.0, 12.0, 12.0]);
    }

    #[test]
    fn class_filter() {
        let data: Vec<f32> = v5_rows().concat();
        let o = DetectOptions { classes: Some(vec![0]), ..opts(0.25) };
        let c = candidates(OutputLayout::Yolov5, &data, &[1, 5, 7], 2, &o).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].class_id, 0);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let data = vec![0.0; 5 * 7];
        for dims in [[1u32, 5, 8], [1, 7, 5]] {
            let e = candidates(OutputLayout::Yolov5, &data, &dims, 2, &opts(0.25)).unwrap_err();
            assert_eq!(e.code, ErrorCode::ModelInvalid);
        }
        assert!(candidates(OutputLayout::Yolov5, &data[1..], &[1, 5, 7], 2, &opts(0.25)).is_err());
    }

    #[test]
    fn iou_values() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[10.0, 10.0, 20.0, 20.0]), 0.0);
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn nms_is_class_wise_sorted_and_capped() {
        let data: Vec<f32> = v5_rows().concat();
        let c = candidates(OutputLayout::Yolov5, &data, &[1, 5, 7], 2, &opts(0.25)).unwrap();
        let kept = nms(c.clone(), 0.45, 100);
        // The second class-1 box overlaps the first (IoU 0.818) and goes; the class-0 box stays.
        assert_eq!(kept.iter().map(|k| k.class_id).collect::<Vec<_>>(), vec![1, 0]);
        assert!(kept[0].score >= kept[1].score);
        // With a threshold above their IoU, both class-1 boxes stay.
        assert_eq!(nms(c.clone(), 0.9, 100).len(), 3);
        assert_eq!(nms(c, 0.9, 2).len(), 2);
    }
}
