//! How much of a tenant's balance a call holds while it runs, and the hold's guard.
//!
//! A hold must bound the call's price before the call has run. The price depends on what the
//! call will use (wall and inference time, memory, pixels), which the price sheet alone cannot
//! tell: the bound that the limits imply (the whole fuel budget, the deadline, the memory cap)
//! is a hundred times a typical call and would refuse most tenants. So a hold is sized from
//! what calls on the same route have actually cost here: the largest price among the tenant's
//! last [`RECENT`] calls on it, else among anyone's, and never less than `per_call` (the only
//! bound before any call has run). `[billing] hold_tokens` fixes it instead, for a price sheet
//! whose calls vary widely (per-megapixel prices and very different image sizes). A capture
//! above its hold is still captured in full: that is the "+1" of the promise (a burst on a
//! balance that covers k calls serves at most k + 1, and the balance goes below zero by less
//! than one call's price).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use yolo_edge_ledger::Store;

/// How many recent prices of a route are remembered, per tenant and for everyone.
pub const RECENT: usize = 16;

/// Sizes holds from the prices of recent calls.
#[derive(Debug)]
pub struct HoldSizer {
    per_call: u64,
    fixed: Option<u64>,
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    by_tenant: HashMap<(String, String), VecDeque<u64>>,
    by_route: HashMap<String, VecDeque<u64>>,
}

fn remember(prices: &mut VecDeque<u64>, price: u64) {
    if prices.len() == RECENT {
        prices.pop_front();
    }
    prices.push_back(price);
}

impl HoldSizer {
    /// Holds of at least `per_call`, or always `fixed` when set.
    pub fn new(per_call: u64, fixed: Option<u64>) -> Self {
        Self { per_call, fixed, recent: Mutex::new(Recent::default()) }
    }

    /// The hold of `tenant`'s next call on `route`.
    pub fn size(&self, tenant: &str, route: &str) -> u64 {
        if let Some(fixed) = self.fixed {
            return fixed;
        }
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let own = recent.by_tenant.get(&(tenant.to_owned(), route.to_owned()));
        let seen = own.filter(|p| !p.is_empty()).or_else(|| recent.by_route.get(route));
        seen.and_then(|p| p.iter().copied().max()).unwrap_or(0).max(self.per_call)
    }

    /// Remember what `tenant`'s executed call on `route` cost.
    pub fn observe(&self, tenant: &str, route: &str, price: u64) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        remember(recent.by_tenant.entry((tenant.to_owned(), route.to_owned())).or_default(), price);
        remember(recent.by_route.entry(route.to_owned()).or_default(), price);
    }
}

/// An open hold: captured by the ledger row written with its id ([`HoldGuard::captured`]),
/// else released when dropped (in the background; should that fail too, its lease frees it).
pub struct HoldGuard {
    store: Arc<dyn Store>,
    id: Option<String>,
}

impl HoldGuard {
    /// The guard of the hold `id`, made in `store`.
    pub fn new(store: Arc<dyn Store>, id: String) -> Self {
        Self { store, id: Some(id) }
    }

    /// The hold's id (the id of the call's ledger row).
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// The row written with this hold's id captured it: nothing is left to release.
    pub fn captured(mut self) {
        self.id = None;
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let store = self.store.clone();
        let release = async move {
            if let Err(e) = store.release_hold(&id).await {
                tracing::warn!(hold = %id, error = %format!("{e:#}"), "a hold was not released: its lease will free it");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(release)),
            Err(_) => tracing::warn!("a hold was dropped outside the runtime: its lease will free it"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_follow_the_largest_recent_price_never_below_per_call() {
        let sizer = HoldSizer::new(1000, None);
        assert_eq!(sizer.size("acme", "/detect"), 1000, "nothing seen yet: per_call");
        sizer.observe("beta", "/detect", 1300);
        assert_eq!(sizer.size("acme", "/detect"), 1300, "anyone's recent calls on the route");
        sizer.observe("acme", "/detect", 1100);
        assert_eq!(sizer.size("acme", "/detect"), 1100, "the tenant's own, once it has some");
        assert_eq!(sizer.size("acme", "/detect/batch"), 1000, "per route");
        for _ in 0..RECENT {
            sizer.observe("acme", "/detect", 900);
        }
        assert_eq!(sizer.size("acme", "/detect"), 1000, "old prices are forgotten; per_call stays the floor");
        assert_eq!(HoldSizer::new(1000, Some(5000)).size("acme", "/detect"), 5000, "a fixed hold_tokens");
    }
}
