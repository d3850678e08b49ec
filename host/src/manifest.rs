//! A Spin application manifest (`spin.toml`, manifest version 2), as `yolo-edge up` reads it.
//!
//! Spin's own manifest crate is not published to a registry, so this follows Spin's v2
//! schema (`spin_manifest_version = 2`, `[application]`, `[variables]`, `[[trigger.http]]`,
//! `[component.<id>]` with `source`, `files`, `environment`, `variables`, `build`,
//! `dependencies`, `dependencies_inherit_configuration`, ...). Fields Spin defines that
//! `yolo-edge up` does not act on are accepted and reported; fields Spin does not define
//! are errors, as in Spin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The whole manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must be 2.
    pub spin_manifest_version: u32,
    /// `[application]`.
    pub application: Application,
    /// `[variables]`: application variables (with a default, or required).
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    /// `[[trigger.*]]`.
    #[serde(default)]
    pub trigger: Triggers,
    /// `[component.<id>]`.
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
}

/// `[application]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// Name.
    pub name: String,
    /// Version.
    #[serde(default)]
    pub version: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Authors.
    #[serde(default)]
    pub authors: Vec<String>,
    /// Application-level trigger settings (e.g. `[application.trigger.http] base = "/"`).
    #[serde(default)]
    pub trigger: Option<toml::Value>,
}

/// An application variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// Default value.
    #[serde(default)]
    pub default: Option<String>,
    /// Must be supplied (`SPIN_VARIABLE_<NAME>`).
    #[serde(default)]
    pub required: bool,
    /// Not to be logged.
    #[serde(default)]
    pub secret: bool,
}

/// `[[trigger.http]]` and the others.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Triggers {
    /// HTTP triggers.
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
    /// Any other trigger type (Redis, cron, ...): reported as unsupported.
    #[serde(flatten)]
    pub other: BTreeMap<String, toml::Value>,
}

/// One HTTP trigger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    /// `"/path"`, `"/prefix/..."`, or `{ private = true }`.
    pub route: Route,
    /// The component id.
    pub component: String,
    /// Executor settings (only the default Spin executor is supported).
    #[serde(default)]
    pub executor: Option<toml::Value>,
    /// Trigger id.
    #[serde(default)]
    pub id: Option<String>,
}

/// A route.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Route {
    /// A path or a wildcard prefix.
    Path(String),
    /// `{ private = true }`: reachable only by other components.
    Private {
        /// Must be true.
        private: bool,
    },
}

/// `[component.<id>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// The Wasm file (a path; a `{ url, digest }` table is not supported offline).
    pub source: Source,
    /// Files to mount.
    #[serde(default)]
    pub files: Vec<FileMount>,
    /// Files excluded from the mounts.
    #[serde(default)]
    pub exclude_files: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Component variables (templates over application variables).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Outbound hosts (outgoing HTTP is refused by yolo-edge).
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Key-value stores (not provided by yolo-edge).
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    /// SQLite databases (not provided by yolo-edge).
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    /// AI models (not provided by yolo-edge).
    #[serde(default)]
    pub ai_models: Vec<String>,
    /// `spin build` settings.
    #[serde(default)]
    pub build: Option<Build>,
    /// Imports satisfied by other components.
    #[serde(default)]
    pub dependencies: BTreeMap<String, Dependency>,
    /// Whether dependencies see this component's configuration (files, environment, ...).
    #[serde(default)]
    pub dependencies_inherit_configuration: bool,
    /// Tool-specific settings.
    #[serde(default)]
    pub tool: Option<toml::Value>,
}

/// A component's Wasm source.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// A local file.
    Path(String),
    /// A remote file (needs the network: not supported by `yolo-edge up`).
    Remote {
        /// URL.
        url: String,
        /// Digest.
        digest: String,
    },
}

/// A `files` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileMount {
    /// A path (or glob) mounted at the same relative path.
    Pattern(String),
    /// A directory mounted at a destination.
    Placement {
        /// Directory in the application.
        source: String,
        /// Path inside the component.
        destination: String,
    },
}

/// `[component.<id>.build]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// The build command.
    pub command: String,
    /// Working directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Files to watch for `spin watch`.
    #[serde(default)]
    pub watch: Vec<String>,
}

