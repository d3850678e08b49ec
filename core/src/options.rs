//! Detection options (`conf`, `iou`, `max_det`, `classes`, `model`, `annotate`, `decode`), from
//! a JSON object or a query string, validated the same way for both.

use crate::error::{ApiError, ErrorCode};
use serde_json::{Map, Value};

/// Default confidence threshold.
pub const DEFAULT_CONF: f32 = 0.25;
/// Default IoU threshold for NMS.
pub const DEFAULT_IOU: f32 = 0.45;
/// Default maximum number of detections.
pub const DEFAULT_MAX_DET: usize = 100;
/// Largest `max_det` a client may ask for.
pub const MAX_MAX_DET: usize = 1000;

/// The option names a request may carry (besides `image` in JSON).
pub const OPTION_NAMES: [&str; 7] = ["conf", "iou", "max_det", "classes", "model", "annotate", "decode"];

/// Answer with the image, boxes and labels drawn on it, instead of JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Annotate {
    /// A PNG.
    Png,
    /// A JPEG.
    Jpeg,
}

impl Annotate {
    fn parse(value: &str) -> Result<Self, ApiError> {
        match value.to_ascii_lowercase().as_str() {
            "png" => Ok(Self::Png),
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            _ => Err(invalid(format!("annotate must be \"png\" or \"jpeg\", got {value:?}"))),
        }
    }

    /// The answer's media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
        }
    }

    /// The option's value, as a client writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
        }
    }
}

/// How much of a large JPEG to decode ([`crate::decode::decode_rgb_for_input`]): a JPEG is
/// decoded at 1/2, 1/4 or 1/8 scale while the result stays at least [`DecodeMode::gap`] times
/// the size the model input keeps of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeMode {
    /// Reduce while at least twice the letterboxed size is kept (Pillow's `thumbnail`
    /// `reducing_gap=2.0`): the resize that follows still averages 2×2 or more pixels, and
    /// answers stay within the tests' JPEG tolerance of a whole decode.
    #[default]
    Auto,
    /// Reduce as far as the letterboxed size (what Pillow's `draft` does): least work;
    /// confidences move by up to a few hundredths.
    Fast,
    /// Always decode the whole image (Pillow's `open` + `resize`).
    Full,
}

impl DecodeMode {
    fn parse(value: &str) -> Result<Self, ApiError> {
        match value.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "fast" => Ok(Self::Fast),
            "full" => Ok(Self::Full),
            _ => Err(invalid(format!("decode must be \"auto\", \"fast\" or \"full\", got {value:?}"))),
        }
    }

    /// How many times the letterboxed size a reduced decode keeps; `None`: no reduction.
    pub fn gap(self) -> Option<u32> {
        match self {
            Self::Auto => Some(2),
            Self::Fast => Some(1),
            Self::Full => None,
        }
    }

    /// The option's value, as a client writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fast => "fast",
            Self::Full => "full",
        }
    }
}

/// Validated detection options.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectOptions {
    /// Keep detections whose confidence is strictly above this (0..=1).
    pub conf: f32,
    /// Suppress a box whose IoU with a better box of the same class is above this (0..=1).
    pub iou: f32,
    /// Keep at most this many detections (1..=[`MAX_MAX_DET`]).
    pub max_det: usize,
    /// Keep only these class ids; `None` keeps all.
    pub classes: Option<Vec<u32>>,
    /// The model to use; `None` means the deployment's default model.
    pub model: Option<String>,
    /// Answer with the annotated image in this format; `None`: JSON.
    pub annotate: Option<Annotate>,
    /// How much of a large JPEG to decode.
    pub decode: DecodeMode,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            conf: DEFAULT_CONF,
            iou: DEFAULT_IOU,
            max_det: DEFAULT_MAX_DET,
            classes: None,
            model: None,
            annotate: None,
            decode: DecodeMode::default(),
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidOption, message)
}

fn unit_interval(name: &str, v: f64) -> Result<f32, ApiError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v as f32)
    } else {
        Err(invalid(format!("{name} must be a number in [0, 1], got {v}")))
    }
}

fn max_det(v: u64) -> Result<usize, ApiError> {
    if (1..=MAX_MAX_DET as u64).contains(&v) {
        Ok(v as usize)
    } else {
        Err(invalid(format!("max_det must be an integer in [1, {MAX_MAX_DET}], got {v}")))
    }
}

/// Check a model name: letters, digits, `.`, `_`, `-`, not starting with `.`, at most 64 bytes.
/// This keeps names from ever escaping the models directory.
pub fn validate_model_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "model must be 1-64 characters of letters, digits, '.', '_' or '-' (not starting with '.'), got {name:?}"
        )))
    }
}

impl DetectOptions {
    /// Read options from the fields of a JSON object. Fields other than the option names and
    /// the ones listed in `also_allowed` are refused, so typos do not go unnoticed.
    pub fn from_json(obj: &Map<String, Value>, also_allowed: &[&str]) -> Result<Self, ApiError> {
        Self::default().with_json(obj, also_allowed)
    }

