//! What a wasi-nn backend provides: graphs that compute named tensors.

use std::time::Duration;

use crate::{ErrorCode, TensorType};

/// A tensor as wasi-nn passes it: dimensions, element type and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub dims: Vec<u32>,
    /// Element type.
    pub ty: TensorType,
    /// Raw little-endian data, `product(dims) * size_of(ty)` bytes.
    pub data: Vec<u8>,
}

impl Tensor {
    /// Size in bytes of one element of `ty`.
    pub fn element_size(ty: TensorType) -> usize {
        match ty {
            TensorType::U8 => 1,
            TensorType::Fp16 | TensorType::Bf16 => 2,
            TensorType::Fp32 | TensorType::I32 => 4,
            TensorType::Fp64 | TensorType::I64 => 8,
        }
    }

    /// Check that the data length matches the dimensions and type.
    pub fn validate(&self) -> Result<(), BackendError> {
        let count = self.dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
        let expected = count.and_then(|c| c.checked_mul(Self::element_size(self.ty)));
        if expected != Some(self.data.len()) {
            return Err(BackendError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "tensor of dimensions {:?} and type {:?} needs {} bytes, got {}",
                    self.dims,
                    self.ty,
                    expected.map_or("too many".to_owned(), |e| e.to_string()),
                    self.data.len()
                ),
            ));
        }
        Ok(())
    }
}

/// A backend failure, with the wasi-nn error code it maps to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// The wasi-nn error code.
    pub code: ErrorCode,
    /// The backend's own message.
    pub message: String,
}

impl BackendError {
    /// Make an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The outputs of one `compute`, and what it cost.
#[derive(Debug)]
pub struct Computed {
    /// Named output tensors, in the model's output order.
    pub outputs: Vec<(String, Tensor)>,
    /// Time spent inside the backend.
    pub inference: Duration,
    /// Time spent waiting for a free session.
    pub queued: Duration,
}

/// Lets the host stop a running `compute` (on timeout). A backend registers how to stop
/// its run with [`Cancel::on_cancel`]; the host calls [`Cancel::cancel`].
#[derive(Default)]
pub struct Cancel {
    cancelled: std::sync::atomic::AtomicBool,
    stop: std::sync::Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl Cancel {
    /// Register how to stop the run in progress (called at once if already cancelled).
    pub fn on_cancel(&self, stop: impl Fn() + Send + Sync + 'static) {
        let mut slot = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_cancelled() {
            stop();
        }
        *slot = Some(Box::new(stop));
    }

    /// Stop the run.
    pub fn cancel(&self) {
        let slot = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        self.cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(stop) = slot.as_ref() {
            stop();
        }
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A fixed set of backend objects (sessions, infer requests) that one inference at a time
/// each borrows: `checkout` waits until one is free; the guard gives it back on drop.
pub struct Pool<T> {
    idle: std::sync::Mutex<Vec<T>>,
    freed: std::sync::Condvar,
}

/// One borrowed pool member.
pub struct Pooled<'a, T> {
    pool: &'a Pool<T>,
    item: Option<T>,
}

impl<T> Pool<T> {
    /// A pool of `items`.
    pub fn new(items: Vec<T>) -> Self {
        Self { idle: std::sync::Mutex::new(items), freed: std::sync::Condvar::new() }
    }

    /// Borrow a free member, waiting for one if all are busy.
    pub fn checkout(&self) -> Pooled<'_, T> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(item) = idle.pop() {
                return Pooled { pool: self, item: Some(item) };
            }
            idle = self.freed.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<T> Pool<T> {
    /// Borrow a free member if there is one, without waiting.
    pub fn try_checkout(&self) -> Option<Pooled<'_, T>> {
        let item = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        Some(Pooled { pool: self, item: Some(item) })
    }
}

/// How many invocations are in flight in the whole host: the load an inference backend
/// adapts its threading to. The host enters it for each invocation; a backend reads it
/// when a `compute` starts. Clones share one count.
#[derive(Debug, Clone, Default)]
pub struct Demand(std::sync::Arc<std::sync::atomic::AtomicUsize>);

/// One unit of [`Demand`], given back on drop.
#[derive(Debug)]
pub struct Entered(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Demand {
    /// Count one more invocation in flight until the guard drops.
    pub fn enter(&self) -> Entered {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Entered(self.0.clone())
    }

    /// Invocations in flight now.
    pub fn current(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Adaptive threading: a backend object that uses every inference thread (the *latency*
/// member) for an inference that runs alone, and a pool of narrow ones (one thread each by
/// default) while other invocations are in flight, so a lone request gets every core and a
/// loaded host keeps every core busy without running more threads than cores.
pub struct Adaptive<T> {
    latency: Pool<T>,
    throughput: Pool<T>,
    demand: Demand,
}

impl<T> Adaptive<T> {
    /// `latency` (absent when the thread budget is one: every member is then alike) and
    /// the `throughput` pool, chosen between by `demand`.
    pub fn new(latency: Option<T>, throughput: Vec<T>, demand: Demand) -> Self {
        Self { latency: Pool::new(latency.into_iter().collect()), throughput: Pool::new(throughput), demand }
    }

    /// The member for one inference: the wide one when this is the only invocation in
    /// flight (or nothing is counted, as in a bare pipeline) and it is free; else a
    /// narrow one, waiting for it if all are busy.
    pub fn checkout(&self) -> Pooled<'_, T> {
        if self.demand.current() <= 1
            && let Some(wide) = self.latency.try_checkout()
        {
            return wide;
        }
        self.throughput.checkout()
    }
}

impl<T> std::ops::Deref for Pooled<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.item.as_ref().unwrap_or_else(|| unreachable!("present until dropped"))
    }
}

impl<T> std::ops::DerefMut for Pooled<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.item.as_mut().unwrap_or_else(|| unreachable!("present until dropped"))
    }
}

impl<T> Drop for Pooled<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(item);
            self.pool.freed.notify_one();
        }
    }
}

