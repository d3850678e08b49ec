//! What the host serves from its own binary: the demo page (`GET /` and its two assets) and
//! the OpenAPI 3.1 document of the whole API (`GET /openapi.json`). Open to all, neither
//! billed nor recorded. The files live in `host/web/` and are compiled in (no build step, no
//! CDN: the page loads nothing from anywhere else, which its Content-Security-Policy enforces).

use bytes::Bytes;
use http::{HeaderValue, Method, Response, header};
use http_body_util::Full;
use yolo_core::{ApiError, ErrorCode};

use crate::reply::{Reply, json_error, no_route};

/// A file the host serves.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its path.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its content.
    pub body: &'static str,
}

/// The OpenAPI document (`GET /openapi.json`).
pub const OPENAPI: &str = include_str!("../web/openapi.json");

/// Every file the host serves, by path.
pub const ASSETS: [Asset; 4] = [
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: include_str!("../web/index.html") },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/app.js"),
    },
    Asset {
        path: "/assets/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../web/style.css"),
    },
    Asset { path: "/openapi.json", content_type: "application/json", body: OPENAPI },
];

/// The page may load scripts, styles and images only from this host (plus the empty `data:`
/// icon that spares a favicon request) and talk only to this host.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path`.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Answer a request for an asset: `GET` and `HEAD` (hyper sends no body for `HEAD`), else 405.
pub fn handle(method: &Method, path: &str) -> Reply {
    let Some(asset) = find(path) else {
        return no_route(path);
    };
    if method != Method::GET && method != Method::HEAD {
        let mut r = json_error(&ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed on {}: use GET", asset.path),
        ));
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    serve(asset)
}

/// The `200` answer for an asset, with its type and the page's security headers.
pub fn serve(asset: &Asset) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from_static(asset.body.as_bytes())));
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let routes: BTreeSet<(String, String)> =
            crate::routes::ROUTES.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
        assert_eq!(documented, routes, "openapi.json and routes::ROUTES disagree");
        for asset in ASSETS {
            assert!(routes.contains(&("GET".to_owned(), asset.path.to_owned())), "{} is not in ROUTES", asset.path);
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        fn walk(v: &serde_json::Value, doc: &serde_json::Value) {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(target) = map.get("$ref").and_then(|r| r.as_str()) {
                        let pointer = target.strip_prefix('#').expect("a local reference");
                        assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
                    }
                    map.values().for_each(|v| walk(v, doc));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, doc)),
                _ => {}
            }
        }
        walk(&doc, &doc);
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let page = find("/").unwrap().body;
        assert!(page.contains("src=\"/assets/app.js\"") && page.contains("href=\"/assets/style.css\""));
        for asset in ASSETS {
            assert!(!asset.body.contains("http://") && !asset.body.contains("https://"), "{}", asset.path);
        }
        assert!(!page.contains("<script>") && !page.contains("style="), "no inline code: the CSP forbids it");
    }
}
