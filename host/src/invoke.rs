//! One invocation: a fresh instance of the component handles one HTTP request, and the
//! host measures what it consumed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::oneshot;
use wasmtime::component::Component;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::answer::Answer;
use crate::metering::Usage;
use crate::state::{InvocationState, MemoryMeter};
use yolo_core::report;
use yolo_edge_nn::registry::GraphRegistry;

/// wasi-http needs an authority for every incoming request, but HTTP/1.0 lets a client leave
/// `Host` out: such a request is given `Host: localhost` (what it reached), instead of failing
/// before the function runs.
fn with_authority(mut request: http::Request<Full<Bytes>>) -> http::Request<Full<Bytes>> {
    if request.uri().authority().is_none() && !request.headers().contains_key(http::header::HOST) {
        request.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
    }
    request
}

/// Settings of every invocation.
#[derive(Debug, Clone)]
pub struct InvokerOptions {
    /// `(host directory, guest path)` pre-opened read-only in every instance.
    pub mounts: Vec<(PathBuf, String)>,
    /// The guest's environment.
    pub env: Vec<(String, String)>,
    /// Fuel available to one invocation.
    pub fuel_budget: u64,
    /// Whether fuel is metered at all (the engine must agree).
    pub fuel: bool,
    /// Largest linear memory of one instance, bytes.
    pub max_memory_bytes: usize,
    /// Wall-clock deadline of one invocation.
    pub timeout: Duration,
    /// Deadline of one wasi-nn compute.
    pub inference_timeout: Duration,
    /// The SHA-256 (hex) of the component's bytes: part of its answers' cache keys.
    pub component_sha256: String,
}

/// A response the function produced, fully read.
struct GuestResponse {
    parts: http::response::Parts,
    body: Bytes,
}

impl GuestResponse {
    /// The typed answer, and the pixels the function decoded: the private headers of
    /// [`yolo_core::report`] are taken out (a client never sees them), and so are the
    /// hop-by-hop ones the host's own connection decides.
    fn into_answer(self) -> (Answer, u64) {
        let mut headers = self.parts.headers;
        let pixels = headers.remove(report::PIXELS_HEADER).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let headers = headers
            .iter()
            .filter(|(name, _)| {
                ![http::header::CONTENT_LENGTH, http::header::TRANSFER_ENCODING, http::header::CONNECTION]
                    .contains(name)
            })
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
            .collect();
        (Answer::reported(self.parts.status.as_u16(), headers, self.body), pixels)
    }
}

/// How the invocation ended.
#[derive(Debug)]
pub enum Outcome {
    /// The function answered.
    Answered(Answer),
    /// The function failed; the message says why.
    Failed(Failure, String),
}

/// Ways a function fails without a (complete) answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A trap or panic, or no answer at all.
    Trap,
    /// The wall-clock deadline passed (a timer with fuel, epoch interruption without).
    Timeout,
    /// The fuel budget ran out.
    OutOfFuel,
    /// The guest was refused the memory it asked for, and then stopped.
    OutOfMemory,
}

impl Failure {
    /// Classify a guest's error, with a message for the client: the root cause only (the
    /// full error, with its wasm backtrace, goes to the log).
    fn of(error: &wasmtime::Error, memory: &MemoryMeter) -> (Self, String) {
        let cause = error.root_cause().to_string();
        match (error.downcast_ref::<wasmtime::Trap>(), memory.refused()) {
            (Some(wasmtime::Trap::Interrupt), _) => (Self::Timeout, cause),
            (Some(wasmtime::Trap::OutOfFuel), _) => (Self::OutOfFuel, cause),
            // Rust's allocator aborts (`unreachable`) when `memory.grow` fails over the cap: that
            // abort after a refusal is the refusal. Any other trap stays a trap.
            (Some(wasmtime::Trap::UnreachableCodeReached), Some(size)) => (
                Self::OutOfMemory,
                format!(
                    "the function needed more memory than its limit of {} MiB (its memory would have grown to {} MiB) and was stopped",
                    memory.cap() >> 20,
                    size.div_ceil(1 << 20)
                ),
            ),
            _ => (Self::Trap, cause),
        }
    }
}

