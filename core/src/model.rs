//! A model directory's description: `metadata.json` (input size, tensor names, output
//! layout, letterbox colour) and `labels.txt` (one class name per line).
//!
//! ```text
//! models/<name>/model.onnx      the graph (the host loads it once at start)
//! models/<name>/metadata.json   ModelMetadata
//! models/<name>/labels.txt      class names, line i = class id i
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};

/// The model a deployment uses when neither the request nor `YOLO_EDGE_DEFAULT_MODEL` names one.
pub const DEFAULT_MODEL: &str = "yolov3-tiny";

/// File name of the metadata inside a model directory.
pub const METADATA_FILE: &str = "metadata.json";

/// How the model's output tensor lays out its boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputLayout {
    /// `[1, N, 5 + C]`: cx, cy, w, h, objectness, C class scores (YOLOv3/v5 exports);
    /// confidence = objectness × class score.
    #[serde(rename = "yolov5")]
    Yolov5,
    /// `[1, 4 + C, N]`: cx, cy, w, h, C class scores, no objectness (YOLOv8/v11 exports).
    #[serde(rename = "yolov8")]
    Yolov8,
}

/// Where the model should run (the wasi-nn execution target).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The CPU.
    #[default]
    Cpu,
    /// A GPU (the host needs GPU support).
    Gpu,
    /// A TPU.
    Tpu,
}

/// The model's input tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Tensor name.
    pub name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// The model's output tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// Tensor name.
    pub name: String,
    /// Box layout.
    pub layout: OutputLayout,
    /// Number of classes.
    pub classes: usize,
}

/// Letterbox settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LetterboxSpec {
    /// Padding colour, RGB.
    pub color: [u8; 3],
}

impl Default for LetterboxSpec {
    fn default() -> Self {
        Self { color: [114, 114, 114] }
    }
}

/// `metadata.json`: what the function needs to prepare the input and read the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model's name (its directory name).
    pub name: String,
    /// Graph encoding, `onnx` (or `openvino`).
    #[serde(default = "default_format")]
    pub format: String,
    /// Input tensor.
    pub input: InputSpec,
    /// Output tensor.
    pub output: OutputSpec,
    /// Letterbox padding.
    #[serde(default)]
    pub letterbox: LetterboxSpec,
    /// Labels file name inside the directory.
    #[serde(default = "default_labels")]
    pub labels: String,
    /// Where the host should run it (`cpu` unless said otherwise).
    #[serde(default)]
    pub target: Target,
    /// The host's inference engine for it: `onnxruntime` (default) or `openvino`.
    #[serde(default)]
    pub backend: Option<String>,
}

fn default_format() -> String {
    "onnx".to_owned()
}

fn default_labels() -> String {
    "labels.txt".to_owned()
}

impl ModelMetadata {
    /// Parse and check `metadata.json`.
    pub fn parse(json: &[u8]) -> Result<Self, ApiError> {
        let meta: Self = serde_json::from_slice(json)
            .map_err(|e| ApiError::new(ErrorCode::ModelInvalid, format!("metadata.json is invalid: {e}")))?;
        if meta.input.width == 0 || meta.input.height == 0 || meta.output.classes == 0 {
            return Err(ApiError::new(
                ErrorCode::ModelInvalid,
                "metadata.json: input size and class count must be positive",
            ));
        }
        Ok(meta)
    }
}

/// Class names, indexed by class id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels(Vec<String>);

impl Labels {
    /// Parse `labels.txt`: one name per line, blank trailing lines ignored.
    pub fn parse(text: &str, expected: usize) -> Result<Self, ApiError> {
        let names: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
        let names: Vec<String> = match names.iter().rposition(|n| !n.is_empty()) {
            Some(last) => names[..=last].to_vec(),
            None => Vec::new(),
        };
        if names.len() != expected {
            return Err(ApiError::new(
                ErrorCode::ModelInvalid,
                format!("labels file has {} names but the model has {expected} classes", names.len()),
            ));
        }
        Ok(Self(names))
    }

    /// The name of a class id.
    pub fn name(&self, class_id: usize) -> &str {
        self.0.get(class_id).map_or("unknown", String::as_str)
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = r#"{"name":"m","format":"onnx",
        "input":{"name":"images","width":416,"height":416,"layout":"NCHW"},
        "output":{"name":"output","layout":"yolov5","classes":2,"boxes":2535},
        "letterbox":{"color":[114,114,114]},"labels":"labels.txt"}"#;

    #[test]
    fn parses_metadata_with_extra_fields() {
        let m = ModelMetadata::parse(META.as_bytes()).unwrap();
        assert_eq!(m.output.layout, OutputLayout::Yolov5);
        assert_eq!((m.input.width, m.input.height), (416, 416));
        assert_eq!(m.letterbox.color, [114, 114, 114]);
        assert_eq!(m.target, Target::Cpu);
        let gpu = META.replace("\"labels\":", "\"target\":\"gpu\",\"labels\":");
        assert_eq!(ModelMetadata::parse(gpu.as_bytes()).unwrap().target, Target::Gpu);
        let v8 = META.replace("yolov5", "yolov8");
        assert_eq!(ModelMetadata::parse(v8.as_bytes()).unwrap().output.layout, OutputLayout::Yolov8);
    }

    #[test]
    fn refuses_bad_metadata() {
        let e = ModelMetadata::parse(META.replace("yolov5", "yolov9").as_bytes()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ModelInvalid);
        assert!(ModelMetadata::parse(b"{}").is_err());
        assert!(ModelMetadata::parse(META.replace("416,", "0,").as_bytes()).is_err());
    }

    #[test]
    fn labels() {
        let l = Labels::parse("person\nbicycle\n\n", 2).unwrap();
        assert_eq!(l.name(1), "bicycle");
        assert_eq!(l.name(7), "unknown");
        assert!(Labels::parse("a\nb\nc\n", 2).is_err());
    }
}
