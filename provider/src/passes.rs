//! The graph passes that put the provider's own 3×3 convolutions in a plan: [`conv3x3_ops`]
//! rewrites a decluttered model's 3×3 convolutions (each with a leaky ReLU that is its only
//! consumer folded in) into [`Winograd3x3`] or [`Direct3x3`] ops, and [`fuse_pools`] folds a
//! 2×2 max pool that alone reads such an op's output into it. Which lowering bakes use is
//! [`select`]ed by `YOLO_EDGE_NN_CONV` (`winograd` or tract's `im2col`).

use std::sync::atomic::{AtomicBool, Ordering};

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::KernelFormat;
use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::{DataFormat, LeakyRelu};

use crate::direct::Direct3x3;
use crate::pool::MaxPool2x2S2;
use crate::winograd::Winograd3x3;

/// Convolutions with fewer input channels are computed directly ([`Direct3x3`]): their GEMMs
/// are too thin for the transforms to pay (yolov3-tiny's first layer has 3).
pub const MIN_CHANNELS: usize = 8;

/// Whether models prepared from now on get [`conv3x3_ops`] (else tract's im2col lowering for
/// every convolution).
pub static ENABLED: AtomicBool = AtomicBool::new(true);

/// Choose how the plans prepared from now on compute 3×3 convolutions: `"winograd"` (the
/// default) or `"im2col"` (tract's own); false for an unknown name.
pub fn select(name: &str) -> bool {
    let on = match name {
        "winograd" => true,
        "im2col" => false,
        _ => return false,
    };
    ENABLED.store(on, Ordering::Relaxed);
    true
}

/// The leaky ReLU's slope, if `node` is nothing but a leaky ReLU.
fn leaky_alpha(node: &TypedNode) -> Option<f32> {
    let op = node.op_as::<ElementWiseOp>()?;
    if op.1.is_some() {
        return None;
    }
    op.0.downcast_ref::<LeakyRelu>().map(|l| l.alpha)
}

/// The f32 values of a constant outlet, if it is one.
fn constant(model: &TypedModel, outlet: OutletId) -> Option<Vec<f32>> {
    let konst = model.outlet_fact(outlet).ok()?.konst.clone()?;
    let view = konst.to_plain_array_view::<f32>().ok()?;
    Some(view.iter().copied().collect())
}

/// The op for conv node `id`, if it is a 3×3 convolution this module computes ([`Winograd3x3`]
/// when `winograd`, or [`Direct3x3`] under [`MIN_CHANNELS`] input channels), and the outlet it
/// replaces (the convolution's, or that of the leaky ReLU folded in).
fn conv3x3_for(model: &TypedModel, id: usize, winograd: bool) -> TractResult<Option<(Box<dyn TypedOp>, OutletId)>> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else { return Ok(None) };
    let spec = &conv.pool_spec;
    let fact = model.outlet_fact(node.inputs[0])?;
    let Some(shape) = fact.shape.as_concrete() else { return Ok(None) };
    let (cin, cout) = (conv.input_channels(), conv.output_channels());
    let one = |v: &[usize]| v.iter().all(|&x| x == 1);
    let fits = conv.q_params.is_none()
        && conv.group == 1
        && conv.kernel_fmt == KernelFormat::OIHW
        && fact.datum_type == f32::datum_type()
        && match spec.data_format {
            DataFormat::NCHW => shape.len() == 4,
            DataFormat::CHW => shape.len() == 3,
            _ => false,
        }
        && shape[shape.len() - 3] == cin
        && spec.kernel_shape[..] == [3, 3]
        && one(&spec.strides())
        && one(&spec.dilations())
        && match &spec.padding {
            PaddingSpec::Explicit(before, after) | PaddingSpec::ExplicitOnnxPool(before, after, _) => {
                one(before) && one(after)
            }
            PaddingSpec::SameUpper | PaddingSpec::SameLower => true,
            PaddingSpec::Valid => false,
        }
        && cout.is_multiple_of(4)
        && (winograd || cin < MIN_CHANNELS);
    if !fits {
        return Ok(None);
    }
    let (Some(kernel), Some(bias)) = (constant(model, node.inputs[1]), constant(model, node.inputs[2])) else {
        return Ok(None);
    };
    let bias = match bias.len() {
        1 => vec![bias[0]; cout],
        n if n == cout => bias,
        _ => return Ok(None),
    };
    // Fold a leaky ReLU that alone consumes the convolution's output.
    let mut replaced = OutletId::new(id, 0);
    let mut alpha = None;
    if let [next] = model.outlet_successors(replaced)
        && let Some(a) = leaky_alpha(model.node(next.node))
        && !model.output_outlets()?.contains(&replaced)
    {
        alpha = Some(a);
        replaced = OutletId::new(next.node, 0);
    }
    let op: Box<dyn TypedOp> = if cin >= MIN_CHANNELS {
        Box::new(Winograd3x3::new(cin, cout, &kernel, bias, alpha)?)
    } else {
        Box::new(Direct3x3::new(cin, cout, &kernel, bias, alpha)?)
    };
    Ok(Some((op, replaced)))
}

