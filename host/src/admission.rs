//! Admission: who calls and whether the call may run, decided before anything runs or is
//! billed: the API key ([`yolo_edge_ledger::Store::authenticate`]), the tenant's rate limit, and a
//! hold on its balance that covers the call ([`crate::holds`]); and the JSON refusals of the billed path (`401`, `403`, `402`, `429`, `503`),
//! each marked with its reason for the audit log and the metrics.

use http::header;
use http::request::Parts;
use uuid::Uuid;
use yolo_core::{ApiError, ErrorCode};
use yolo_edge_ledger::{AuthError, Caller, HoldOutcome, HoldRequest, now_us};

use crate::app::App;
use crate::audit::RequestFacts;
use crate::holds::HoldGuard;
use crate::limits::Refusal;
use crate::metering::headers;
use crate::reply::{Reply, json_error, set_header};

/// The JSON answer for a refused key.
pub fn auth_refusal(e: &AuthError) -> Reply {
    let code = match e {
        AuthError::Revoked => ErrorCode::KeyRevoked,
        AuthError::Missing | AuthError::Invalid => ErrorCode::Unauthorized,
        AuthError::Unavailable(reason) => return unavailable(&anyhow::anyhow!("key lookup failed: {reason}")),
    };
    let mut r = json_error(&ApiError::new(code, e.to_string()));
    if code == ErrorCode::Unauthorized {
        set_header(&mut r, "www-authenticate", "Bearer");
    }
    r
}

/// The answer when the store cannot be used: 503, nothing charged, retry later.
pub fn unavailable(e: &anyhow::Error) -> Reply {
    tracing::error!(error = %format!("{e:#}"), "ledger unavailable");
    let mut r = json_error(&ApiError::new(
        ErrorCode::LedgerUnavailable,
        "the ledger is unavailable; nothing was charged: retry later",
    ));
    set_header(&mut r, "retry-after", "1");
    r
}

/// Attach what is known about a refused request, for the audit log and the metrics.
pub fn refused(mut reply: Reply, tenant: Option<&str>, reason: &'static str) -> Reply {
    reply.extensions_mut().insert(RequestFacts {
        tenant: tenant.map(str::to_owned),
        refused: Some(reason),
        ..RequestFacts::default()
    });
    reply
}

/// The answer for a request an instance or tenant limit turned away, with `Retry-After`.
pub fn limit_refusal(refusal: Refusal, tenant: &str) -> Reply {
    let (code, reason, message) = match refusal {
        Refusal::Overloaded { .. } => (
            ErrorCode::Overloaded,
            "overloaded",
            "every instance is busy and the wait queue is full: retry later".to_owned(),
        ),
        Refusal::RateLimited { .. } => {
            (ErrorCode::RateLimited, "rate_limited", format!("tenant {tenant:?} is over its request rate: retry later"))
        }
        Refusal::ConcurrencyLimited => (
            ErrorCode::ConcurrencyLimited,
            "concurrency_limited",
            format!("tenant {tenant:?} has too many requests in flight: retry when one finishes"),
        ),
    };
    let mut r = json_error(&ApiError::new(code, message));
    set_header(&mut r, "retry-after", refusal.retry_after_secs().to_string());
    refused(r, Some(tenant), reason)
}

/// Authenticate the caller, apply the tenant's rate limit, and hold what the call may cost
/// from its balance (refused when the balance less open holds does not cover it). The guard
/// releases the hold unless the call's ledger row captures it. (The tenant's in-flight cap is
/// applied once the body has arrived.)
pub async fn admit(app: &App, parts: &Parts) -> Result<(Caller, HoldGuard), Box<Reply>> {
    let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = app.store.authenticate(authorization).await.map_err(|e| {
        let reason = match e {
            AuthError::Revoked => "key_revoked",
            AuthError::Unavailable(_) => "ledger_unavailable",
            AuthError::Missing | AuthError::Invalid => "unauthorized",
        };
        Box::new(refused(auth_refusal(&e), None, reason))
    })?;
    app.tenants.check_rate(&caller.tenant).await.map_err(|r| Box::new(limit_refusal(r, &caller.tenant)))?;
    let tokens = app.holds.size(&caller.tenant, parts.uri.path());
    let hold = HoldRequest {
        id: Uuid::now_v7().to_string(),
        tenant: caller.tenant.clone(),
        tokens: i64::try_from(tokens).unwrap_or(i64::MAX),
        now_us: now_us(),
        lease: app.hold_lease,
    };
    match app.store.hold_tokens(&hold).await.map_err(|e| Box::new(unavailable(&e)))? {
        HoldOutcome::Held { .. } => Ok((caller, HoldGuard::new(app.store.clone(), hold.id))),
        HoldOutcome::Insufficient { available } => {
            let mut r = json_error(&ApiError::new(
                ErrorCode::InsufficientBalance,
                format!(
                    "tenant {:?} has {available} tokens to spend (its balance less what its calls in flight hold), below what a call holds until it is priced ({tokens} tokens): add credit",
                    caller.tenant
                ),
            ));
            set_header(&mut r, headers::BALANCE, available.to_string());
            Err(Box::new(refused(r, Some(&caller.tenant), "insufficient_balance")))
        }
    }
}
