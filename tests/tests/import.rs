//! `yolo-edge models import`: model directories from ONNX exports. The exports are tiny
//! graphs built here with the `onnx` Python package (`tests/tools/make_onnx.py`, in the
//! set-up venv) in both output layouts, each answering one known box; they are imported,
//! then served by the real host next to the default model re-imported from its ONNX file.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use yolo_edge_tests::{Host, cli, fresh_data_dir, models, photo, photo_bytes, repo};

/// A fresh temporary directory.
fn temp_dir(what: &str) -> PathBuf {
    let dir = fresh_data_dir().join(what);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Build a test graph with `tests/tools/make_onnx.py ARGS --out OUT`.
fn make_onnx(out: &Path, args: &[&str]) {
    let python = repo().join(".cache/venv/bin/python");
    let done = Command::new(&python)
        .arg(repo().join("tests/tools/make_onnx.py"))
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): run `cargo xtask test`", python.display()));
    assert!(done.status.success(), "make_onnx.py {args:?} failed: {}", String::from_utf8_lossy(&done.stderr));
}

/// `yolo-edge models import SOURCE --models DIR ARGS`: (success, stdout, stderr).
fn import(source: &Path, models_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let source = source.to_str().unwrap();
    let dir = models_dir.to_str().unwrap();
    let mut all = vec!["models", "import", source, "--models", dir];
    all.extend_from_slice(args);
    cli(&fresh_data_dir(), &all)
}

fn metadata(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("metadata.json")).unwrap()).unwrap()
}

fn write_labels(dir: &Path, names: &[&str]) -> PathBuf {
    let path = dir.join(format!("labels-{}.txt", names.len()));
    std::fs::write(&path, names.join("\n") + "\n").unwrap();
    path
}