/// Replace every convolution of the decluttered `model` that [`Winograd3x3`] (only when
/// `winograd`: its weight transform costs ~0.8 s for yolov3-tiny, paid once by a bake, but by
/// every request that loads a model) or [`Direct3x3`] computes; returns how many.
pub fn conv3x3_ops(model: &mut TypedModel, winograd: bool) -> TractResult<usize> {
    let mut count = 0;
    for id in model.eval_order()? {
        let Some((op, replaced)) = conv3x3_for(model, id, winograd)? else { continue };
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(model, model.node(id).inputs[0])?;
        let name = model.node(replaced.node).name.clone();
        let wire = patch.wire_node(format!("{name}.conv3x3"), op, &[input])?[0];
        patch.shunt_outside(model, replaced, wire)?;
        patch.apply(model)?;
        count += 1;
    }
    model.compact()?;
    Ok(count)
}

/// Fold each [`MaxPool2x2S2`] of the optimised `model` whose input is a 3×3 op's output
/// ([`Direct3x3`], [`Winograd3x3`]) and nothing else's into that op: its full-size output is
/// then never written nor read again (yolov3-tiny's first layer: 16 × 416 × 416, 11 MB);
/// returns how many.
pub fn fuse_pools(model: &mut TypedModel) -> TractResult<usize> {
    let mut count = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        if !node.op_is::<MaxPool2x2S2>() {
            continue;
        }
        let source = node.inputs[0];
        let producer = model.node(source.node);
        let fused: Box<dyn TypedOp> = if let Some(op) = producer.op_as::<Direct3x3>().and_then(Direct3x3::pooled) {
            Box::new(op)
        } else if let Some(op) = producer.op_as::<Winograd3x3>().and_then(Winograd3x3::pooled) {
            Box::new(op)
        } else {
            continue;
        };
        if model.outlet_successors(source).len() != 1 || model.output_outlets()?.contains(&source) {
            continue;
        }
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(model, producer.inputs[0])?;
        let wire = patch.wire_node(format!("{}.pooled", producer.name), fused, &[input])?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), wire)?;
        patch.apply(model)?;
        count += 1;
    }
    model.compact()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use tract_onnx::tract_core::ops::cnn::PoolSpec;
    use tract_onnx::tract_core::ops::nn::leaky_relu;

    use super::*;
    use crate::conv3x3::reference::values;

    /// A tract graph `input → Conv(3×3, pad 1) → LeakyRelu` with constant weights.
    fn conv_model(cin: usize, cout: usize, h: usize, w: usize, kernel: &[f32], bias: &[f32]) -> TypedModel {
        let mut model = TypedModel::default();
        let input = model.add_source("input", f32::fact([1, cin, h, w])).unwrap();
        let kernel = model.add_const("kernel", Tensor::from_shape(&[cout, cin, 3, 3], kernel).unwrap()).unwrap();
        let bias = model.add_const("bias", Tensor::from_shape(&[cout], bias).unwrap()).unwrap();
        let spec = PoolSpec::new(
            DataFormat::NCHW,
            tvec!(3, 3),
            PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)),
            None,
            None,
            cin,
            cout,
        );
        let conv = model.wire_node("conv", Conv::new(spec, KernelFormat::OIHW, 1, None), &[input, kernel, bias]);
        let leaky = model.wire_node("leaky", leaky_relu(0.1), &conv.unwrap()).unwrap();
        model.select_output_outlets(&leaky).unwrap();
        model
    }

    #[test]
    fn the_pass_replaces_a_conv_and_its_leaky_relu_with_the_same_results() {
        // 16 input channels: Winograd; 3 (an image): direct.
        for (cin, cout, h, w, winograd) in [(16, 8, 13, 13, true), (3, 16, 11, 19, false)] {
            let (kernel, bias) = (values(cout * cin * 9, 4), values(cout, 5));
            let input = Tensor::from_shape(&[1, cin, h, w], &values(cin * h * w, 6)).unwrap();
            let run = |model: TypedModel| {
                let plan = model.into_optimized().unwrap().into_runnable().unwrap();
                let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap().remove(0);
                out.to_plain_array_view::<f32>().unwrap().iter().copied().collect::<Vec<f32>>()
            };
            let want = run(conv_model(cin, cout, h, w, &kernel, &bias));
            // A model loaded while serving keeps tract's lowering where Winograd would apply.
            let mut served = conv_model(cin, cout, h, w, &kernel, &bias).into_decluttered().unwrap();
            assert_eq!(conv3x3_ops(&mut served, false).unwrap(), usize::from(!winograd));
            let mut model = conv_model(cin, cout, h, w, &kernel, &bias).into_decluttered().unwrap();
            assert_eq!(conv3x3_ops(&mut model, true).unwrap(), 1);
            assert!(model.nodes().iter().any(|n| n.op_is::<Winograd3x3>() == winograd));
            assert!(model.nodes().iter().any(|n| n.op_is::<Direct3x3>() != winograd));
            assert!(!model.nodes().iter().any(|n| n.op_is::<Conv>() || leaky_alpha(n).is_some()), "{model}");
            let got = run(model);
            assert_eq!(got.len(), want.len());
            let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "{cin} channels: worst difference {worst}");
            assert!(got.iter().any(|&v| v < 0.0) && got.iter().any(|&v| v > 0.0), "the leaky ReLU kept its slope");
        }
    }

    /// The pass folds the pools that follow a direct and a Winograd convolution (and not one
    /// whose input another node also reads): the plan computes the same.
    #[test]
    fn fuse_pools_folds_the_pools_after_the_3x3_ops() {
        let (cin, mid, cout, h, w) = (3, 8, 8, 16, 32);
        let mut model = TypedModel::default();
        let input = model.add_source("input", f32::fact([1, cin, h, w])).unwrap();
        let first = Direct3x3::new(cin, mid, &values(mid * cin * 9, 13), values(mid, 14), Some(0.1)).unwrap();
        let conv = model.wire_node("first", first, &[input]).unwrap();
        let pool = model.wire_node("pool1", MaxPool2x2S2, &conv).unwrap();
        let second = Winograd3x3::new(mid, cout, &values(cout * mid * 9, 15), values(cout, 16), Some(0.1)).unwrap();
        let conv = model.wire_node("second", second, &pool).unwrap();
        let pool = model.wire_node("pool2", MaxPool2x2S2, &conv).unwrap();
        // `second`'s output is also an output of the model: that pool stays.
        let third = Winograd3x3::new(cout, cout, &values(cout * cout * 9, 17), values(cout, 18), None).unwrap();
        let conv3 = model.wire_node("third", third, &pool).unwrap();
        let pool3 = model.wire_node("pool3", MaxPool2x2S2, &conv3).unwrap();
        model.select_output_outlets(&[pool3[0], conv3[0]]).unwrap();
        let image = Tensor::from_shape(&[1, cin, h, w], &values(cin * h * w, 19)).unwrap();
        let run = |model: TypedModel| {
            let outs = model.into_runnable().unwrap().run(tvec!(image.clone().into_tvalue())).unwrap();
            outs.iter()
                .map(|o| {
                    (o.shape().to_vec(), o.to_plain_array_view::<f32>().unwrap().iter().copied().collect::<Vec<f32>>())
                })
                .collect::<Vec<_>>()
        };
        let want = run(model.clone());
        assert_eq!(fuse_pools(&mut model).unwrap(), 2);
        assert_eq!(model.nodes().iter().filter(|n| n.op_is::<MaxPool2x2S2>()).count(), 1, "{model}");
        assert_eq!(run(model), want);
    }
}
