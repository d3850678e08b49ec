//! Host bindings generated from `wit/deps/wasi-nn/wasi-nn.wit` (documented by the
//! wasi-nn specification, not here).
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "wasi:nn/ml",
    path: "../wit/deps/wasi-nn",
    with: {
        "wasi:nn/graph.graph": super::host::GraphResource,
        "wasi:nn/tensor.tensor": super::backend::Tensor,
        "wasi:nn/inference.graph-execution-context": super::host::ContextResource,
        "wasi:nn/errors.error": super::host::ErrorResource,
    },
    imports: {
        "wasi:nn/inference.[method]graph-execution-context.compute": async | trappable,
        default: trappable,
    },
});
