//! `yolo-edge models import`: a model directory from an ONNX export.
//!
//! Reads the graph's input and output shapes and its custom metadata with ONNX Runtime
//! (Ultralytics exports carry `names`, `imgsz`, `stride` and `task` in `metadata_props`),
//! resolves the input size (static dimensions, else `--input-size`, else `imgsz`), runs the
//! graph once on a grey image through the host's own [`OnnxGraph`], tells the output layout
//! from the shape it answered (`[1, N, 5 + C]` with N > 5 + C: YOLOv5, objectness;
//! `[1, 4 + C, N]` with N > 4 + C: YOLOv8/v11), checks the class count against the labels,
//! and writes `<models>/<name>/` with `model.onnx`, `labels.txt` and a `metadata.json` that
//! [`yolo_core::model::ModelMetadata`] parses.

mod metadata;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ort::session::Session;
use ort::tensor::TensorElementType;
use ort::value::ValueType;
use sha2::{Digest as _, Sha256};
use yolo_core::model::{Labels, METADATA_FILE, ModelMetadata, OutputLayout};
use yolo_core::options::{DetectOptions, validate_model_name};

pub use self::metadata::{detect_layout, parse_imgsz, parse_input_size, parse_names};
use crate::backend::{Cancel, Graph as _, Tensor};
use crate::onnx::{OnnxGraph, OnnxOptions};
use crate::{ExecutionTarget, TensorType};

/// The grey of the letterbox padding, which the check run feeds the graph.
const GREY: f32 = 114.0 / 255.0;

/// What to import and where.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The ONNX file.
    pub source: PathBuf,
    /// The model's name (its directory name); default: the file's stem (its folder's name
    /// when the file is called `model.onnx`).
    pub name: Option<String>,
    /// A labels file (one class name per line), instead of the model's `names` metadata.
    pub labels: Option<PathBuf>,
    /// Input size (width, height) for a graph whose input size is dynamic.
    pub input_size: Option<(u32, u32)>,
    /// The models directory the model directory goes into.
    pub models: PathBuf,
    /// Replace an existing model directory of the same name.
    pub force: bool,
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The model directory.
    pub dir: PathBuf,
    /// Its `metadata.json`, as the function reads it.
    pub metadata: ModelMetadata,
    /// The output shape the check run answered.
    pub output_dims: Vec<u32>,
    /// Boxes per image (N).
    pub boxes: usize,
    /// Where the class names came from.
    pub labels_from: String,
    /// How long the check run took.
    pub run: Duration,
}

impl std::fmt::Display for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.metadata;
        let layout = match m.output.layout {
            OutputLayout::Yolov5 => "yolov5: cx, cy, w, h, objectness, class scores",
            OutputLayout::Yolov8 => "yolov8: cx, cy, w, h, class scores",
        };
        write!(
            f,
            "imported model {:?} into {}\n  input  {:?} {}x{} (NCHW, RGB in [0, 1])\n  output {:?} {:?} ({layout}), {} boxes, {} classes (names from {})\n  check run on a grey image: {} ms\nServe it with `yolo-edge serve --models {}` and ask for it with `model={}`.",
            m.name,
            self.dir.display(),
            m.input.name,
            m.input.width,
            m.input.height,
            m.output.name,
            self.output_dims,
            self.boxes,
            m.output.classes,
            self.labels_from,
            self.run.as_millis(),
            self.dir.parent().unwrap_or(Path::new(".")).display(),
            m.name,
        )
    }
}

/// Labels from a file: one name per line, blank trailing lines ignored.
fn read_labels(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the labels {}", path.display()))?;
    let mut names: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
    while names.last().is_some_and(String::is_empty) {
        names.pop();
    }
    if let Some(i) = names.iter().position(String::is_empty) {
        bail!("{}: line {} is empty (one class name per line)", path.display(), i + 1);
    }
    Ok(names)
}

