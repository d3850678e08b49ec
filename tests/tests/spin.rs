//! The Spin path: the function composed with the pure-Wasm wasi-nn provider (baked with the
//! default model by `yolo-edge bake`), `yolo-edge up` on the repository's `spin.toml`, and the
//! SpinKube manifest.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use yolo_edge_tests::{
    Host, Tolerance, assert_matches_reference, cli, create_key, fresh_data_dir, models, photo_bytes, reference, repo,
};

/// The provider `cargo xtask setup` baked with yolov3-tiny (what `spin.toml` names).
const BAKED: &str = "target/wasm32-wasip2/wasm/provider-yolov3-tiny.wasm";

/// The provider as built, with no model baked in.
const UNBAKED: &str = "target/wasm32-wasip2/wasm/yolo_edge_nn_provider.wasm";

/// `yolo-edge compose` of the function with `provider` (none: the default, the baked one).
fn compose(provider: Option<&str>, tag: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("yolo-edge-composed-{tag}-{}.wasm", std::process::id()));
    let mut args = vec!["compose", "--output", out.to_str().unwrap()];
    if let Some(p) = provider {
        args.extend(["--provider", p]);
    }
    let (ok, stdout, err) = cli(&fresh_data_dir(), &args);
    assert!(ok, "compose failed: {err}");
    assert!(stdout.contains(&format!("with wasi:nn from {}", provider.unwrap_or(BAKED))), "{stdout}");
    out
}

/// The function composed with the baked provider by `yolo-edge compose`, once per test binary.
fn composed() -> &'static PathBuf {
    static COMPOSED: OnceLock<PathBuf> = OnceLock::new();
    COMPOSED.get_or_init(|| compose(None, "baked"))
}

/// A models directory holding `yolov3-tiny`'s metadata and labels (what the function reads)
/// but not its `model.onnx`, plus `dirs` more: (name, whether it has the real model.onnx).
fn models_without_the_baked_onnx(tag: &str, dirs: &[(&str, bool)]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("yolo-edge-{tag}-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let real = models().join("yolov3-tiny");
    for (name, with_onnx) in [("yolov3-tiny", false)].iter().chain(dirs) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let mut meta: Value = serde_json::from_slice(&std::fs::read(real.join("metadata.json")).unwrap()).unwrap();
        meta["name"] = Value::String((*name).into());
        std::fs::write(d.join("metadata.json"), meta.to_string()).unwrap();
        std::fs::copy(real.join("labels.txt"), d.join("labels.txt")).unwrap();
        if *with_onnx && std::fs::hard_link(real.join("model.onnx"), d.join("model.onnx")).is_err() {
            std::fs::copy(real.join("model.onnx"), d.join("model.onnx")).unwrap();
        }
    }
    root
}

/// Start `yolo-edge up spin.toml` with extra flags.
fn up(extra: &[&str]) -> Host {
    let mut args = vec!["up", "spin.toml"];
    args.extend_from_slice(extra);
    Host::start_command(&args, &fresh_data_dir()).unwrap()
}

#[test]
fn the_composed_component_detects_like_the_native_host_without_host_wasi_nn() {
    let composed = composed();
    let host =
        Host::start_full(composed, &models(), &fresh_data_dir(), &["--wasi-nn", "none", "--timeout-ms", "120000"])
            .unwrap();
    let native = Host::shared();
    let expected = reference(&["coffee.png", "grace_hopper.png"], &[]);
    for name in ["coffee.png", "grace_hopper.png"] {
        let r = host.detect_raw("image/png", &photo_bytes(name), "");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-nn-us"), Some("0"), "no host wasi-nn: inference runs inside Wasm");
        let ours = r.json();
        // tract and ONNX Runtime agree to ~1e-4; answers are rounded to 4 decimals.
        assert_matches_reference(&ours, &expected[name], Tolerance::LOSSLESS, 0.25, name);
        let nat = native.detect_raw("image/png", &photo_bytes(name), "").json();
        assert_matches_reference(&ours, &nat, Tolerance { conf: 0.001, px: 0.5 }, 0.25, name);
    }
}