/// Where a backend's native library is looked for, in order: `explicit` (a file, or a
/// directory holding `name`), the directory of the running executable, then `fallback`
/// (where `cargo xtask` sets it up in this repository). The first that exists, or an error
/// naming every place looked at and what to do.
pub fn find_library(
    explicit: Option<&std::path::Path>,
    name: &str,
    fallback: std::path::PathBuf,
    what: &str,
    flag: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = explicit {
        candidates.push(if p.is_dir() { p.join(name) } else { p.to_owned() });
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(std::path::Path::to_owned)) {
        candidates.push(dir.join(name));
    }
    candidates.push(fallback.join(name));
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "{what}'s library was not found (looked for {}); run `cargo xtask run` once to set it up, or pass {flag} PATH",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

/// A loaded graph. Implementations are shared by every store and must allow concurrent
/// `compute` calls (each blocks its calling thread; the host runs them on the blocking pool).
pub trait Graph: Send + Sync {
    /// Run the graph on named inputs; stop early (with [`ErrorCode::Timeout`]) when `cancel` fires.
    fn compute(&self, inputs: Vec<(String, Tensor)>, cancel: &Cancel) -> Result<Computed, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_inference_gets_the_wide_member_and_a_loaded_host_the_narrow_ones() {
        let demand = Demand::default();
        let members = Adaptive::new(Some("wide"), vec!["narrow 1", "narrow 2"], demand.clone());
        assert_eq!(*members.checkout(), "wide", "nothing counted: a bare pipeline's lone run");
        let first = demand.enter();
        {
            let wide = members.checkout();
            assert_eq!(*wide, "wide", "the only invocation in flight");
            assert!(members.checkout().starts_with("narrow"), "the wide member is busy");
        }
        let second = demand.enter();
        assert_eq!(demand.current(), 2);
        let (a, b) = (members.checkout(), members.checkout());
        assert!(a.starts_with("narrow") && b.starts_with("narrow") && *a != *b, "under load: one narrow member each");
        drop((a, b, first, second));
        assert_eq!(demand.current(), 0);
        assert_eq!(*members.checkout(), "wide");
        let alike = Adaptive::new(None, vec!["only"], Demand::default());
        assert_eq!(*alike.checkout(), "only", "a thread budget of one builds no wide member");
    }

    #[test]
    fn tensor_sizes_are_checked() {
        let ok = Tensor { dims: vec![1, 3, 2, 2], ty: TensorType::Fp32, data: vec![0; 48] };
        ok.validate().unwrap();
        let short = Tensor { data: vec![0; 47], ..ok.clone() };
        assert_eq!(short.validate().unwrap_err().code, ErrorCode::InvalidArgument);
        let huge = Tensor { dims: vec![u32::MAX, u32::MAX, u32::MAX], ty: TensorType::I64, data: vec![] };
        assert!(huge.validate().unwrap_err().message.contains("too many"));
        let bytes = Tensor { dims: vec![5], ty: TensorType::U8, data: vec![1; 5] };
        bytes.validate().unwrap();
    }
}
