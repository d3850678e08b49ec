//! The shape of `deploy/`: the container image (`deploy/Containerfile`) and the Kubernetes
//! manifests (`deploy/k8s/`), held against each other, against the real binary's command
//! line (`serve --help`, and the exact arguments parsed by it) and against the real server
//! (every probe path is asked of a running host, without a key).

mod binary;
mod containerfile;
mod k8s;

use std::collections::{BTreeMap, BTreeSet};

use binary::*;
use containerfile::*;
use k8s::*;
use serde_yaml_ng::Value;
use yolo_edge_tests::{Host, repo};

#[test]
fn every_manifest_parses_names_itself_and_is_applied() {
    let listed: BTreeSet<String> = resources().into_iter().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(k8s())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| (n.ends_with(".yaml") || n.ends_with(".yml")) && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, on_disk, "kustomization.yaml must list exactly the manifests in deploy/k8s");
    let mut seen = BTreeSet::new();
    for (file, doc) in manifests() {
        for field in ["apiVersion", "kind"] {
            assert!(doc[field].as_str().is_some_and(|s| !s.is_empty()), "{file}: a document without {field}");
        }
        let name =
            doc["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{file}: a document without metadata.name"));
        let kind = doc["kind"].as_str().unwrap();
        assert!(seen.insert((kind.to_owned(), name.to_owned())), "{file}: a second {kind} {name}");
    }
    assert_eq!(kustomization()["kind"].as_str(), Some("Kustomization"));
    for kind in ["Deployment", "Service", "Secret", "StatefulSet"] {
        assert!(of_kind(kind).next().is_some(), "deploy/k8s has no {kind}");
    }
    if let Some(namespace) = kustomization()["namespace"].as_str() {
        find("Namespace", namespace);
    }
}

#[test]
fn the_containerfile_and_the_deployment_pass_only_flags_and_variables_the_binary_accepts() {
    let (_, container) = server();
    let image_cmd = exec_form("CMD");
    let deployment_args = strings(&container["args"]);
    assert_eq!(exec_form("ENTRYPOINT"), ["yolo-edge"], "the image's entry point is the binary");
    assert!(container["command"].is_null(), "the Deployment keeps the image's entry point (no `command`)");
    for (what, args) in [("the Containerfile's CMD", &image_cmd), ("the Deployment's args", &deployment_args)] {
        assert_eq!(args.first().map(String::as_str), Some("serve"), "{what} runs `serve`");
        let unknown: Vec<&str> = args
            .iter()
            .filter(|a| a.starts_with("--"))
            .map(|a| a.split('=').next().unwrap())
            .filter(|flag| !accepts_flag(flag))
            .collect();
        assert!(unknown.is_empty(), "{what} passes {unknown:?}, which `yolo-edge serve --help` does not list");
        parses(args).unwrap_or_else(|e| panic!("`yolo-edge {}` does not parse: {e}", args.join(" ")));
    }
    // The Deployment runs what the image runs (it may add flags, never change one).
    for (i, arg) in image_cmd.iter().enumerate().filter(|(_, a)| a.starts_with("--")) {
        let value = image_cmd.get(i + 1).filter(|v| !v.starts_with("--"));
        assert_eq!(
            flag_value(&deployment_args, arg).map(str::to_owned).as_ref(),
            value,
            "the Deployment's {arg} differs from the image's CMD"
        );
    }
    let deployment_env: Vec<String> =
        container["env"].as_sequence().map(|e| e.iter().map(|v| str_of(&v["name"])).collect()).unwrap_or_default();
    let image_env: Vec<String> = image_env().into_keys().collect();
    for name in deployment_env.iter().chain(&image_env).filter(|n| n.starts_with("YOLO_EDGE_")) {
        assert!(reads_env(name), "{name} is set, but `yolo-edge serve --help` names no such variable");
    }
    // The shared state comes from the Secret, through the variables, not from flags (a flag's
    // value would show the password in the pod spec and in `ps`).
    for name in ["YOLO_EDGE_DATABASE_URL", "YOLO_EDGE_REDIS_URL"] {
        assert!(deployment_env.contains(&name.to_owned()), "the Deployment does not set {name}");
    }
    for flag in ["--database-url", "--redis-url"] {
        assert!(flag_value(&deployment_args, flag).is_none(), "{flag} belongs in the Secret");
    }
}