#[test]
fn the_baked_model_is_in_the_snapshot_and_other_models_still_load_from_models() {
    // yolov3-tiny has no model.onnx here: only the snapshot can answer for it. `copy` is the
    // same model under another name, which the baked provider has to read from /models.
    let dir = models_without_the_baked_onnx("baked", &[("copy", true)]);
    let host = Host::start_full(composed(), &dir, &fresh_data_dir(), &["--wasi-nn", "none", "--timeout-ms", "120000"])
        .unwrap();
    let png = photo_bytes("coffee.png");
    let baked = host.detect_raw("image/png", &png, "");
    assert_eq!(baked.status, 200, "the baked model needs no model.onnx: {baked:?}");
    assert_eq!(baked.json()["model"], "yolov3-tiny");
    let cup = &baked.json()["detections"][0];
    assert_eq!(cup["class_name"], "cup");
    assert!((cup["confidence"].as_f64().unwrap() - 0.5956).abs() < 0.001, "{cup}");
    let loaded = host.detect_raw("image/png", &png, "model=copy");
    assert_eq!(loaded.status, 200, "{loaded:?}");
    assert_eq!(loaded.json()["detections"], baked.json()["detections"], "the same model, loaded from /models");
    // A later request of the baked model is served from the snapshot again (the instance is new).
    assert_eq!(host.detect_raw("image/png", &png, "").json()["detections"], baked.json()["detections"]);

    // The provider as built has nothing baked in: for it, the same directory lacks the model.
    let unbaked = compose(Some(UNBAKED), "unbaked");
    let host = Host::start_full(&unbaked, &dir, &fresh_data_dir(), &["--wasi-nn", "none"]).unwrap();
    let missing = host.detect_raw("image/png", &png, "");
    missing.assert_error(404, "model_not_found");
    assert!(missing.json()["error"]["message"].as_str().unwrap().contains("model.onnx"), "{missing:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bake_refuses_a_model_it_cannot_find() {
    let out = std::env::temp_dir().join(format!("yolo-edge-bake-none-{}.wasm", std::process::id()));
    let (ok, _, err) = cli(&fresh_data_dir(), &["bake", "--model", "no-such-model", "--output", out.to_str().unwrap()]);
    assert!(!ok, "bake of a missing model succeeded");
    assert!(err.contains("no-such-model/model.onnx"), "names what is missing: {err}");
    assert!(!out.exists(), "nothing written");
}

#[test]
fn without_any_wasi_nn_the_plain_function_is_refused_like_stock_spin() {
    let out = std::process::Command::new(yolo_edge_tests::host_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--wasi-nn", "none", "--data-dir"])
        .arg(fresh_data_dir())
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wasi:nn"), "names the missing import: {err}");
}

#[test]
fn provider_errors_are_the_functions_json_errors() {
    let dir = std::env::temp_dir().join(format!("yolo-edge-provider-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let real = models().join("yolov3-tiny");
    for (name, model) in [("no-graph", None), ("garbage", Some(b"this is not an ONNX model".to_vec()))] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let mut meta: Value = serde_json::from_slice(&std::fs::read(real.join("metadata.json")).unwrap()).unwrap();
        meta["name"] = Value::String(name.into());
        std::fs::write(d.join("metadata.json"), meta.to_string()).unwrap();
        std::fs::copy(real.join("labels.txt"), d.join("labels.txt")).unwrap();
        if let Some(bytes) = model {
            std::fs::write(d.join("model.onnx"), bytes).unwrap();
        }
    }
    let host = Host::start_full(composed(), &dir, &fresh_data_dir(), &["--wasi-nn", "none"]).unwrap();
    let png = photo_bytes("coffee.png");
    let missing = host.detect_raw("image/png", &png, "model=no-graph");
    missing.assert_error(404, "model_not_found");
    assert!(missing.json()["error"]["message"].as_str().unwrap().contains("model.onnx"), "{missing:?}");
    let garbage = host.detect_raw("image/png", &png, "model=garbage");
    garbage.assert_error(500, "inference_failed");
    assert!(
        garbage.json()["error"]["message"].as_str().unwrap().contains("tract"),
        "the provider's words: {garbage:?}"
    );
    assert!(host.healthy());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn up_serves_the_manifest_and_meters_it() {
    let host = up(&[]);
    assert!(host.healthy(), "GET /healthz is routed to the component");
    let r = host.detect_raw("image/png", &photo_bytes("coffee.png"), "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["detections"][0]["class_name"], "cup");
    assert!(r.header_u64("x-nn-us") > 0, "native wasi-nn");
    assert!(r.header_u64("x-tokens") >= 1000, "billed");
    let row = host.get(&format!("/v1/invocations/{}", r.header("x-invocation-id").unwrap()));
    assert_eq!(row.status, 200);
    assert_eq!(row.json()["route"], "POST /detect");
    host.post_with("/detect", Some("image/png"), b"x", &[]).assert_error(401, "unauthorized");
}

#[test]
fn up_can_use_the_declared_provider_instead() {
    let host = up(&["--nn-provider", "component", "--timeout-ms", "120000"]);
    let key = create_key(&host.data_dir, "spin", 1_000_000);
    let r = host.post_with(
        "/detect",
        Some("image/png"),
        &photo_bytes("coffee.png"),
        &[("authorization", &format!("Bearer {key}"))],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-nn-us"), Some("0"), "the provider component inferred, not the host");
    assert!(host.log().contains("provider-yolov3-tiny.wasm"), "spin.toml names the baked provider");
    let cup = &r.json()["detections"][0];
    assert_eq!(cup["class_name"], "cup");
    assert!((cup["confidence"].as_f64().unwrap() - 0.5956).abs() < 0.001);
}

#[test]
fn the_spinkube_manifest_has_the_spinapp_shape() {
    let text = std::fs::read_to_string(repo().join("deploy/spinkube/spinapp.yaml")).unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(v["apiVersion"].as_str(), Some("core.spinkube.dev/v1alpha1"));
    assert_eq!(v["kind"].as_str(), Some("SpinApp"));
    assert_eq!(v["metadata"]["name"].as_str(), Some("yolo-edge"));
    assert!(v["spec"]["image"].as_str().is_some_and(|i| i.contains(':')), "an OCI reference with a tag");
    assert_eq!(v["spec"]["executor"].as_str(), Some("containerd-shim-spin"));
    assert!(v["spec"]["replicas"].as_u64().is_some_and(|r| r >= 1));
}
