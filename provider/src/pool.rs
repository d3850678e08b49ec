//! A faster 2×2, stride-2 max pool for the plan (yolov3-tiny has five of them).
//!
//! tract's `OptMaxPool` vectorises only the stride-1 2×2 pool; the stride-2 ones take a
//! scalar walk whose `f32::max` becomes a call to `fmaxf` on wasm32 (Wasm's `f32.max` has other
//! NaN rules), ~60 ns per output: 50–80 ms of yolov3-tiny's ~350 ms in Wasm. [`fast_pools`]
//! swaps each such node of an optimised plan for [`MaxPool2x2S2`], which does the same
//! arithmetic with comparisons on whole rows (SIMD128 on wasm32).

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{OptMaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Max over each 2×2 block of the last two axes of an f32 tensor of even height and width,
/// channels first (`NCHW` or `CHW`), no padding: `[.., h, w]` → `[.., h / 2, w / 2]`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct MaxPool2x2S2;

impl Op for MaxPool2x2S2 {
    fn name(&self) -> StaticName {
        "MaxPool2x2S2".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2S2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        ensure!(shape.len() >= 2, "MaxPool2x2S2 needs a height and a width, got {shape:?}");
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        ensure!(h % 2 == 0 && w % 2 == 0, "MaxPool2x2S2 needs an even height and width, got {shape:?}");
        let mut out_shape: TVec<usize> = shape.into();
        let rank = out_shape.len();
        out_shape[rank - 2] = h / 2;
        out_shape[rank - 1] = w / 2;
        let input = input.to_plain_array_view::<f32>()?;
        let input = input.as_slice().context("MaxPool2x2S2 needs a contiguous input")?;
        let mut output = vec![0f32; input.len() / 4];
        for (plane, out) in input.chunks_exact(h * w).zip(output.chunks_exact_mut(h * w / 4)) {
            for (rows, out) in plane.chunks_exact(2 * w).zip(out.chunks_exact_mut(w / 2)) {
                let (top, bottom) = rows.split_at(w);
                max_rows(top, bottom, out);
            }
        }
        Ok(tvec!(Tensor::from_shape(&out_shape, &output)?.into_tvalue()))
    }
}

impl TypedOp for MaxPool2x2S2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape = inputs[0].shape.to_tvec();
        let rank = shape.len();
        shape[rank - 2] = shape[rank - 2].clone() / 2;
        shape[rank - 1] = shape[rank - 1].clone() / 2;
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

/// The larger of two values (the second when they compare equal or unordered).
#[inline(always)]
fn max2(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `out[x] = max(top[2x], top[2x + 1], bottom[2x], bottom[2x + 1])`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn max_rows(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    use core::arch::wasm32::{f32x4, f32x4_extract_lane, f32x4_pmax, i32x4_shuffle};
    let load = |s: &[f32]| f32x4(s[0], s[1], s[2], s[3]);
    let mut done = 0;
    for ((t, b), o) in top.chunks_exact(8).zip(bottom.chunks_exact(8)).zip(out.chunks_exact_mut(4)) {
        // Vertical maxima of 8 columns, then the maxima of their even and odd columns.
        let lo = f32x4_pmax(load(&t[..4]), load(&b[..4]));
        let hi = f32x4_pmax(load(&t[4..]), load(&b[4..]));
        let m = f32x4_pmax(i32x4_shuffle::<0, 2, 4, 6>(lo, hi), i32x4_shuffle::<1, 3, 5, 7>(lo, hi));
        o[0] = f32x4_extract_lane::<0>(m);
        o[1] = f32x4_extract_lane::<1>(m);
        o[2] = f32x4_extract_lane::<2>(m);
        o[3] = f32x4_extract_lane::<3>(m);
        done += 4;
    }
    max_rows_scalar(&top[2 * done..], &bottom[2 * done..], &mut out[done..]);
}

/// `out[x] = max(top[2x], top[2x + 1], bottom[2x], bottom[2x + 1])`.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn max_rows(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    max_rows_scalar(top, bottom, out);
}

fn max_rows_scalar(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    for ((t, b), o) in top.chunks_exact(2).zip(bottom.chunks_exact(2)).zip(out.iter_mut()) {
        *o = max2(max2(t[0], t[1]), max2(b[0], b[1]));
    }
}

/// Replace every `OptMaxPool` of `model` that [`MaxPool2x2S2`] computes.
pub fn fast_pools(model: &mut TypedModel) -> TractResult<()> {
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(pool) = node.op_as::<OptMaxPool>() else { continue };
        let spec = &pool.pool_spec;
        let fact = model.outlet_fact(node.inputs[0])?;
        let Some(shape) = fact.shape.as_concrete() else { continue };
        let fits = pool.with_index_outputs.is_none()
            && fact.datum_type == f32::datum_type()
            && match spec.data_format {
                DataFormat::NCHW => shape.len() == 4,
                DataFormat::CHW => shape.len() == 3,
                _ => false,
            }
            && spec.kernel_shape[..] == [2, 2]
            && spec.strides()[..] == [2, 2]
            && spec.dilations()[..] == [1, 1]
            && match &spec.padding {
                PaddingSpec::Valid => true,
                PaddingSpec::Explicit(before, after) | PaddingSpec::ExplicitOnnxPool(before, after, _) => {
                    before.iter().chain(after).all(|&p| p == 0)
                }
                _ => false,
            }
            && shape[shape.len() - 2] % 2 == 0
            && shape[shape.len() - 1] % 2 == 0;
        if fits {
            model.node_mut(id).op = Box::new(MaxPool2x2S2);
        }
    }
    Ok(())
}
