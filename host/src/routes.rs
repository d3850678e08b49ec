//! The host's route table: one list of every route it answers, which drives the dispatch in
//! [`crate::server`], the metrics' route labels, and the OpenAPI document's paths (a unit test
//! in [`crate::web`] checks `openapi.json` against it).

use http::Method;

/// Who answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// The function, through admission, metering and the ledger ([`crate::billing`]).
    Function,
    /// The function's `/healthz`: open to all, neither billed nor recorded.
    Healthz,
    /// Prometheus metrics, answered by the host (`GET` only: other methods go to the function).
    Metrics,
    /// A file compiled into the host ([`crate::web`]).
    Asset,
    /// The host's own API for tenants ([`crate::api`]).
    Api,
}

/// One route: its method, its path as the OpenAPI document writes it (`{id}` stands for the
/// rest of the path), and who answers it.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The HTTP method.
    pub method: &'static str,
    /// The path template.
    pub path: &'static str,
    /// Who answers it.
    pub handler: Handler,
}

const fn route(method: &'static str, path: &'static str, handler: Handler) -> Route {
    Route { method, path, handler }
}

/// Every route the host answers. `host/web/openapi.json` documents exactly these.
pub const ROUTES: &[Route] = &[
    route("POST", "/detect", Handler::Function),
    route("POST", "/detect/batch", Handler::Function),
    route("GET", "/healthz", Handler::Healthz),
    route("GET", "/metrics", Handler::Metrics),
    route("GET", "/v1/usage", Handler::Api),
    route("GET", "/v1/invocations/{id}", Handler::Api),
    route("GET", "/", Handler::Asset),
    route("GET", "/assets/app.js", Handler::Asset),
    route("GET", "/assets/style.css", Handler::Asset),
    route("GET", "/openapi.json", Handler::Asset),
];

/// Whether `path` is one of `template`'s paths: the same text, where `{id}` takes the rest.
fn matches(template: &str, path: &str) -> bool {
    match template.strip_suffix("{id}") {
        Some(prefix) => path.starts_with(prefix),
        None => template == path,
    }
}

/// The route whose template `path` matches (whatever the method).
pub fn find(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| matches(r.path, path))
}

/// Who answers `method path`. Paths outside the table go to the function (a Spin manifest's
/// components serve routes of their own), and so does a method other than `GET` on
/// `/metrics`; the host's own API and files answer a wrong method with `405` themselves.
pub fn handler(method: &Method, path: &str) -> Handler {
    match find(path).map(|r| r.handler) {
        Some(Handler::Metrics) if method != Method::GET => Handler::Function,
        Some(handler) => handler,
        None => Handler::Function,
    }
}

/// A stable, low-cardinality route label for the metrics: the template of the route `path`
/// matches (a trailing `/` ignored), else `other`.
pub fn label(path: &str) -> &'static str {
    let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    find(path).or_else(|| find(trimmed)).map_or("other", |r| r.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_handler_and_label() {
        assert_eq!(handler(&Method::POST, "/detect"), Handler::Function);
        assert_eq!(handler(&Method::GET, "/healthz"), Handler::Healthz);
        assert_eq!(handler(&Method::POST, "/healthz"), Handler::Healthz);
        assert_eq!(handler(&Method::GET, "/metrics"), Handler::Metrics);
        assert_eq!(handler(&Method::POST, "/metrics"), Handler::Function);
        assert_eq!(handler(&Method::DELETE, "/v1/invocations/abc"), Handler::Api);
        assert_eq!(handler(&Method::POST, "/assets/app.js"), Handler::Asset);
        assert_eq!(handler(&Method::POST, "/hello"), Handler::Function);
        assert_eq!(label("/v1/invocations/abc"), "/v1/invocations/{id}");
        assert_eq!(label("/detect/"), "/detect");
        assert_eq!(label("/detect/batch"), "/detect/batch");
        assert_eq!(label("/../../etc"), "other");
    }
}