    /// Like [`DetectOptions::from_json`], but on top of `self`: the fields present override.
    pub fn with_json(self, obj: &Map<String, Value>, also_allowed: &[&str]) -> Result<Self, ApiError> {
        let mut o = self;
        for (key, value) in obj {
            match key.as_str() {
                "conf" => o.conf = unit_interval("conf", json_number("conf", value)?)?,
                "iou" => o.iou = unit_interval("iou", json_number("iou", value)?)?,
                "max_det" => {
                    let n = value.as_u64().ok_or_else(|| {
                        invalid(format!("max_det must be an integer in [1, {MAX_MAX_DET}], got {value}"))
                    })?;
                    o.max_det = max_det(n)?;
                }
                "classes" => o.classes = json_classes(value)?,
                "model" => {
                    let name = value.as_str().ok_or_else(|| invalid(format!("model must be a string, got {value}")))?;
                    validate_model_name(name)?;
                    o.model = Some(name.to_owned());
                }
                "annotate" => {
                    let format =
                        value.as_str().ok_or_else(|| invalid(format!("annotate must be a string, got {value}")))?;
                    o.annotate = Some(Annotate::parse(format)?);
                }
                "decode" => {
                    let mode =
                        value.as_str().ok_or_else(|| invalid(format!("decode must be a string, got {value}")))?;
                    o.decode = DecodeMode::parse(mode)?;
                }
                other if also_allowed.contains(&other) => {}
                other => return Err(unknown_field(other, also_allowed)),
            }
        }
        Ok(o)
    }

    /// Read options from a URL query string such as `conf=0.3&classes=0,2`.
    pub fn from_query(query: &str) -> Result<Self, ApiError> {
        Self::default().with_query(query)
    }

    /// Like [`DetectOptions::from_query`], but on top of `self`: the parameters present override.
    pub fn with_query(self, query: &str) -> Result<Self, ApiError> {
        let mut o = self;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(raw)?;
            match key {
                "conf" => o.conf = unit_interval("conf", query_number("conf", &value)?)?,
                "iou" => o.iou = unit_interval("iou", query_number("iou", &value)?)?,
                "max_det" => {
                    let n = value.parse::<u64>().map_err(|_| {
                        invalid(format!("max_det must be an integer in [1, {MAX_MAX_DET}], got {value:?}"))
                    })?;
                    o.max_det = max_det(n)?;
                }
                "classes" => o.classes = query_classes(&value)?,
                "model" => {
                    validate_model_name(&value)?;
                    o.model = Some(value);
                }
                "annotate" => o.annotate = Some(Annotate::parse(&value)?),
                "decode" => o.decode = DecodeMode::parse(&value)?,
                other => return Err(unknown_field(other, &[])),
            }
        }
        Ok(o)
    }

    /// Check `classes` against the number of classes the model has.
    pub fn check_classes(&self, num_classes: usize) -> Result<(), ApiError> {
        if let Some(bad) = self.classes.iter().flatten().find(|&&c| c as usize >= num_classes) {
            return Err(invalid(format!(
                "class id {bad} does not exist: the model has classes 0..{}",
                num_classes.saturating_sub(1)
            )));
        }
        Ok(())
    }
}

fn unknown_field(name: &str, also_allowed: &[&str]) -> ApiError {
    let mut known: Vec<&str> = also_allowed.to_vec();
    known.extend(OPTION_NAMES);
    invalid(format!("unknown option {name:?}; known options are {}", known.join(", ")))
}

fn json_number(name: &str, value: &Value) -> Result<f64, ApiError> {
    value.as_f64().ok_or_else(|| invalid(format!("{name} must be a number in [0, 1], got {value}")))
}

fn query_number(name: &str, value: &str) -> Result<f64, ApiError> {
    value.trim().parse::<f64>().map_err(|_| invalid(format!("{name} must be a number in [0, 1], got {value:?}")))
}

fn json_classes(value: &Value) -> Result<Option<Vec<u32>>, ApiError> {
    let err = || invalid(format!("classes must be a list of non-negative class ids, got {value}"));
    let list = value.as_array().ok_or_else(err)?;
    let ids = list
        .iter()
        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(err))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(ids))
}