/// A dependency: a local component, or a registry package.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Dependency {
    /// `{ path = "x.wasm" }` (optionally `export`).
    Local {
        /// The component file.
        path: String,
        /// Which export satisfies the import.
        #[serde(default)]
        export: Option<String>,
    },
    /// `{ url = ..., digest = ... }`.
    Http {
        /// URL.
        url: String,
        /// Digest.
        digest: String,
    },
    /// `"1.0.0"` or `{ version, registry, package }`.
    Package(toml::Value),
}

/// A component ready to serve: resolved paths and settings.
#[derive(Debug, Clone)]
pub struct ResolvedComponent {
    /// Id in the manifest.
    pub id: String,
    /// The Wasm file.
    pub source: PathBuf,
    /// `(host directory, guest path)` mounts, read-only.
    pub mounts: Vec<(PathBuf, String)>,
    /// Environment.
    pub environment: Vec<(String, String)>,
    /// Resolved component variables.
    pub variables: BTreeMap<String, String>,
    /// Local dependency components by import name.
    pub dependencies: Vec<(String, PathBuf)>,
}

/// An HTTP route and the component behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The route as written (`/detect`, `/...`, `/api/...`).
    pub route: String,
    /// Component id.
    pub component: String,
}

impl Manifest {
    /// Read and check a manifest file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{} is not a valid Spin manifest", path.display()))
    }

    /// Parse and check manifest text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let m: Self = toml::from_str(text)?;
        if m.spin_manifest_version != 2 {
            bail!("spin_manifest_version must be 2 (got {})", m.spin_manifest_version);
        }
        if let Some(kind) = m.trigger.other.keys().next() {
            bail!("trigger type {kind:?} is not supported: yolo-edge up serves HTTP triggers");
        }
        for t in &m.trigger.http {
            if !m.component.contains_key(&t.component) {
                bail!("trigger route {:?} names component {:?}, which is not defined", t.route, t.component);
            }
            if let Route::Path(p) = &t.route
                && !p.starts_with('/')
            {
                bail!("route {p:?} must start with '/'");
            }
        }
        Ok(m)
    }

    /// The public HTTP routes, most specific first (exact paths, then longer prefixes).
    pub fn routes(&self) -> Vec<RouteSpec> {
        let mut routes: Vec<RouteSpec> = self
            .trigger
            .http
            .iter()
            .filter_map(|t| match &t.route {
                Route::Path(p) => Some(RouteSpec { route: p.clone(), component: t.component.clone() }),
                Route::Private { .. } => None,
            })
            .collect();
        routes.sort_by_key(|r| (r.route.ends_with("/..."), std::cmp::Reverse(r.route.len())));
        routes
    }

    /// Resolve a component's paths (relative to `base`, the manifest's directory), mounts,
    /// environment and variables.
    pub fn resolve(&self, id: &str, base: &Path) -> anyhow::Result<ResolvedComponent> {
        let c = self.component.get(id).with_context(|| format!("no component {id:?}"))?;
        let source = match &c.source {
            Source::Path(p) => base.join(p),
            Source::Remote { url, .. } => bail!("component {id:?}: remote sources ({url}) are not supported offline"),
        };
        let mut mounts = Vec::new();
        for f in &c.files {
            match f {
                FileMount::Placement { source, destination } => mounts.push((base.join(source), destination.clone())),
                FileMount::Pattern(p) if !p.contains(['*', '?', '[']) => {
                    mounts.push((base.join(p), format!("/{}", p.trim_start_matches("./"))))
                }
                FileMount::Pattern(p) => {
                    bail!("component {id:?}: glob file patterns ({p:?}) are not supported; mount a directory")
                }
            }
        }
        let mut ignored = Vec::new();
        if !c.key_value_stores.is_empty() {
            ignored.push("key_value_stores");
        }
        if !c.sqlite_databases.is_empty() {
            ignored.push("sqlite_databases");
        }
        if !c.ai_models.is_empty() {
            ignored.push("ai_models");
        }
        if !c.exclude_files.is_empty() {
            ignored.push("exclude_files");
        }
        if !ignored.is_empty() {
            tracing::warn!(component = id, settings = ?ignored, "these Spin settings are not provided by yolo-edge up");
        }
        let mut variables = BTreeMap::new();
        for (name, template) in &c.variables {
            variables.insert(name.clone(), self.expand(template)?);
        }
        let mut dependencies = Vec::new();
        for (import, dep) in &c.dependencies {
            match dep {
                Dependency::Local { path, .. } => dependencies.push((import.clone(), base.join(path))),
                _ => bail!("component {id:?}: dependency {import:?} is not a local component (`path`)"),
            }
        }
        Ok(ResolvedComponent {
            id: id.to_owned(),
            source,
            mounts,
            environment: c.environment.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            variables,
            dependencies,
        })
    }

    /// Expand `{{ name }}` references to application variables (value from
    /// `SPIN_VARIABLE_<NAME>`, else the default; required ones must be set).
    pub fn expand(&self, template: &str) -> anyhow::Result<String> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find("}}").with_context(|| format!("unclosed '{{{{' in {template:?}"))?;
            let name = rest[start + 2..start + end].trim();
            let var = self
                .variables
                .get(name)
                .with_context(|| format!("variable {name:?} is not declared in [variables]"))?;
            let value = std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()))
                .ok()
                .or_else(|| var.default.clone())
                .with_context(|| {
                    format!("variable {name:?} is required: set SPIN_VARIABLE_{}", name.to_ascii_uppercase())
                })?;
            out.push_str(&value);
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Whether `path` matches a Spin route (`/exact`, `/prefix/...`, `/...`).
pub fn route_matches(route: &str, path: &str) -> bool {
    match route.strip_suffix("/...") {
        Some(prefix) => path == prefix || path.starts_with(&format!("{prefix}/")) || prefix.is_empty(),
        None => path == route || path.trim_end_matches('/') == route.trim_end_matches('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_manifest_parses_and_resolves() {
        let text = include_str!("../../spin.toml");
        let m = Manifest::parse(text).unwrap();
        assert_eq!(m.application.name, "yolo-edge");
        let routes = m.routes();
        assert_eq!(routes, vec![RouteSpec { route: "/...".into(), component: "detect".into() }]);
        let c = m.resolve("detect", Path::new("/app")).unwrap();
        assert_eq!(c.source, Path::new("/app/target/wasm32-wasip2/wasm/yolo_edge_function.wasm"));
        assert_eq!(c.mounts, vec![(PathBuf::from("/app/models"), "/models".to_owned())]);
        assert!(c.environment.contains(&("YOLO_EDGE_DEFAULT_MODEL".to_owned(), "yolov3-tiny".to_owned())));
        assert_eq!(c.dependencies.len(), 1);
        assert_eq!(c.dependencies[0].0, "wasi:nn@0.2.0-rc-2024-10-28");
        assert!(m.component["detect"].dependencies_inherit_configuration);
    }

    #[test]
    fn routes_match_like_spin() {
        assert!(route_matches("/...", "/anything/at/all"));
        assert!(route_matches("/api/...", "/api"));
        assert!(route_matches("/api/...", "/api/v1"));
        assert!(!route_matches("/api/...", "/apiary"));
        assert!(route_matches("/detect", "/detect"));
        assert!(!route_matches("/detect", "/detect/more"));
    }

    #[test]
    fn bad_manifests_are_refused() {
        let base = "spin_manifest_version = 2\n[application]\nname = \"a\"\n";
        assert!(Manifest::parse("spin_manifest_version = 1\n[application]\nname = \"a\"\n").is_err());
        assert!(Manifest::parse(&format!("{base}[[trigger.http]]\nroute = \"/x\"\ncomponent = \"nope\"\n")).is_err());
        assert!(Manifest::parse(&format!("{base}[[trigger.redis]]\nchannel = \"c\"\ncomponent = \"c\"\n")).is_err());
        assert!(Manifest::parse(&format!("{base}[component.c]\nsource = \"c.wasm\"\nsorce = 1\n")).is_err());
        let routes = Manifest::parse(&format!(
            "{base}[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n[[trigger.http]]\nroute = \"/api/...\"\ncomponent = \"c\"\n[[trigger.http]]\nroute = \"/api/exact\"\ncomponent = \"c\"\n[component.c]\nsource = \"c.wasm\"\n"
        ))
        .unwrap()
        .routes();
        let order: Vec<&str> = routes.iter().map(|r| r.route.as_str()).collect();
        assert_eq!(order, vec!["/api/exact", "/api/...", "/..."]);
    }

    #[test]
    fn variables_expand() {
        let m = Manifest::parse(
            "spin_manifest_version = 2\n[application]\nname = \"a\"\n[variables]\nmodel = { default = \"m1\" }\nsecret = { required = true }\n",
        )
        .unwrap();
        assert_eq!(m.expand("use {{ model }}!").unwrap(), "use m1!");
        assert!(m.expand("{{ secret }}").is_err());
        assert!(m.expand("{{ undeclared }}").is_err());
    }
}
