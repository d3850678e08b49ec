//! The JSON answer of `POST /detect`.

use serde::Serialize;

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// Class index in the model's labels.
    pub class_id: u32,
    /// Class name from `labels.txt`.
    pub class_name: String,
    /// Confidence in `[0, 1]`, rounded to 4 decimals.
    pub confidence: f64,
    /// `[x1, y1, x2, y2]` in original image pixels, rounded to 2 decimals.
    pub bbox: [f64; 4],
}

fn round(v: f32, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (f64::from(v) * p).round() / p
}

impl Detection {
    /// Build a detection, rounding for a compact JSON form.
    pub fn new(class_id: u32, class_name: &str, confidence: f32, bbox: [f32; 4]) -> Self {
        Self {
            class_id,
            class_name: class_name.to_owned(),
            confidence: round(confidence, 4),
            bbox: bbox.map(|v| round(v, 2)),
        }
    }
}

/// Original image size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImageSize {
    /// Width in pixels (after EXIF orientation).
    pub width: u32,
    /// Height in pixels (after EXIF orientation).
    pub height: u32,
}

/// `{"detections": [...], "count": N, "model": "...", "image": {"width", "height"}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectResponse {
    /// Detections, highest confidence first.
    pub detections: Vec<Detection>,
    /// `detections.len()`.
    pub count: usize,
    /// The model that ran.
    pub model: String,
    /// The decoded image's size.
    pub image: ImageSize,
}

impl DetectResponse {
    /// Assemble the answer.
    pub fn new(detections: Vec<Detection>, model: &str, width: u32, height: u32) -> Self {
        Self { count: detections.len(), detections, model: model.to_owned(), image: ImageSize { width, height } }
    }

    /// Serialise to JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            crate::ApiError::new(crate::ErrorCode::Internal, format!("serialising the answer failed: {e}")).to_json()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_matches_the_documented_shape() {
        let d = Detection::new(41, "cup", 0.595_589_8, [148.754_64, 22.124_565, 428.015_3, 310.879_36]);
        let r = DetectResponse::new(vec![d], "yolov3-tiny", 600, 400);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "detections": [{"class_id": 41, "class_name": "cup", "confidence": 0.5956,
                                "bbox": [148.75, 22.12, 428.02, 310.88]}],
                "count": 1, "model": "yolov3-tiny", "image": {"width": 600, "height": 400}
            })
        );
    }
}
