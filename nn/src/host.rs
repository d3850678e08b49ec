//! The generated wasi-nn `Host` traits, implemented on [`NnView`].

use std::sync::Arc;

use wasmtime::component::Resource;

use crate::backend::{BackendError, Cancel, Graph, Tensor};
use crate::bindings::wasi::nn::{errors, graph, inference, tensor};
use crate::onnx::OnnxGraph;
use crate::resources::{ContextResource, ErrorResource, GraphResource};
use crate::{ErrorCode, ExecutionTarget, GraphEncoding, NnView, TensorType};

type NnResult<T> = wasmtime::Result<Result<T, Resource<ErrorResource>>>;

impl NnView<'_> {
    fn fail<T>(&mut self, code: ErrorCode, message: impl Into<String>) -> NnResult<T> {
        let message = message.into();
        tracing::debug!(?code, %message, "wasi-nn error returned to the guest");
        Ok(Err(self.table.push(ErrorResource { code, message })?))
    }
}

impl graph::Host for NnView<'_> {
    fn load(
        &mut self,
        builders: Vec<graph::GraphBuilder>,
        encoding: GraphEncoding,
        target: ExecutionTarget,
    ) -> NnResult<Resource<GraphResource>> {
        let options = self.ctx.registry.options();
        // A graph loaded from bytes lives as long as this store: one session is enough.
        let built: Result<Arc<dyn Graph>, BackendError> = match (encoding, builders.as_slice()) {
            (GraphEncoding::Onnx, [model]) => {
                let one = crate::onnx::OnnxOptions { sessions: 1, ..options.onnx.clone() };
                OnnxGraph::from_bytes(model, target, &one).map(|g| Arc::new(g) as Arc<dyn Graph>)
            }
            (GraphEncoding::Openvino, [xml, weights]) if crate::openvino::runtime_loaded() => {
                let one = crate::openvino::OpenVinoOptions { requests: 1, ..options.openvino.clone() };
                crate::openvino::OpenVinoGraph::from_ir(xml, weights, target, &one)
                    .map(|g| Arc::new(g) as Arc<dyn Graph>)
            }
            (GraphEncoding::Openvino, [_, _]) => Err(BackendError::new(
                ErrorCode::UnsupportedOperation,
                "OpenVINO is not loaded in this host (start it with --backend openvino or a model that uses it)",
            )),
            (GraphEncoding::Onnx | GraphEncoding::Openvino, _) => Err(BackendError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "an {encoding:?} graph is {} builder(s), got {}",
                    if encoding == GraphEncoding::Onnx { 1 } else { 2 },
                    builders.len()
                ),
            )),
            (other, _) => Err(BackendError::new(
                ErrorCode::InvalidEncoding,
                format!("graph encoding {other:?} is not supported: this host loads ONNX and OpenVINO graphs"),
            )),
        };
        match built {
            Ok(graph) => Ok(Ok(self.table.push(GraphResource { name: "<bytes>".to_owned(), graph })?)),
            Err(e) => self.fail(e.code, e.message),
        }
    }

    fn load_by_name(&mut self, name: String) -> NnResult<Resource<GraphResource>> {
        match self.ctx.registry.get(&name) {
            Some(named) => Ok(Ok(self.table.push(GraphResource { name: named.name, graph: named.graph })?)),
            None => {
                let known = self.ctx.registry.names().join(", ");
                self.fail(ErrorCode::NotFound, format!("no graph named {name:?} is loaded (loaded: {known})"))
            }
        }
    }
}

impl graph::HostGraph for NnView<'_> {
    fn init_execution_context(&mut self, graph: Resource<GraphResource>) -> NnResult<Resource<ContextResource>> {
        let g = self.table.get(&graph)?;
        let context = ContextResource { name: g.name.clone(), graph: g.graph.clone() };
        Ok(Ok(self.table.push(context)?))
    }

    fn drop(&mut self, graph: Resource<GraphResource>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        Ok(())
    }
}

impl inference::Host for NnView<'_> {}

impl inference::HostGraphExecutionContext for NnView<'_> {
    async fn compute(
        &mut self,
        context: Resource<ContextResource>,
        inputs: Vec<inference::NamedTensor>,
    ) -> NnResult<Vec<inference::NamedTensor>> {
        let (name, graph) = {
            let c = self.table.get(&context)?;
            (c.name.clone(), c.graph.clone())
        };
        let mut owned = Vec::with_capacity(inputs.len());
        for (input, tensor) in inputs {
            owned.push((input, self.table.delete(tensor)?));
        }
        let cancel = Arc::new(Cancel::default());
        let watched = cancel.clone();
        let mut run = tokio::task::spawn_blocking(move || graph.compute(owned, &watched));
        let joined = match tokio::time::timeout(self.ctx.timeout, &mut run).await {
            Ok(joined) => joined,
            Err(_) => {
                // Past the deadline: stop the backend and wait for it to give the thread back.
                cancel.cancel();
                tracing::warn!(graph = %name, timeout = ?self.ctx.timeout, "inference deadline passed; stopping it");
                run.await
            }
        };
        let computed = match joined {
            Ok(Ok(computed)) => computed,
            Ok(Err(BackendError { code, message })) => {
                return self.fail(code, format!("graph {name:?}: {message}"));
            }
            Err(panic) => {
                return self.fail(ErrorCode::RuntimeError, format!("graph {name:?}: the backend panicked: {panic}"));
            }
        };
        self.ctx.meter.computes += 1;
        self.ctx.meter.inference += computed.inference;
        self.ctx.meter.queued += computed.queued;
        let mut outputs = Vec::with_capacity(computed.outputs.len());
        for (output, tensor) in computed.outputs {
            outputs.push((output, self.table.push(tensor)?));
        }
        Ok(Ok(outputs))
    }

    fn drop(&mut self, context: Resource<ContextResource>) -> wasmtime::Result<()> {
        self.table.delete(context)?;
        Ok(())
    }
}

impl tensor::Host for NnView<'_> {}

impl tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dimensions: tensor::TensorDimensions,
        ty: TensorType,
        data: tensor::TensorData,
    ) -> wasmtime::Result<Resource<Tensor>> {
        Ok(self.table.push(Tensor { dims: dimensions, ty, data })?)
    }

    fn dimensions(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<tensor::TensorDimensions> {
        Ok(self.table.get(&tensor)?.dims.clone())
    }

    fn ty(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<TensorType> {
        Ok(self.table.get(&tensor)?.ty)
    }

    fn data(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<tensor::TensorData> {
        Ok(self.table.get(&tensor)?.data.clone())
    }

    fn drop(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<()> {
        self.table.delete(tensor)?;
        Ok(())
    }
}

impl errors::Host for NnView<'_> {}

impl errors::HostError for NnView<'_> {
    fn code(&mut self, error: Resource<ErrorResource>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&error)?.code)
    }

    fn data(&mut self, error: Resource<ErrorResource>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.message.clone())
    }

    fn drop(&mut self, error: Resource<ErrorResource>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        Ok(())
    }
}