/// What a finished store leaves behind.
struct Ended {
    usage: Usage,
    result: wasmtime::Result<()>,
    memory: MemoryMeter,
}

/// The result of one invocation.
#[derive(Debug)]
pub struct Invocation {
    /// The answer or the failure.
    pub outcome: Outcome,
    /// What it consumed.
    pub usage: Usage,
    /// For a guest error: the whole error, with its wasm backtrace (for the log only; the
    /// client's message is its root cause).
    pub detail: Option<String>,
}

/// Instantiates the component per request.
pub struct Invoker {
    pre: ProxyPre<InvocationState>,
    registry: Arc<GraphRegistry>,
    options: InvokerOptions,
}

impl Invoker {
    /// Pre-instantiate `component` with `linker` once; every request then gets a fresh instance.
    pub fn new(
        linker: &wasmtime::component::Linker<InvocationState>,
        component: &Component,
        registry: Arc<GraphRegistry>,
        options: InvokerOptions,
    ) -> anyhow::Result<Self> {
        let pre = ProxyPre::new(linker.instantiate_pre(component)?)?;
        Ok(Self { pre, registry, options })
    }

    /// The graphs this invoker serves.
    pub fn registry(&self) -> &GraphRegistry {
        &self.registry
    }

    /// The settings every invocation gets.
    pub fn options(&self) -> &InvokerOptions {
        &self.options
    }

    /// The model the function uses when a request names none (its `YOLO_EDGE_DEFAULT_MODEL`).
    pub fn default_model(&self) -> &str {
        self.options
            .env
            .iter()
            .find(|(k, _)| k == "YOLO_EDGE_DEFAULT_MODEL")
            .map_or(yolo_core::model::DEFAULT_MODEL, |(_, v)| v.as_str())
    }

    /// Run the function on `request`.
    pub async fn invoke(&self, request: http::Request<Full<Bytes>>) -> Invocation {
        let started = Instant::now();
        // Counted while it runs: inference backends give a lone invocation every core.
        let _demand = self.registry.demand().enter();
        match self.run(request, started).await {
            Ok(done) => done,
            Err(e) => Invocation {
                outcome: Outcome::Failed(Failure::Trap, format!("{e:#}")),
                usage: Usage { wall: started.elapsed(), ..Usage::default() },
                detail: Some(format!("{e:?}")),
            },
        }
    }

