//! Reading `deploy/k8s/`: every document `kubectl apply -k` applies, and the values of a
//! workload's containers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize as _;
// serde_yaml_ng: the maintained fork of the archived serde_yaml, already the tests' YAML parser.
use serde_yaml_ng::Value;
use yolo_edge_tests::repo;

pub(crate) fn k8s() -> PathBuf {
    repo().join("deploy/k8s")
}

/// Every document of a YAML file (empty documents, e.g. a trailing `---`, left out).
pub(crate) fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, doc)| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{} document {i} is not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

pub(crate) fn kustomization() -> Value {
    let mut docs = yaml_documents(&k8s().join("kustomization.yaml"));
    assert_eq!(docs.len(), 1, "kustomization.yaml is one document");
    docs.remove(0)
}

/// The resources kustomization.yaml lists, in order.
pub(crate) fn resources() -> Vec<String> {
    kustomization()["resources"]
        .as_sequence()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| r.as_str().expect("a resource is a file name").to_owned())
        .collect()
}

/// Every document `kubectl apply -k deploy/k8s` applies, with the file it is in.
pub(crate) fn manifests() -> &'static [(String, Value)] {
    static DOCS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        resources()
            .into_iter()
            .flat_map(|file| yaml_documents(&k8s().join(&file)).into_iter().map(move |d| (file.clone(), d)))
            .collect()
    })
}

pub(crate) fn of_kind(kind: &str) -> impl Iterator<Item = &'static Value> + '_ {
    manifests().iter().map(|(_, d)| d).filter(move |d| d["kind"].as_str() == Some(kind))
}

pub(crate) fn find(kind: &str, name: &str) -> &'static Value {
    of_kind(kind)
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("deploy/k8s has no {kind} {name:?}"))
}

pub(crate) fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a string or number, got {other:?}"),
    }
}

pub(crate) fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping().map(|m| m.iter().map(|(k, v)| (str_of(k), str_of(v))).collect()).unwrap_or_default()
}

/// Whether every label `selector` asks for is on `pod`.
pub(crate) fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// Deployments and StatefulSets.
pub(crate) fn workloads() -> impl Iterator<Item = &'static Value> {
    manifests().iter().map(|(_, d)| d).filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")))
}

/// The yolo-edge Deployment and its `yolo-edge` container.
pub(crate) fn server() -> (&'static Value, &'static Value) {
    let deployment = find("Deployment", "yolo-edge");
    let container = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("yolo-edge"))
        .expect("the Deployment has a container named yolo-edge");
    (deployment, container)
}

pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().map(str_of).collect()).unwrap_or_default()
}

/// The value of `--flag` in `args` (`--flag value` or `--flag=value`).
pub(crate) fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(flag).and_then(|rest| rest.strip_prefix('='))
        }
    })
}

pub(crate) fn listen_port(args: &[String], what: &str) -> u16 {
    let listen = flag_value(args, "--listen").unwrap_or_else(|| panic!("{what} passes no --listen"));
    let addr: SocketAddr = listen.parse().unwrap_or_else(|e| panic!("{what}: --listen {listen:?}: {e}"));
    assert!(addr.ip().is_unspecified(), "{what} listens on {addr}: only the container itself could reach it");
    addr.port()
}

/// A Kubernetes quantity in MiB (`768Mi`, `1Gi`, `512M`, plain bytes).
pub(crate) fn mib(q: &str) -> f64 {
    let units = [("Ki", 1.0 / 1024.0), ("Mi", 1.0), ("Gi", 1024.0), ("k", 1e3), ("M", 1e6), ("G", 1e9)];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            let n: f64 = n.parse().unwrap_or_else(|_| panic!("quantity {q:?}"));
            return if suffix.ends_with('i') { n * factor } else { n * factor / f64::from(1u32 << 20) };
        }
    }
    q.parse::<f64>().unwrap_or_else(|_| panic!("quantity {q:?}")) / f64::from(1u32 << 20)
}
