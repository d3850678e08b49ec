//! The host's own API for tenants: `GET /v1/usage?from=&to=` and `GET /v1/invocations/{id}`.
//! Both need the caller's API key and only ever show the caller's own tenant.

use http::{Method, Request};
use yolo_core::{ApiError, ErrorCode};

use yolo_edge_ledger::{Period, rfc3339};

use crate::admission::{auth_refusal, unavailable};
use crate::app::App;
use crate::reply::{Reply, json_error, json_reply, set_header};

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| (k == name).then(|| v.into_owned()))
}

fn internal(e: anyhow::Error) -> Reply {
    unavailable(&e)
}

/// Answer `/v1/usage` or `/v1/invocations/{id}`.
pub async fn handle<B>(app: &App, req: Request<B>) -> Reply {
    if req.method() != Method::GET {
        let mut r = json_error(&ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed here: use GET", req.method()),
        ));
        set_header(&mut r, "allow", "GET");
        return r;
    }
    let authorization = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = match app.store.authenticate(authorization).await {
        Ok(c) => c,
        Err(e) => return auth_refusal(&e),
    };
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    if path == "/v1/usage" {
        let from = query_param(&query, "from");
        let to = query_param(&query, "to");
        let period = match Period::parse(from.as_deref(), to.as_deref()) {
            Ok(p) => p,
            Err(message) => return json_error(&ApiError::new(ErrorCode::InvalidOption, message)),
        };
        return match app.store.usage(&caller.tenant, period).await {
            Ok(report) => json_reply(200, serde_json::to_string(&report).unwrap_or_default()),
            Err(e) => internal(e),
        };
    }
    let id = path.trim_start_matches("/v1/invocations/").to_owned();
    match app.store.invocation(&caller.tenant, &id).await {
        Ok(Some(row)) => {
            let mut v = serde_json::to_value(&row).unwrap_or_default();
            v["time"] = serde_json::Value::String(rfc3339(row.entry.ts_us));
            json_reply(200, v.to_string())
        }
        Ok(None) => json_error(&ApiError::new(ErrorCode::NotFound, "no such invocation for this tenant")),
        Err(e) => internal(e),
    }
}
