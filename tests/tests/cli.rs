//! The host's command line fails with one clear sentence when something is missing.

use std::process::Command;

use yolo_edge_tests::{component, host_binary, models, repo};

fn serve(args: &[&str]) -> (bool, String) {
    let out = Command::new(host_binary())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run yolo-edge");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_missing_component_is_named() {
    let (ok, err) = serve(&["--component", "/nonexistent/function.wasm", "--models", models().to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/function.wasm"), "{err}");
    assert!(err.contains("cargo xtask run"), "says what to do: {err}");
}

#[test]
fn a_missing_or_empty_models_directory_is_named() {
    let c = component();
    let (ok, err) = serve(&["--component", c.to_str().unwrap(), "--models", "/nonexistent-models"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent-models"), "{err}");

    let empty = std::env::temp_dir().join(format!("yolo-edge-empty-models-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, err) = serve(&["--component", c.to_str().unwrap(), "--models", empty.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("no model found"), "{err}");
    let _ = std::fs::remove_dir_all(empty);
}

#[test]
fn an_unknown_default_model_is_refused() {
    let c = component();
    let (ok, err) = serve(&[
        "--component",
        c.to_str().unwrap(),
        "--models",
        models().to_str().unwrap(),
        "--default-model",
        "yolov99",
    ]);
    assert!(!ok);
    assert!(err.contains("yolov99") && err.contains("yolov3-tiny"), "{err}");
}

#[test]
fn help_lists_serve() {
    let out = Command::new(host_binary()).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("serve"));
}

#[test]
fn a_gpu_model_without_gpu_support_is_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("yolo-edge-gpu-models-{}", std::process::id()));
    let real = models().join("yolov3-tiny");
    let gpu = dir.join("yolov3-tiny");
    std::fs::create_dir_all(&gpu).unwrap();
    std::os::unix::fs::symlink(real.join("model.onnx"), gpu.join("model.onnx")).unwrap();
    std::fs::copy(real.join("labels.txt"), gpu.join("labels.txt")).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(real.join("metadata.json")).unwrap()).unwrap();
    meta["target"] = serde_json::json!("gpu");
    std::fs::write(gpu.join("metadata.json"), meta.to_string()).unwrap();
    let c = component();
    let (ok, err) = serve(&["--component", c.to_str().unwrap(), "--models", dir.to_str().unwrap()]);
    assert!(!ok, "never a silent fallback to the CPU");
    assert!(err.contains("gpu") && err.contains("cuda"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
