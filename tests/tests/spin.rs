//! The Spin path: the function composed with the pure-Wasm wasi-nn provider, `yolo-edge up`
//! on the repository's `spin.toml`, and the SpinKube manifest.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use yolo_edge_tests::{
    Host, Tolerance, assert_matches_reference, cli, create_key, fresh_data_dir, models, photo_bytes, reference, repo,
};

/// The function composed with the provider by `yolo-edge compose`, once per test binary.
fn composed() -> &'static PathBuf {
    static COMPOSED: OnceLock<PathBuf> = OnceLock::new();
    COMPOSED.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("yolo-edge-composed-{}.wasm", std::process::id()));
        let (ok, stdout, err) = cli(&fresh_data_dir(), &["compose", "--output", out.to_str().unwrap()]);
        assert!(ok, "compose failed: {err}");
        assert!(stdout.contains("with wasi:nn from"), "{stdout}");
        out
    })
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