#[test]
fn the_probes_and_the_healthcheck_ask_what_a_running_host_answers_without_a_key() {
    let (deployment, container) = server();
    let mut paths = BTreeSet::new();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        let path = get["path"].as_str().unwrap_or_else(|| panic!("the {probe} is not an httpGet"));
        paths.insert(path.to_owned());
    }
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    if let Some(metrics) = annotations["prometheus.io/path"].as_str() {
        paths.insert(metrics.to_owned());
    }
    let check = healthcheck();
    let url = check.iter().find(|a| a.starts_with("http://")).expect("the HEALTHCHECK asks a URL");
    let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).expect("a path in the HEALTHCHECK URL");
    paths.insert(path);
    let host = Host::start(&[]).expect("start the host");
    for path in &paths {
        let reply = host.get_with(path, &[]);
        assert_eq!(reply.status, 200, "GET {path} without a key");
    }
}

#[test]
fn ports_line_up_from_listen_to_service() {
    let (deployment, container) = server();
    let ports = container["ports"].as_sequence().expect("container ports");
    let http = ports.iter().find(|p| p["name"].as_str() == Some("http")).expect("a port named http");
    let port = http["containerPort"].as_u64().expect("containerPort") as u16;
    assert_eq!(listen_port(&strings(&container["args"]), "the Deployment"), port, "--listen vs containerPort");
    assert_eq!(listen_port(&exec_form("CMD"), "the Containerfile's CMD"), port, "the image's --listen");
    let exposed: Vec<u16> = instructions("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
        .collect();
    assert_eq!(exposed, [port], "EXPOSE");
    let check = healthcheck();
    let url = check.iter().find(|a| a.starts_with("http://")).expect("the HEALTHCHECK asks a URL");
    let authority = url.trim_start_matches("http://").split('/').next().unwrap();
    assert_eq!(authority.rsplit(':').next().and_then(|p| p.parse().ok()), Some(port), "the HEALTHCHECK's port");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let p = &container[probe]["httpGet"]["port"];
        assert!(p.as_str() == Some("http") || p.as_u64() == Some(u64::from(port)), "the {probe} asks port {p:?}");
    }
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    if let Some(scraped) = annotations["prometheus.io/port"].as_str() {
        assert_eq!(scraped.parse::<u16>().ok(), Some(port), "prometheus.io/port");
    }
    // Every Service selects the pods of a workload here, and its target ports are theirs.
    for service in of_kind("Service") {
        let name = service["metadata"]["name"].as_str().unwrap();
        let selector = labels(&service["spec"]["selector"]);
        let backends: Vec<&Value> =
            workloads().filter(|w| selects(&selector, &labels(&w["spec"]["template"]["metadata"]["labels"]))).collect();
        assert!(!backends.is_empty(), "Service {name} selects no pods of deploy/k8s");
        for backend in backends {
            let container_ports: Vec<&Value> = backend["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .unwrap()
                .iter()
                .flat_map(|c| c["ports"].as_sequence().into_iter().flatten())
                .collect();
            for sp in service["spec"]["ports"].as_sequence().expect("Service ports") {
                let target = if sp["targetPort"].is_null() { &sp["port"] } else { &sp["targetPort"] };
                let found = container_ports.iter().any(|cp| match target {
                    Value::String(n) => cp["name"].as_str() == Some(n),
                    other => cp["containerPort"].as_u64() == other.as_u64(),
                });
                assert!(found, "Service {name}'s targetPort {target:?} is no container port of its pods");
            }
        }
    }
    let service = find("Service", "yolo-edge");
    assert!(
        selects(&labels(&service["spec"]["selector"]), &labels(&deployment["spec"]["template"]["metadata"]["labels"])),
        "the yolo-edge Service selects the yolo-edge pods"
    );
}

#[test]
fn workloads_select_their_own_pods_and_the_servers_roll_and_drain_safely() {
    for workload in workloads() {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let selector = labels(&workload["spec"]["selector"]["matchLabels"]);
        let pod = labels(&workload["spec"]["template"]["metadata"]["labels"]);
        assert!(selects(&selector, &pod), "{name}: selector {selector:?} does not match its pod labels {pod:?}");
        if let Some(service) = workload["spec"]["serviceName"].as_str() {
            find("Service", service);
        }
    }
    for pdb in of_kind("PodDisruptionBudget") {
        let selector = labels(&pdb["spec"]["selector"]["matchLabels"]);
        assert!(
            workloads().any(|w| selects(&selector, &labels(&w["spec"]["template"]["metadata"]["labels"]))),
            "PodDisruptionBudget {} selects no pods",
            pdb["metadata"]["name"].as_str().unwrap()
        );
    }
    let (deployment, container) = server();
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().is_some_and(|r| r >= 2), "at least two hosts behind the Service");
    assert_eq!(spec["strategy"]["type"].as_str(), Some("RollingUpdate"));
    assert_eq!(
        spec["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0),
        "a rollout never takes a serving host away before its replacement is ready"
    );
    // Drain time: the Deployment's --drain-seconds, else the binary's default.
    let args = strings(&container["args"]);
    let drain: u64 = match flag_value(&args, "--drain-seconds") {
        Some(s) => s.parse().expect("--drain-seconds"),
        None => {
            let help = serve_help();
            let at = help.find("--drain-seconds").expect("serve --help lists --drain-seconds");
            let default = help[at..].split("[default: ").nth(1).expect("a default drain time");
            default[..default.find(']').unwrap()].parse().unwrap()
        }
    };
    let pre_stop: u64 = match strings(&container["lifecycle"]["preStop"]["exec"]["command"]).as_slice() {
        [sleep, seconds] if sleep == "sleep" => seconds.parse().expect("preStop sleep seconds"),
        [] => container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap_or(0),
        other => panic!("unexpected preStop {other:?}"),
    };
    let grace = spec["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(
        grace > pre_stop + drain,
        "terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s + the host's drain {drain} s, or \
         Kubernetes kills requests the host is still finishing"
    );
}

#[test]
fn every_secret_reference_exists_and_the_urls_name_services_here() {
    fn walk<'a>(v: &'a Value, found: &mut Vec<(&'a Value, Option<&'a Value>)>) {
        match v {
            Value::Mapping(m) => {
                for (k, child) in m {
                    match k.as_str() {
                        Some("secretKeyRef") => found.push((&child["name"], Some(&child["key"]))),
                        Some("secretRef") => found.push((&child["name"], None)),
                        _ => walk(child, found),
                    }
                }
            }
            Value::Sequence(s) => s.iter().for_each(|c| walk(c, found)),
            _ => {}
        }
    }
    let secret_keys = |name: &str| -> BTreeMap<String, Option<String>> {
        let secret = find("Secret", name);
        let plain = labels(&secret["stringData"]).into_iter().map(|(k, v)| (k, Some(v)));
        let encoded = labels(&secret["data"]).into_keys().map(|k| (k, None));
        plain.chain(encoded).collect()
    };
    let mut refs = Vec::new();
    for workload in workloads() {
        walk(&workload["spec"]["template"], &mut refs);
    }
    assert!(!refs.is_empty(), "the workloads take their credentials from a Secret");
    for (name, key) in refs {
        let name = name.as_str().expect("a Secret name");
        let keys = secret_keys(name);
        if let Some(key) = key {
            let key = key.as_str().expect("a Secret key");
            assert!(keys.contains_key(key), "Secret {name} has no key {key:?} (it has {:?})", keys.keys());
        }
    }
    // The server's URLs: the right scheme for each variable, and a bare host name is a Service
    // of these manifests that serves that port.
    let (_, container) = server();
    for env in container["env"].as_sequence().expect("env") {
        let var = str_of(&env["name"]);
        let schemes: &[&str] = match var.as_str() {
            "YOLO_EDGE_DATABASE_URL" => &["postgres://", "postgresql://"],
            "YOLO_EDGE_REDIS_URL" => &["redis://", "rediss://"],
            _ => continue,
        };
        let secret_ref = &env["valueFrom"]["secretKeyRef"];
        let value = secret_keys(secret_ref["name"].as_str().unwrap())[secret_ref["key"].as_str().unwrap()].clone();
        let url = value.unwrap_or_else(|| panic!("{var}: the example Secret holds it as stringData"));
        let scheme = schemes.iter().find(|s| url.starts_with(**s)).unwrap_or_else(|| panic!("{var}={url}"));
        let authority = url[scheme.len()..].split('/').next().unwrap();
        let host_port = authority.rsplit('@').next().unwrap();
        let (host, port) = host_port.rsplit_once(':').unwrap_or_else(|| panic!("{var}: give the port in {url}"));
        if !host.contains('.') {
            let service = find("Service", host);
            let served = service["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|p| p["port"].as_u64().map(|p| p.to_string()).as_deref() == Some(port));
            assert!(served, "{var} names {host}:{port}, which Service {host} does not serve");
        }
    }
}

#[test]
fn the_containerfile_builds_in_stages_and_runs_unprivileged() {
    let froms = instructions("FROM");
    assert!(froms.len() >= 2, "a builder stage and a runtime stage");
    let (builder_image, builder) =
        froms[0].split_once(" AS ").or_else(|| froms[0].split_once(" as ")).expect("FROM ... AS builder");
    let toolchain = std::fs::read_to_string(repo().join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .map(|c| c.trim_matches('"'))
        .expect("rust-toolchain.toml names its channel");
    let tag = builder_image.rsplit(':').next().unwrap();
    assert!(builder_image.contains("rust:"), "the builder is a Rust image: {builder_image}");
    assert!(
        tag.starts_with(channel) && tag.ends_with("bookworm"),
        "the builder {builder_image} is not Rust {channel} on bookworm"
    );
    let runtime = froms.last().unwrap();
    assert!(runtime.ends_with("debian:bookworm-slim"), "the runtime stage is Debian bookworm slim: {runtime}");
    let runs = instructions("RUN").join("\n");
    let dist = runs.split("cargo xtask dist ").nth(1).expect("the builder runs `cargo xtask dist DIR`");
    let dist_dir = dist.split_whitespace().next().unwrap();
    let copied = instructions("COPY")
        .into_iter()
        .find(|c| c.starts_with(&format!("--from={} ", builder.trim())))
        .expect("the runtime stage copies from the builder");
    assert!(copied.split_whitespace().nth(1) == Some(dist_dir), "it copies what `cargo xtask dist` laid out: {copied}");
    // The layout `cargo xtask dist` writes (xtask/src/dist.rs) is what the CMD names.
    let cmd = exec_form("CMD");
    for (flag, rel) in [("--component", "component/yolo_edge_function.wasm"), ("--models", "models")] {
        assert_eq!(flag_value(&cmd, flag), Some(format!("{dist_dir}/{rel}").as_str()), "the CMD's {flag}");
    }
    let xtask = std::fs::read_to_string(repo().join("xtask/src/dist.rs")).unwrap();
    for laid_out in ["\"bin/yolo-edge\"", "\"component/yolo_edge_function.wasm\"", "\"models/yolov3-tiny\""] {
        assert!(xtask.contains(laid_out), "`cargo xtask dist` no longer writes {laid_out}");
    }
    if let Some(config) = image_env().get("YOLO_EDGE_CONFIG") {
        assert_eq!(config, &format!("{dist_dir}/yolo-edge.toml"), "YOLO_EDGE_CONFIG is the laid-out price sheet");
    }
    // Not root, and the same numeric user the pods are told to run as.
    let user = instructions("USER");
    let user = user.last().expect("a USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "the image runs as root");
    let (deployment, _) = server();
    let pod_user = &deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"];
    assert_eq!(pod_user.as_u64().map(|u| u.to_string()).as_deref(), Some(uid), "runAsUser vs the image's USER");
    assert_eq!(deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert!(!instructions("HEALTHCHECK").is_empty() && !instructions("EXPOSE").is_empty());
    // The builder rebuilds everything: the context must not carry this machine's build.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let ignored: BTreeSet<&str> = ignore.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for path in ["target", ".cache"] {
        assert!(ignored.contains(path), ".dockerignore does not leave out {path}");
    }
}

#[test]
fn the_servers_resources_cover_the_measured_memory() {
    let bench: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("BENCHMARKS.json")).unwrap()).unwrap();
    let rss = bench["host"]["rss_mib"].as_f64().expect("BENCHMARKS.json host.rss_mib");
    let (_, container) = server();
    let resources = &container["resources"];
    let request = mib(&str_of(&resources["requests"]["memory"]));
    let limit = mib(&str_of(&resources["limits"]["memory"]));
    assert!(request >= rss, "memory request {request} MiB is below the measured {rss:.0} MiB resident");
    // The soak allows 25% growth after warm-up before it fails.
    assert!(limit >= rss * 1.25, "memory limit {limit} MiB leaves less than the soak's 25% over {rss:.0} MiB");
    assert!(!resources["requests"]["cpu"].is_null(), "a CPU request (inference sessions follow the cores)");
}