fn query_classes(value: &str) -> Result<Option<Vec<u32>>, ApiError> {
    let ids = value
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| invalid(format!("classes must be comma-separated non-negative class ids, got {value:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(ids))
}

/// Decode `%XX` escapes and `+` (as space) in a query component.
fn percent_decode(raw: &str) -> Result<String, ApiError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| invalid(format!("malformed percent escape in {raw:?}")))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| invalid(format!("query value {raw:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from_json(v: Value) -> Result<DetectOptions, ApiError> {
        DetectOptions::from_json(v.as_object().unwrap(), &["image"])
    }

    #[test]
    fn defaults() {
        let o = from_json(json!({"image": "x"})).unwrap();
        assert_eq!(o, DetectOptions::default());
        assert_eq!((o.conf, o.iou, o.max_det), (0.25, 0.45, 100));
    }

    #[test]
    fn json_options_are_read() {
        let o = from_json(json!({"conf": 0.5, "iou": 0.3, "max_det": 7, "classes": [0, 41], "model": "yolov3-tiny"}))
            .unwrap();
        assert_eq!(o.conf, 0.5);
        assert_eq!(o.iou, 0.3);
        assert_eq!(o.max_det, 7);
        assert_eq!(o.classes, Some(vec![0, 41]));
        assert_eq!(o.model.as_deref(), Some("yolov3-tiny"));
    }

    #[test]
    fn query_options_are_read() {
        let o = DetectOptions::from_query("conf=0.3&classes=0,2&max_det=5&iou=0.5&model=m-1").unwrap();
        assert_eq!(o.conf, 0.3);
        assert_eq!(o.classes, Some(vec![0, 2]));
        assert_eq!(o.max_det, 5);
        assert_eq!(o.iou, 0.5);
        assert_eq!(o.model.as_deref(), Some("m-1"));
        assert_eq!(DetectOptions::from_query("").unwrap(), DetectOptions::default());
        assert_eq!(DetectOptions::from_query("classes=0%2C2").unwrap().classes, Some(vec![0, 2]));
    }

    #[test]
    fn out_of_range_and_malformed_values_are_refused() {
        for bad in [
            json!({"conf": 1.5}),
            json!({"conf": -0.1}),
            json!({"conf": "high"}),
            json!({"iou": 2}),
            json!({"max_det": 0}),
            json!({"max_det": 1001}),
            json!({"max_det": 2.5}),
            json!({"max_det": -3}),
            json!({"classes": "0,1"}),
            json!({"classes": [-1]}),
            json!({"classes": [1.5]}),
            json!({"model": "../etc"}),
            json!({"model": 3}),
            json!({"confidence": 0.2}),
        ] {
            let e = from_json(bad.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidOption, "{bad}");
            assert_eq!(e.status(), 400);
        }
        for bad in [
            "conf=NaN",
            "conf=inf",
            "conf=abc",
            "iou=-1",
            "max_det=100000",
            "classes=a,b",
            "classes=",
            "model=..",
            "model=a/b",
            "bogus=1",
            "conf=%zz",
        ] {
            let e = DetectOptions::from_query(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidOption, "{bad}");
        }
    }

    #[test]
    fn classes_are_checked_against_the_model() {
        let o = DetectOptions { classes: Some(vec![0, 80]), ..Default::default() };
        assert!(o.check_classes(81).is_ok());
        let e = o.check_classes(80).unwrap_err();
        assert!(e.message.contains("80"), "{}", e.message);
    }

    #[test]
    fn model_names() {
        for ok in ["yolov3-tiny", "a", "m_1.v2"] {
            validate_model_name(ok).unwrap();
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "a\\b", "a b", &"x".repeat(65)] {
            assert!(validate_model_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn annotate_from_query_and_json() {
        assert_eq!(DetectOptions::from_query("").unwrap().annotate, None);
        assert_eq!(DetectOptions::from_query("annotate=png").unwrap().annotate, Some(Annotate::Png));
        assert_eq!(DetectOptions::from_query("annotate=JPG").unwrap().annotate, Some(Annotate::Jpeg));
        let obj = serde_json::json!({"annotate": "jpeg"});
        let o = DetectOptions::from_json(obj.as_object().unwrap(), &[]).unwrap();
        assert_eq!(o.annotate, Some(Annotate::Jpeg));
        assert_eq!(Annotate::Jpeg.media_type(), "image/jpeg");
        assert_eq!(DetectOptions::from_query("annotate=gif").unwrap_err().code, ErrorCode::InvalidOption);
        let bad = serde_json::json!({"annotate": 1});
        assert!(DetectOptions::from_json(bad.as_object().unwrap(), &[]).is_err());
    }

    #[test]
    fn decode_from_query_and_json() {
        assert_eq!(DetectOptions::from_query("").unwrap().decode, DecodeMode::Auto);
        assert_eq!(DetectOptions::from_query("decode=full").unwrap().decode, DecodeMode::Full);
        assert_eq!(DetectOptions::from_query("decode=FAST").unwrap().decode, DecodeMode::Fast);
        let o = from_json(serde_json::json!({"decode": "full"})).unwrap();
        assert_eq!((o.decode, o.decode.as_str(), o.decode.gap()), (DecodeMode::Full, "full", None));
        assert_eq!((DecodeMode::Auto.gap(), DecodeMode::Fast.gap()), (Some(2), Some(1)));
        let e = DetectOptions::from_query("decode=half").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidOption);
        assert!(e.message.contains("\"auto\", \"fast\" or \"full\""), "{}", e.message);
        assert!(from_json(serde_json::json!({"decode": 2})).is_err());
    }
}