/// The one box the test graphs answer (class 1, `b`, centred, a quarter of the 64-pixel
/// input wide), mapped back onto a photograph of `width` x `height`.
fn assert_the_test_box(answer: &Value, width: f64, height: f64, what: &str) {
    assert_eq!(answer["count"], 1, "{what}: {answer}");
    let d = &answer["detections"][0];
    assert_eq!(d["class_id"], 1, "{what}: {answer}");
    assert_eq!(d["class_name"], "b", "{what}: the label comes from the model's metadata: {answer}");
    let confidence = d["confidence"].as_f64().unwrap();
    assert!((confidence - 0.72).abs() < 1e-3, "{what}: 0.9 x 0.8: {answer}");
    let b: Vec<f64> = d["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    // The letterbox into the 64 x 64 input: sizes rounded half up, the odd pixel below/right.
    let scale = (64.0 / width).min(64.0 / height);
    let padding = |side: f64| ((64.0 - (side * scale + 0.5).floor()) / 2.0).floor();
    let (cx, cy) = ((32.0 - padding(width)) / scale, (32.0 - padding(height)) / scale);
    let centre = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    assert!((centre.0 - cx).abs() < 0.5 && (centre.1 - cy).abs() < 0.5, "{what}: centred at {cx}, {cy}: {answer}");
    let side = 16.0 / scale;
    assert!(((b[2] - b[0]) - side).abs() < 0.5 && ((b[3] - b[1]) - side).abs() < 0.5, "{what}: {side} wide: {answer}");
}

#[test]
fn both_layouts_and_the_default_model_import_and_serve() {
    let work = temp_dir("exports");
    let dir = temp_dir("models");
    let (v5, v8) = (work.join("tiny-v5.onnx"), work.join("yolov8-tiny.onnx"));
    make_onnx(&v5, &["--layout", "yolov5", "--ultralytics"]);
    make_onnx(&v8, &["--layout", "yolov8", "--ultralytics"]);

    let (ok, out, err) = import(&v5, &dir, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("yolov5") && out.contains("tiny-v5"), "the name defaults to the file's stem: {out}");
    let (ok, out, err) = import(&v8, &dir, &["--name", "v8"]);
    assert!(ok, "{err}");
    assert!(out.contains("[1, 6, 84]"), "{out}");

    let m5 = metadata(&dir.join("tiny-v5"));
    assert_eq!(m5["name"], "tiny-v5");
    assert_eq!(m5["format"], "onnx");
    assert_eq!(m5["input"]["name"], "images");
    assert_eq!((m5["input"]["width"].as_u64(), m5["input"]["height"].as_u64()), (Some(64), Some(64)));
    assert_eq!(m5["output"]["name"], "output0");
    assert_eq!(m5["output"]["layout"], "yolov5");
    assert_eq!(m5["output"]["classes"], 2);
    assert_eq!(m5["output"]["boxes"], 252);
    assert_eq!(m5["labels"], "labels.txt");
    assert_eq!(m5["letterbox"]["color"], serde_json::json!([114, 114, 114]));
    let m8 = metadata(&dir.join("v8"));
    assert_eq!(m8["output"]["layout"], "yolov8");
    assert_eq!(m8["output"]["classes"], 2);
    assert_eq!(m8["output"]["boxes"], 84);
    assert_eq!(m8["source"]["metadata_props"]["task"], "detect");
    for model in ["tiny-v5", "v8"] {
        assert_eq!(std::fs::read_to_string(dir.join(model).join("labels.txt")).unwrap(), "a\nb\n");
        assert!(dir.join(model).join("model.onnx").is_file());
    }

    // The default model, re-imported from its ONNX file: no metadata_props, a static input.
    let original = models().join("yolov3-tiny");
    let labels = original.join("labels.txt");
    let (ok, out, err) = import(
        &original.join("model.onnx"),
        &dir,
        &["--name", "coco", "--labels", labels.to_str().unwrap(), "--input-size", "416"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("[1, 2535, 85]") && out.contains("80 classes"), "{out}");
    let coco = metadata(&dir.join("coco"));
    assert_eq!(coco["output"]["layout"], "yolov5");
    assert_eq!(coco["input"]["width"], 416);
    let (ok, _, err) = import(&original.join("model.onnx"), &dir, &["--name", "nolabels"]);
    assert!(!ok && err.contains("--labels"), "the model has no names: ask for --labels: {err}");

    let host = Host::start_with_models(&dir, &["--default-model", "coco"]).expect("serve the imported models");
    let health = host.get("/healthz").json();
    assert_eq!(health["models"], serde_json::json!(["coco", "tiny-v5", "v8"]), "{health}");
    let coffee = photo_bytes("coffee.png");
    for model in ["tiny-v5", "v8"] {
        let r = host.detect_raw("image/png", &coffee, &format!("model={model}"));
        assert_eq!(r.status, 200, "{r:?}");
        let answer = r.json();
        assert_eq!(answer["model"], model);
        assert_the_test_box(&answer, 600.0, 400.0, model);
    }
    let r = host.detect_raw("image/png", &coffee, "");
    assert_eq!(r.status, 200, "{r:?}");
    let answer = r.json();
    assert_eq!(answer["model"], "coco");
    let names: Vec<&str> =
        answer["detections"].as_array().unwrap().iter().map(|d| d["class_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cup"], "the re-imported default model finds the cup: {answer}");
    let cup = &answer["detections"][0];
    assert!((cup["confidence"].as_f64().unwrap() - 0.5956).abs() < 0.01, "{answer}");
    let _ = std::fs::remove_dir_all(work);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_dynamic_input_needs_a_size() {
    let work = temp_dir("exports");
    let dir = temp_dir("models");
    let model = work.join("dynamic.onnx");
    make_onnx(&model, &["--layout", "yolov8", "--dynamic"]);
    let labels = write_labels(&work, &["a", "b"]);
    let labels = labels.to_str().unwrap();
    let (ok, _, err) = import(&model, &dir, &["--labels", labels]);
    assert!(!ok);
    assert!(err.contains("dynamic") && err.contains("--input-size"), "{err}");
    assert!(!dir.join("dynamic").exists(), "nothing written");

    let (ok, _, err) = import(&model, &dir, &["--labels", labels, "--input-size", "64"]);
    assert!(ok, "{err}");
    let meta = metadata(&dir.join("dynamic"));
    assert_eq!((meta["input"]["width"].as_u64(), meta["input"]["height"].as_u64()), (Some(64), Some(64)));
    assert_eq!(meta["output"]["layout"], "yolov8");

    // A fixed input cannot be resized.
    let fixed = work.join("fixed.onnx");
    make_onnx(&fixed, &["--layout", "yolov5", "--ultralytics"]);
    let (ok, _, err) = import(&fixed, &dir, &["--input-size", "640"]);
    assert!(!ok && err.contains("fixed") && err.contains("64"), "{err}");
    let _ = std::fs::remove_dir_all(work);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_model_that_does_not_detect_is_refused() {
    let work = temp_dir("exports");
    let dir = temp_dir("models");
    let labels = write_labels(&work, &["a", "b"]);
    let labels = labels.to_str().unwrap();

    // An Ultralytics classifier says so in its metadata.
    let classifier = work.join("classifier.onnx");
    make_onnx(&classifier, &["--layout", "classify", "--ultralytics"]);
    let (ok, _, err) = import(&classifier, &dir, &[]);
    assert!(!ok);
    assert!(err.contains("classify") && err.contains("detection"), "{err}");

    // Without metadata, its output shape gives it away.
    let plain = work.join("plain.onnx");
    make_onnx(&plain, &["--layout", "classify"]);
    let (ok, _, err) = import(&plain, &dir, &["--labels", labels]);
    assert!(!ok);
    assert!(err.contains("[1, 1000]") && err.contains("not a YOLO detection"), "{err}");

    // A detection layout whose metadata names another task.
    let segment = work.join("segment.onnx");
    make_onnx(&segment, &["--layout", "yolov8", "--ultralytics", "--task", "segment"]);
    let (ok, _, err) = import(&segment, &dir, &[]);
    assert!(!ok && err.contains("segment"), "{err}");

    // Not ONNX at all.
    let (ok, _, err) = import(&photo("coffee.png"), &dir, &["--labels", labels]);
    assert!(!ok && err.contains("not an ONNX model"), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing written");
    let _ = std::fs::remove_dir_all(work);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn labels_must_match_the_class_count() {
    let work = temp_dir("exports");
    let dir = temp_dir("models");
    let model = work.join("m.onnx");
    make_onnx(&model, &["--layout", "yolov8", "--ultralytics"]);
    let three = write_labels(&work, &["a", "b", "c"]);
    let (ok, _, err) = import(&model, &dir, &["--labels", three.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("class count mismatch") && err.contains("2 classes") && err.contains("3 names"), "{err}");
    assert!(!dir.join("m").exists(), "nothing written");

    let v5 = work.join("v5.onnx");
    make_onnx(&v5, &["--layout", "yolov5", "--classes", "3", "--ultralytics"]);
    let two = write_labels(&work, &["a", "b"]);
    let (ok, _, err) = import(&v5, &dir, &["--labels", two.to_str().unwrap()]);
    assert!(!ok && err.contains("5 + C = 8") && err.contains("2 names"), "{err}");

    // Labels override the metadata's names; an existing model is replaced only with --force.
    let (ok, _, err) = import(&v5, &dir, &["--labels", three.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) = import(&v5, &dir, &[]);
    assert!(!ok && err.contains("already exists") && err.contains("--force"), "{err}");
    let (ok, _, err) = import(&v5, &dir, &["--force"]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(dir.join("v5/labels.txt")).unwrap(), "a\nb\nc\n");
    let (ok, _, err) = import(&v5, &dir, &["--name", "../escape"]);
    assert!(!ok && err.contains("--name"), "{err}");
    let _ = std::fs::remove_dir_all(work);
    let _ = std::fs::remove_dir_all(dir);
}
