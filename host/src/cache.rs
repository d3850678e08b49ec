//! The result cache: identical image bytes + model + options → the stored answer, so a repeat
//! costs neither inference nor the full price (`per_cache_hit` instead of `per_call`).
//!
//! Keyed by a SHA-256 over the decoded request (the image bytes, however they were sent: raw
//! or base64 JSON), the normalised options, the resolved model and what could change its
//! answer (the component's and the model files' own hashes, the backend), and by default the
//! tenant ([`CacheScope`]: an answer is given again only to the tenant whose call filled it,
//! unless `[cache] scope = "shared"`). Billing is never shared: every hit is the caller's own
//! ledger row, with a new invocation id, and never names the invocation that filled the cache.
//!
//! Two stores: an in-process LRU bounded in entries and age (the embedded default; the `lru`
//! crate: small, maintained, no background threads), and Redis when `[cache] redis_url` or
//! the fleet's `[redis] url` is set (a [`RedisLink`]: the `redis` crate's connection manager,
//! which reconnects by itself), shared by every host on it. A Redis that does not answer
//! (within [`REDIS_DEADLINE`], or that failed in the last second) makes a lookup a miss and a
//! store a no-op, logged: the cache never fails a request.
//!
//! Lifecycle: [`ResultCache::open`] and [`ModelIds::scan`] at start → per request [`CacheKey::of`] (only for `POST`
//! of a detection route without `Cache-Control: no-cache`/`no-store`) → [`ResultCache::get`]
//! → on a miss, after a `200` answer, [`ResultCache::put`].

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use yolo_edge_ledger::digest::Fingerprint;

use crate::answer::Answer;
use crate::redis_link::RedisLink;

/// `[cache]` in `yolo-edge.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether answers are cached at all.
    pub enabled: bool,
    /// In-process cache: most answers kept (least recently used go first).
    pub max_entries: usize,
    /// How long an answer stays valid, seconds (both stores).
    pub ttl_seconds: u64,
    /// `redis://host:port/db`: share the cache between hosts through this Redis instead
    /// (default: the fleet's `[redis] url`, when set).
    pub redis_url: Option<String>,
    /// Whose calls an entry answers: only its own tenant's (the default), or everyone's.
    pub scope: CacheScope,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { enabled: true, max_entries: 10_000, ttl_seconds: 3600, redis_url: None, scope: CacheScope::Tenant }
    }
}

/// `[cache] scope`: who an answer in the cache may be given to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheScope {
    /// Only the tenant whose call filled it: a hit tells a tenant nothing about what other
    /// tenants sent (a multi-tenant service's promise).
    #[default]
    Tenant,
    /// Every tenant: for a deployment with one owner, where another tenant's repeat of the same
    /// image is worth answering at the cache's price.
    Shared,
}

/// A request's cache key (hex SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key of a detection request, or `None` when it cannot be cached (its body does not
    /// parse: the function answers the error, uncached; or its model is unknown to the host).
    /// `identity` names everything outside the request that shapes a model's answer
    /// (component, model files, backend).
    pub fn of(
        route: &str,
        content_type: Option<&str>,
        query: &str,
        body: &[u8],
        default_model: &str,
        identity: &dyn Fn(&str) -> Option<String>,
    ) -> Option<Self> {
        let request = yolo_core::request::parse_detect_request(content_type, query, body).ok()?;
        let o = &request.options;
        let model = o.model.clone().unwrap_or_else(|| default_model.to_owned());
        // Normalised: the same options however they were written (query or JSON, order,
        // defaults spelt out or not) give the same key.
        let options = serde_json::json!({
            "conf": o.conf, "iou": o.iou, "max_det": o.max_det,
            "classes": o.classes.as_ref().map(|c| { let mut c = c.clone(); c.sort_unstable(); c.dedup(); c }),
            "model": model,
            "annotate": o.annotate.map(|a| a.as_str()),
            "decode": o.decode.as_str(),
        });
        let identity = identity(&model)?;
        let mut h = Fingerprint::new();
        h.field("yolo-edge result cache v1").field(route).field(identity).field(options.to_string());
        Some(Self(h.rest(&request.image).hex()))
    }

    /// The key of the same request within `tenant`'s own part of the cache
    /// ([`CacheScope::Tenant`]); shared keys stay as [`CacheKey::of`] makes them.
    pub fn scoped(self, tenant: &str) -> Self {
        Self(Fingerprint::new().field("yolo-edge result cache, one tenant's").field(tenant).field(self.0).hex())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The SHA-256 (hex) of what in a model directory can change an answer: every regular file
/// in it, by name and content.
pub fn model_fingerprint(dir: &Path) -> std::io::Result<String> {
    let mut files: Vec<_> =
        std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    let mut h = Fingerprint::new();
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        h.field(name).field(std::fs::read(&f)?);
    }
    Ok(h.hex())
}

/// Each model's identity for cache keys: its directory's [`model_fingerprint`] and its
/// backend (backends differ in their last digits). Models without one are not cached.
#[derive(Debug, Clone, Default)]
pub struct ModelIds(std::collections::HashMap<String, String>);