    async fn run(&self, request: http::Request<Full<Bytes>>, started: Instant) -> anyhow::Result<Invocation> {
        let o = &self.options;
        let state =
            InvocationState::new(&o.mounts, &o.env, self.registry.clone(), o.max_memory_bytes, o.inference_timeout)?;
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.memory);
        // The guest yields to the async runtime every few milliseconds (so a long computation
        // never holds a worker thread and other requests, timers and the accept loop keep
        // running), and once the wall-clock deadline has passed it is stopped: with fuel, it
        // yields every FUEL_YIELD_INTERVAL units and a timer races the call; without, it yields
        // every epoch tick and the epoch callback interrupts it (a trap).
        let deadline = started + o.timeout;
        if o.fuel {
            store.set_fuel(o.fuel_budget)?;
            store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))?;
        } else {
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                Ok(if Instant::now() >= deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
            });
        }
        let timer = o.fuel.then(|| tokio::time::Instant::from_std(deadline));
        let (sender, receiver) = oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, with_authority(request))?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let mut guest = tokio::spawn(async move {
            let call = async {
                let instantiating = Instant::now();
                let proxy = pre.instantiate_async(&mut store).await?;
                store.data_mut().instantiation = instantiating.elapsed();
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            };
            // Past the deadline the call is dropped, which unwinds the guest off its fiber; the
            // store stays ours to measure, and the stop is reported as the epoch path's is.
            let result = match timer {
                Some(at) => tokio::time::timeout_at(at, call)
                    .await
                    .unwrap_or_else(|_| Err(wasmtime::Error::from(wasmtime::Trap::Interrupt))),
                None => call.await,
            };
            (store, result)
        });

        // Read the response while the guest writes it. If the guest finishes (or traps)
        // first, its store is dropped, which closes the response channels.
        let response = async {
            let resp = receiver
                .await
                .map_err(|_| "the function returned without setting a response".to_owned())?
                .map_err(|code| format!("the function answered with an error: {code:?}"))?;
            let (parts, body) = resp.into_parts();
            let body =
                body.collect().await.map_err(|e| format!("the function's response body failed: {e}"))?.to_bytes();
            Ok::<_, String>(GuestResponse { parts, body })
        };
        tokio::pin!(response);
        let (finished, response) = tokio::select! {
            r = &mut response => (guest.await, r),
            g = &mut guest => {
                // Measure before the store goes, then let the channels close.
                let finished = g.map(|(store, result)| self.ended(store, started, result));
                let r = response.await;
                return Ok(self.finish(finished.map_err(|e| e.to_string()), r));
            }
        };
        let finished = finished.map(|(store, result)| self.ended(store, started, result)).map_err(|e| e.to_string());
        Ok(self.finish(finished, response))
    }

    /// Measure a finished invocation, then let its store go ([`release`]).
    fn ended(&self, store: Store<InvocationState>, started: Instant, result: wasmtime::Result<()>) -> Ended {
        let ended = Ended { usage: self.usage(&store, started), result, memory: store.data().memory.clone() };
        release(store);
        ended
    }

    fn usage(&self, store: &Store<InvocationState>, started: Instant) -> Usage {
        let nn = store.data().nn_meter();
        let fuel =
            if self.options.fuel { self.options.fuel_budget.saturating_sub(store.get_fuel().unwrap_or(0)) } else { 0 };
        Usage {
            fuel,
            wall: started.elapsed(),
            inference: nn.inference,
            inference_queued: nn.queued,
            computes: nn.computes,
            peak_memory: store.data().memory.peak() as u64,
            pixels: 0,
            instantiation: store.data().instantiation,
        }
    }

    fn finish(&self, finished: Result<Ended, String>, response: Result<GuestResponse, String>) -> Invocation {
        let mut detail = None;
        let (mut usage, guest_result) = match finished {
            Ok(Ended { usage, result, memory }) => (
                usage,
                result.map_err(|e| {
                    detail = Some(format!("{e:?}"));
                    Failure::of(&e, &memory)
                }),
            ),
            Err(join_error) => {
                (Usage::default(), Err((Failure::Trap, format!("the invocation task failed: {join_error}"))))
            }
        };
        let outcome = match (response, guest_result) {
            (Ok(resp), Ok(())) => {
                let (answer, pixels) = resp.into_answer();
                usage.pixels = pixels;
                Outcome::Answered(answer)
            }
            (Ok(_), Err((kind, trap))) => Outcome::Failed(kind, format!("the function failed after answering: {trap}")),
            (Err(missing), Ok(())) => Outcome::Failed(Failure::Trap, missing),
            (Err(_), Err((kind, trap))) => Outcome::Failed(kind, trap),
        };
        Invocation { outcome, usage, detail }
    }
}

/// With fuel, the guest yields to the async runtime after this many units (instructions):
/// a few milliseconds of Wasm on these machines, like the epoch path's 10 ms tick.
pub const FUEL_YIELD_INTERVAL: u64 = 10_000_000;

/// Drop a finished invocation's store on a blocking thread: giving its instance back to the
/// pool resets the linear memory it wrote (`engine`: kept resident, only the dirtied pages
/// reset), 0.85–1 ms for the function on a 1280×720 photograph and ~10 ms for the Spin path's
/// baked provider (~70 MB written), which the answer need not wait for. A request that comes
/// while its predecessor's slot is still being reset takes another slot (a cold one faults its
/// memory image in once); from then on requests alternate between warm slots. Measured on the
/// Spin path (coffee.png, one client): client time minus the invocation's wall time, median
/// of 15, 6.0 ms against 12.8 ms when the provider's store was dropped before answering.
fn release(store: Store<InvocationState>) {
    drop(tokio::task::spawn_blocking(move || drop(store)));
}