/// A tensor's element type and dimensions (-1 for a dynamic one), or why it is not a tensor.
fn tensor_shape(what: &str, ty: &ValueType) -> anyhow::Result<(TensorElementType, Vec<i64>)> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => Ok((*ty, shape.iter().copied().collect())),
        other => bail!("{what} is {other:?}, not a tensor"),
    }
}

fn show_dims(dims: &[i64], symbols: &[&str]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| if d < 0 { symbols.get(i).unwrap_or(&"?").to_string() } else { d.to_string() })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Resolve one input dimension: the graph's own when static (an `--input-size` must agree),
/// else `--input-size`, else `imgsz`.
fn resolve(declared: i64, asked: Option<u32>, imgsz: Option<u32>) -> Result<u32, Option<u32>> {
    match (u32::try_from(declared).ok().filter(|&d| d > 0), asked) {
        (Some(d), Some(a)) if a != d => Err(Some(d)),
        (Some(d), _) => Ok(d),
        (None, Some(a)) => Ok(a),
        (None, None) => imgsz.ok_or(None),
    }
}

/// Import `options.source` into `options.models`: ONNX Runtime must already be opened
/// ([`crate::onnx::init_runtime`]).
pub fn import(options: &ImportOptions) -> anyhow::Result<Imported> {
    let source = &options.source;
    let bytes = std::fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
    let session =
        Session::builder().and_then(|b| b.with_intra_threads(1)).and_then(|b| b.commit_from_memory(&bytes)).map_err(
            |e| anyhow::anyhow!("{} is not an ONNX model that ONNX Runtime can load: {e}", source.display()),
        )?;

    // Ultralytics' metadata_props.
    let mut custom = BTreeMap::new();
    if let Ok(meta) = session.metadata() {
        for key in meta.custom_keys().unwrap_or_default() {
            if let Ok(Some(value)) = meta.custom(&key) {
                custom.insert(key, value);
            }
        }
    }
    if let Some(task) = custom.get("task").filter(|t| t.as_str() != "detect") {
        bail!(
            "{} is a {task:?} model (its metadata says task={task}): only detection models (task=detect) can be served",
            source.display()
        );
    }

    // The image input: [1, 3, height, width] float32.
    let [input] = &session.inputs[..] else {
        let names: Vec<&str> = session.inputs.iter().map(|i| i.name.as_str()).collect();
        bail!("the model has {} inputs {names:?}: a YOLO detection model has one, the image", names.len());
    };
    let (ty, dims) = tensor_shape(&format!("input {:?}", input.name), &input.input_type)?;
    let shown = show_dims(&dims, &["batch", "channels", "height", "width"]);
    if ty != TensorElementType::Float32 {
        bail!(
            "input {:?} holds {ty:?}: only float32 inputs are supported (export without half precision / int8)",
            input.name
        );
    }
    if dims.len() != 4 || !matches!(dims[0], 1 | -1) || !matches!(dims[1], 3 | -1) {
        bail!(
            "input {:?} has shape {shown}: expected an RGB image tensor [1, 3, height, width] (NCHW), as YOLO exports take",
            input.name
        );
    }
    let imgsz = custom.get("imgsz").and_then(|t| parse_imgsz(t));
    let (asked_w, asked_h) = options.input_size.unzip();
    let height = resolve(dims[2], asked_h, imgsz.map(|s| s.1));
    let width = resolve(dims[3], asked_w, imgsz.map(|s| s.0));
    let (width, height) = match (width, height) {
        (Ok(w), Ok(h)) => (w, h),
        (Err(Some(_)), _) | (_, Err(Some(_))) => bail!(
            "input {:?} has the fixed shape {shown}: --input-size {}x{} does not match it (leave it out)",
            input.name,
            asked_w.unwrap_or_default(),
            asked_h.unwrap_or_default()
        ),
        _ => bail!(
            "input {:?} has the dynamic shape {shown} and the model has no `imgsz` metadata to resolve it: \
             pass --input-size (e.g. --input-size 640, or 640x480 for width x height)",
            input.name
        ),
    };
    if let Some(stride) = custom.get("stride").and_then(|s| s.trim().parse::<u32>().ok()).filter(|&s| s > 0)
        && (width % stride != 0 || height % stride != 0)
    {
        bail!("input size {width}x{height} is not a multiple of the model's stride {stride}");
    }

    // The detection output: the first float tensor of rank 3.
    let mut declared = Vec::new();
    let mut found = None;
    for output in &session.outputs {
        let (ty, dims) = tensor_shape(&format!("output {:?}", output.name), &output.output_type)?;
        declared.push(format!("{:?} {ty:?} {}", output.name, show_dims(&dims, &[])));
        if ty == TensorElementType::Float32 && dims.len() == 3 {
            found = Some(output.name.clone());
            break;
        }
    }
    let Some(output_name) = found else {
        bail!(
            "the model answers {}: not a YOLO detection model, whose output is a float32 tensor \
             [1, N, 5 + C] (YOLOv5) or [1, 4 + C, N] (YOLOv8/v11); classification, segmentation and pose models \
             cannot be imported",
            declared.join(", ")
        );
    };
    let input_name = input.name.clone();
    drop(session);

    // One run through the host's own graph, on a grey image.
    let graph = OnnxGraph::from_bytes(
        &bytes,
        ExecutionTarget::Cpu,
        &OnnxOptions { sessions: 1, session_threads: 1, threads: 1, ..OnnxOptions::default() },
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", source.display()))?;
    let pixels = 3 * width as usize * height as usize;
    let grey: Vec<u8> = std::iter::repeat_n(GREY.to_le_bytes(), pixels).flatten().collect();
    let tensor = Tensor { dims: vec![1, 3, height, width], ty: TensorType::Fp32, data: grey };
    let started = Instant::now();
    let computed = graph.compute(vec![(input_name.clone(), tensor)], &Cancel::default()).map_err(|e| {
        anyhow::anyhow!("the model does not run on a {width}x{height} image: {e} (is --input-size right?)")
    })?;
    let run = started.elapsed();
    let (_, out) = computed
        .outputs
        .into_iter()
        .find(|(name, _)| *name == output_name)
        .with_context(|| format!("the check run answered no output {output_name:?}"))?;
    if out.ty != TensorType::Fp32 {
        bail!("output {output_name:?} is {:?}, not float32", out.ty);
    }
    let values = yolo_core::letterbox::f32_from_le_bytes(&out.data);
    let (layout, classes, boxes) =
        detect_layout(&out.dims).map_err(|e| anyhow::anyhow!("output {output_name:?}: {e}"))?;

    // Class names: --labels, else the `names` metadata.
    let (names, labels_from) = match (&options.labels, custom.get("names")) {
        (Some(path), _) => (read_labels(path)?, path.display().to_string()),
        (None, Some(text)) => (
            parse_names(text).map_err(|e| {
                anyhow::anyhow!("the model's `names` metadata cannot be read ({e}): pass --labels FILE")
            })?,
            "the model's `names` metadata".to_owned(),
        ),
        (None, None) => bail!(
            "the model carries no class names (no `names` metadata): pass --labels FILE, one name per line ({classes} lines)"
        ),
    };
    if names.len() != classes {
        let expected = match layout {
            OutputLayout::Yolov5 => format!("[1, N, 5 + C] (YOLOv5), so 5 + C = {}", classes + 5),
            OutputLayout::Yolov8 => format!("[1, 4 + C, N] (YOLOv8/v11), so 4 + C = {}", classes + 4),
        };
        // [1, N, 6] with many names: boxes after NMS (x1, y1, x2, y2, score, class), as YOLOv10
        // and `nms=True` exports answer, not raw predictions.
        let hint = if layout == OutputLayout::Yolov5 && classes == 1 && names.len() > 1 {
            " (an output of 6 values per box with many classes looks like an export with NMS built in, \
             e.g. YOLOv10 or `nms=True`: export the raw predictions instead)"
        } else {
            ""
        };
        bail!(
            "class count mismatch: output {output_name:?} has shape {:?}, read as {expected}: {classes} classes, \
             but {labels_from} has {} names{hint}",
            out.dims,
            names.len()
        );
    }
    if names.iter().any(|n| n.trim().is_empty() || n.contains(['\n', '\r'])) {
        bail!("class names must be non-empty single lines ({labels_from})");
    }
    // The output decodes as the function will decode it.
    yolo_core::postprocess::candidates(layout, &values, &out.dims, classes, &DetectOptions::default())
        .map_err(|e| anyhow::anyhow!("the check run's output does not decode: {}", e.message))?;

    // The model directory.
    let name = match &options.name {
        Some(n) => n.clone(),
        None => default_name(source),
    };
    validate_model_name(&name).map_err(|e| anyhow::anyhow!("--name: {}", e.message))?;
    let dir = options.models.join(&name);
    if dir.exists() && !options.force {
        bail!("{} already exists: choose another --name, or pass --force to replace it", dir.display());
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    custom.remove("names");
    let metadata = serde_json::json!({
        "name": name,
        "format": "onnx",
        "input": {"name": input_name, "width": width, "height": height, "layout": "NCHW", "color": "RGB", "scale": 1.0 / 255.0},
        "output": {"name": output_name, "layout": layout, "boxes": boxes, "classes": classes},
        "letterbox": {"color": [114, 114, 114], "resize": "bilinear"},
        "labels": "labels.txt",
        "source": {
            "description": format!("imported by `yolo-edge models import` from {}", source.display()),
            "sha256": sha,
            "labels": labels_from,
            "metadata_props": custom,
        },
    });
    let metadata_text = serde_json::to_string_pretty(&metadata)? + "\n";
    let labels_text = names.join("\n") + "\n";
    // What the function will read must parse.
    let parsed = ModelMetadata::parse(metadata_text.as_bytes()).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Labels::parse(&labels_text, classes).map_err(|e| anyhow::anyhow!("{}", e.message))?;

    std::fs::create_dir_all(&options.models)
        .with_context(|| format!("cannot create the models directory {}", options.models.display()))?;
    let staging = options.models.join(format!(".import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let write = || -> anyhow::Result<()> {
        std::fs::create_dir_all(&staging)?;
        std::fs::write(staging.join("model.onnx"), &bytes)?;
        std::fs::write(staging.join("labels.txt"), &labels_text)?;
        std::fs::write(staging.join(METADATA_FILE), &metadata_text)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cannot replace {}", dir.display()))?;
        }
        std::fs::rename(&staging, &dir)?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e.context(format!("cannot write {}", dir.display())));
    }
    Ok(Imported { dir, metadata: parsed, output_dims: out.dims, boxes, labels_from, run })
}

/// The file's stem, or its folder's name for a `model.onnx`.
fn default_name(source: &Path) -> String {
    let stem = source.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    if stem == "model"
        && let Some(parent) =
            source.canonicalize().ok().and_then(|p| p.parent()?.file_name()?.to_str().map(str::to_owned))
    {
        return parent;
    }
    stem.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_dimensions() {
        assert_eq!(resolve(416, None, None), Ok(416));
        assert_eq!(resolve(416, Some(416), Some(640)), Ok(416));
        assert_eq!(resolve(416, Some(640), None), Err(Some(416)));
        assert_eq!(resolve(-1, Some(320), Some(640)), Ok(320));
        assert_eq!(resolve(-1, None, Some(640)), Ok(640));
        assert_eq!(resolve(-1, None, None), Err(None));
    }
}
