//! Reading a model's metadata and labels from the WASI filesystem (`/models/<name>/`).

use std::path::{Path, PathBuf};

use yolo_core::model::{Labels, METADATA_FILE, ModelMetadata};
use yolo_core::options::validate_model_name;
use yolo_core::{ApiError, ErrorCode};

/// Where the host (or Spin's `files`) mounts the models directory.
pub const MODELS_DIR: &str = "/models";

/// A model's description, ready for pre- and post-processing.
pub struct Model {
    /// `metadata.json`.
    pub metadata: ModelMetadata,
    /// `labels.txt`.
    pub labels: Labels,
}

fn dir(name: &str) -> PathBuf {
    Path::new(MODELS_DIR).join(name)
}

impl Model {
    /// Read `/models/<name>/metadata.json` and its labels file; 404 when there is no such model.
    pub fn open(name: &str) -> Result<Self, ApiError> {
        validate_model_name(name)?;
        let dir = dir(name);
        let meta_bytes = std::fs::read(dir.join(METADATA_FILE)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ApiError::new(
                ErrorCode::ModelNotFound,
                format!("model {name:?} does not exist (available: {})", list().join(", ")),
            ),
            _ => ApiError::new(ErrorCode::ModelInvalid, format!("cannot read {}/{METADATA_FILE}: {e}", dir.display())),
        })?;
        let metadata = ModelMetadata::parse(&meta_bytes)?;
        let labels_text = std::fs::read_to_string(dir.join(&metadata.labels)).map_err(|e| {
            ApiError::new(ErrorCode::ModelInvalid, format!("cannot read the labels of model {name:?}: {e}"))
        })?;
        let labels = Labels::parse(&labels_text, metadata.output.classes)?;
        Ok(Self { metadata, labels })
    }
}

/// Names of the model directories that have a metadata file, sorted.
pub fn list() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(MODELS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(METADATA_FILE).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}