impl ModelIds {
    /// Fingerprint every model directory under `dir` (about 0.2 s for the default model's
    /// 70 MB: the host runs it beside loading the models).
    pub fn scan(dir: &Path) -> Vec<(String, String)> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut found = Vec::new();
        for path in entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()) {
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
            match model_fingerprint(&path) {
                Ok(id) => found.push((name, id)),
                Err(e) => {
                    tracing::warn!(model = %name, error = %e, "cannot fingerprint a model: its answers are not cached")
                }
            }
        }
        found
    }

    /// The identities of scanned models, each with its backend's name.
    pub fn new(scanned: Vec<(String, String)>, backend: impl Fn(&str) -> String) -> Self {
        Self(scanned.into_iter().map(|(name, id)| (name.clone(), format!("{id}/{}", backend(&name)))).collect())
    }

    /// A model's identity.
    pub fn get(&self, model: &str) -> Option<&str> {
        self.0.get(model).map(String::as_str)
    }
}

/// Whether a request asked not to be served from the cache (`Cache-Control: no-cache` or
/// `no-store`) and whether it asked that its answer not be stored (`no-store`).
pub fn directives(headers: &http::HeaderMap) -> (bool, bool) {
    let mut no_cache = false;
    let mut no_store = false;
    for v in headers.get_all(http::header::CACHE_CONTROL) {
        for d in v.to_str().unwrap_or("").split(',') {
            match d.trim().to_ascii_lowercase().as_str() {
                "no-cache" => no_cache = true,
                "no-store" => no_store = true,
                _ => {}
            }
        }
    }
    (no_cache || no_store, no_store)
}

/// Where answers are kept.
pub enum ResultCache {
    /// Nowhere: the cache is off.
    Off,
    /// The in-process LRU.
    Memory(Box<MemoryStore>),
    /// Redis, shared by hosts.
    Redis(Box<RedisStore>),
}

/// The in-process store: answers with the time they were stored.
pub struct MemoryStore {
    entries: Mutex<lru::LruCache<CacheKey, (Instant, Answer)>>,
    ttl: Duration,
}

/// The Redis store.
pub struct RedisStore {
    link: Arc<RedisLink>,
    ttl: Duration,
}

/// Redis keys are namespaced.
const REDIS_PREFIX: &str = "yolo-edge:cache:v1:";

/// How long a lookup or a store waits for Redis (answers may be megabytes: annotated images).
pub const REDIS_DEADLINE: Duration = Duration::from_secs(1);

impl ResultCache {
    /// Open the configured store: Redis when `[cache] redis_url` names one (connecting to it,
    /// or reusing `fleet` when that is the same URL), else `fleet` (the `[redis] url` link)
    /// when there is one, else the in-process LRU.
    pub async fn open(config: &CacheConfig, fleet: Option<&Arc<RedisLink>>) -> anyhow::Result<Self> {
        let ttl = Duration::from_secs(config.ttl_seconds.max(1));
        if !config.enabled {
            return Ok(Self::Off);
        }
        let link = match (&config.redis_url, fleet) {
            (Some(url), Some(fleet)) if fleet.url() == url => Some(fleet.clone()),
            (Some(url), _) => Some(Arc::new(RedisLink::open(url, "[cache] redis_url").await?)),
            (None, fleet) => fleet.cloned(),
        };
        if let Some(link) = link {
            return Ok(Self::Redis(Box::new(RedisStore { link, ttl })));
        }
        let capacity = NonZeroUsize::new(config.max_entries).unwrap_or(NonZeroUsize::MIN);
        Ok(Self::Memory(Box::new(MemoryStore { entries: Mutex::new(lru::LruCache::new(capacity)), ttl })))
    }

    /// Whether answers are cached at all.
    pub fn enabled(&self) -> bool {
        !matches!(self, Self::Off)
    }

    /// Which store, for the log.
    pub fn describe(&self) -> String {
        match self {
            Self::Off => "off".to_owned(),
            Self::Memory(m) => format!("in-process LRU, ttl {:?}", m.ttl),
            Self::Redis(r) => format!("Redis at {}, ttl {:?}", r.link.shown(), r.ttl),
        }
    }

    /// The stored answer for `key`, if any and still fresh.
    pub async fn get(&self, key: &CacheKey) -> Option<Answer> {
        match self {
            Self::Off => None,
            Self::Memory(m) => {
                let mut entries = m.entries.lock().unwrap_or_else(|p| p.into_inner());
                match entries.get(key) {
                    Some((stored, answer)) if stored.elapsed() < m.ttl => Some(answer.clone()),
                    Some(_) => {
                        entries.pop(key);
                        None
                    }
                    None => None,
                }
            }
            Self::Redis(r) => {
                let mut get = redis::cmd("GET");
                get.arg(format!("{REDIS_PREFIX}{}", key.0));
                let got = r
                    .link
                    .call(REDIS_DEADLINE, |mut c| async move { get.query_async::<Option<Vec<u8>>>(&mut c).await })
                    .await;
                // A failure is logged by the link; the lookup is a miss.
                got.ok().flatten().and_then(|bytes| serde_json::from_slice(&bytes).ok())
            }
        }
    }

