//! Host bindings generated from `wit/deps/wasi-nn/wasi-nn.wit` (documented by the
//! wasi-nn specification, not here).
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "wasi:nn/ml",
    path: "../wit/deps/wasi-nn",
    with: {
        "wasi:nn/graph.graph": crate::resources::GraphResource,
        "wasi:nn/tensor.tensor": crate::backend::Tensor,
        "wasi:nn/inference.graph-execution-context": crate::resources::ContextResource,
        "wasi:nn/errors.error": crate::resources::ErrorResource,
    },
    imports: {
        "wasi:nn/inference.[method]graph-execution-context.compute": async | trappable,
        default: trappable,
    },
});
