//! Composing the function with a wasi-nn provider component into one component (the
//! `wac-graph` crate, the library behind `wac plug`): the provider's `wasi:nn` exports are
//! plugged into the function's `wasi:nn` imports, so the result imports only WASI and
//! wasi-http — what stock Spin provides.

use anyhow::Context as _;
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

/// Plug `provider`'s exports into `socket`'s matching imports; the composed component's bytes.
pub fn plug(socket: &[u8], provider: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let socket = Package::from_bytes("yolo-edge:function", None, socket.to_vec(), graph.types_mut())
        .context("the function is not a valid component")?;
    let socket = graph.register_package(socket)?;
    let provider = Package::from_bytes("yolo-edge:nn-provider", None, provider.to_vec(), graph.types_mut())
        .context("the provider is not a valid component")?;
    let provider = graph.register_package(provider)?;
    wac_graph::plug(&mut graph, vec![provider], socket)
        .context("the provider's exports do not fit the function's imports")?;
    graph.encode(EncodeOptions::default()).context("cannot encode the composed component")
}