    /// Store `answer` under `key`.
    pub async fn put(&self, key: &CacheKey, answer: Answer) {
        match self {
            Self::Off => {}
            Self::Memory(m) => {
                m.entries.lock().unwrap_or_else(|p| p.into_inner()).put(key.clone(), (Instant::now(), answer));
            }
            Self::Redis(r) => {
                let Ok(value) = serde_json::to_vec(&answer) else { return };
                let mut set = redis::cmd("SET");
                set.arg(format!("{REDIS_PREFIX}{}", key.0)).arg(value).arg("EX").arg(r.ttl.as_secs().max(1));
                // A failure is logged by the link; the answer is not cached.
                let _ = r.link.call(REDIS_DEADLINE, |mut c| async move { set.query_async::<()>(&mut c).await }).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(query: &str, body: &[u8]) -> Option<CacheKey> {
        CacheKey::of("/detect", Some("image/png"), query, body, "yolov3-tiny", &|m| Some(format!("id-of-{m}")))
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really";

    #[test]
    fn tenants_have_keys_of_their_own() {
        let shared = key("", PNG).unwrap();
        let (a, b) = (shared.clone().scoped("a"), shared.clone().scoped("b"));
        assert!(a != b && a != shared && b != shared);
        assert_eq!(shared.clone().scoped("a"), a, "the same tenant, the same key");
    }

    #[test]
    fn keys_follow_the_decoded_request_not_its_spelling() {
        let raw = key("", PNG).unwrap();
        assert_eq!(key("conf=0.25&iou=0.45", PNG).unwrap(), raw, "defaults spelt out");
        assert_eq!(key("model=yolov3-tiny", PNG).unwrap(), raw, "the default model named");
        assert_eq!(key("classes=2,0", PNG), key("classes=0,2", PNG), "class order");
        use base64::Engine as _;
        let json = format!(r#"{{"image":"{}"}}"#, base64::engine::general_purpose::STANDARD.encode(PNG));
        let from_json = CacheKey::of("/detect", Some("application/json"), "", json.as_bytes(), "yolov3-tiny", &|m| {
            Some(format!("id-of-{m}"))
        });
        assert_eq!(from_json.unwrap(), raw, "base64 JSON and raw bytes are the same image");
        assert_ne!(key("conf=0.3", PNG).unwrap(), raw);
        assert_ne!(key("", b"\x89PNG\r\n\x1a\nanother").unwrap(), raw);
        let other_model =
            CacheKey::of("/detect", Some("image/png"), "", PNG, "yolov3-tiny", &|m| Some(format!("v2-{m}")));
        assert_ne!(other_model.unwrap(), raw, "changed model files");
        assert_ne!(
            CacheKey::of("/other", Some("image/png"), "", PNG, "yolov3-tiny", &|m| Some(format!("id-of-{m}"))).unwrap(),
            raw
        );
        assert!(key("conf=7", PNG).is_none(), "an invalid request is not cached");
        let unknown = CacheKey::of("/detect", Some("image/png"), "", PNG, "yolov3-tiny", &|_| None);
        assert!(unknown.is_none(), "a model not fingerprinted yet is not cached");
    }

    #[test]
    fn cache_control_directives() {
        let mut h = http::HeaderMap::new();
        assert_eq!(directives(&h), (false, false));
        h.insert(http::header::CACHE_CONTROL, "max-age=0, No-Cache".parse().unwrap());
        assert_eq!(directives(&h), (true, false));
        h.insert(http::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(directives(&h), (true, true));
    }

    #[tokio::test]
    async fn memory_store_is_bounded_and_expires() {
        let answer = |n: u8| Answer {
            status: 200,
            headers: vec![],
            body: bytes::Bytes::from(vec![n]),
            summary: Default::default(),
        };
        let c = ResultCache::open(&CacheConfig { max_entries: 2, ..CacheConfig::default() }, None).await.unwrap();
        let (a, b, d) = (key("", PNG).unwrap(), key("conf=0.3", PNG).unwrap(), key("conf=0.4", PNG).unwrap());
        c.put(&a, answer(1)).await;
        c.put(&b, answer(2)).await;
        assert_eq!(c.get(&a).await, Some(answer(1)));
        c.put(&d, answer(3)).await;
        assert_eq!(c.get(&b).await, None, "the least recently used went first");
        assert_eq!(c.get(&a).await, Some(answer(1)));
        let short = ResultCache::open(&CacheConfig { ttl_seconds: 1, ..CacheConfig::default() }, None).await.unwrap();
        short.put(&a, answer(1)).await;
        if let ResultCache::Memory(m) = &short {
            let mut entries = m.entries.lock().unwrap();
            entries.get_mut(&a).unwrap().0 -= Duration::from_secs(2);
        }
        assert_eq!(short.get(&a).await, None, "expired");
        let off = ResultCache::open(&CacheConfig { enabled: false, ..CacheConfig::default() }, None).await.unwrap();
        off.put(&a, answer(1)).await;
        assert_eq!(off.get(&a).await, None);
    }
}
