//! The host side of wasi-nn's resources: what a guest's `graph`, `graph-execution-context`
//! and `error` handles stand for in the store's resource table. The generated bindings name
//! these types; [`crate::host`] creates and reads them.

use std::sync::Arc;

use crate::ErrorCode;
use crate::backend::Graph;

/// The host side of a `graph` resource.
pub struct GraphResource {
    pub(crate) name: String,
    pub(crate) graph: Arc<dyn Graph>,
}

/// The host side of a `graph-execution-context` resource.
pub struct ContextResource {
    pub(crate) name: String,
    pub(crate) graph: Arc<dyn Graph>,
}

/// The host side of an `error` resource.
#[derive(Debug)]
pub struct ErrorResource {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}
