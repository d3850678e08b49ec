//! Faster 2×2 max pools for the plan: yolov3-tiny has five of stride 2 and one of stride 1.
//!
//! tract's `OptMaxPool` walks each output's window: for the stride-2 pools a scalar walk whose
//! `f32::max` becomes a call to `fmaxf` on wasm32 (Wasm's `f32.max` has other NaN rules), ~60
//! ns per output, 50–80 ms of yolov3-tiny's ~350 ms in Wasm; for the stride-1 one (13×13×512,
//! padded after), ~20 ns per output, 2–3 ms. [`fast_pools`] swaps each such node of an
//! optimised plan for [`MaxPool2x2S2`] or [`MaxPool2x2S1`], which do the same arithmetic with
//! comparisons on whole rows (SIMD128 on wasm32).

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

/// Max over each 2×2 window (stride 1) of the last two axes of an f32 tensor, channels first
/// (`NCHW` or `CHW`), padded after (ONNX `SAME_UPPER`): the window of the last row or column
/// has only the values inside the image. `[.., h, w]` → `[.., h, w]`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct MaxPool2x2S1;

impl Op for MaxPool2x2S1 {
    fn name(&self) -> StaticName {
        "MaxPool2x2S1".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2S1 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape: TVec<usize> = input.shape().into();
        ensure!(shape.len() >= 2, "MaxPool2x2S1 needs a height and a width, got {shape:?}");
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let input = input.to_plain_array_view::<f32>()?;
        let input = input.as_slice().context("MaxPool2x2S1 needs a contiguous input")?;
        let mut output = vec![0f32; input.len()];
        let mut column = vec![0f32; w];
        if h * w > 0 {
            for (plane, out) in input.chunks_exact(h * w).zip(output.chunks_exact_mut(h * w)) {
                for y in 0..h {
                    let top = &plane[y * w..][..w];
                    // The column maxima of rows y and y + 1 (row y alone at the bottom)...
                    match plane.get((y + 1) * w..(y + 2) * w) {
                        Some(bottom) => max_pairs(top, bottom, &mut column),
                        None => column.copy_from_slice(top),
                    }
                    // ...then of columns x and x + 1 (column x alone at the right).
                    let out = &mut out[y * w..][..w];
                    max_pairs(&column[..w - 1], &column[1..], &mut out[..w - 1]);
                    out[w - 1] = column[w - 1];
                }
            }
        }
        Ok(tvec!(Tensor::from_shape(&shape, &output)?.into_tvalue()))
    }
}

impl TypedOp for MaxPool2x2S1 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.to_tvec())))
    }

    as_op!();
}

/// `out[x] = max(a[x], b[x])`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn max_pairs(a: &[f32], b: &[f32], out: &mut [f32]) {
    use core::arch::wasm32::{f32x4_pmax, v128, v128_load, v128_store};
    let n = out.len().min(a.len()).min(b.len());
    let (a, b, out) = (&a[..n], &b[..n], &mut out[..n]);
    let whole = n - n % 4;
    for x in (0..whole).step_by(4) {
        // SAFETY: `x + 4 <= n`, the length of all three slices; wasm loads need no alignment.
        unsafe {
            let m = f32x4_pmax(v128_load(a[x..].as_ptr() as *const v128), v128_load(b[x..].as_ptr() as *const v128));
            v128_store(out[x..].as_mut_ptr() as *mut v128, m);
        }
    }
    for x in whole..n {
        out[x] = max2(a[x], b[x]);
    }
}

/// `out[x] = max(a[x], b[x])`.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn max_pairs(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
        *o = max2(*a, *b);
    }
}

/// The larger of two values (the second when they compare equal or unordered).
#[inline(always)]
fn max2(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// The maxima of the 2×2 blocks of two rows of 8 values (`top` and `bottom`, 2 vectors each):
/// vertical maxima first, then those of their even and odd columns.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn max_2x2(
    top: [core::arch::wasm32::v128; 2],
    bottom: [core::arch::wasm32::v128; 2],
) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::{f32x4_pmax, i32x4_shuffle};
    let (lo, hi) = (f32x4_pmax(top[0], bottom[0]), f32x4_pmax(top[1], bottom[1]));
    f32x4_pmax(i32x4_shuffle::<0, 2, 4, 6>(lo, hi), i32x4_shuffle::<1, 3, 5, 7>(lo, hi))
}

/// `out[x] = max(top[2x], top[2x + 1], bottom[2x], bottom[2x + 1])`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn max_rows(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    use core::arch::wasm32::{v128, v128_load, v128_store};
    let load = |s: &[f32]| {
        let s = &s[..4];
        // SAFETY: `s` has 4 values; wasm loads need no alignment.
        unsafe { v128_load(s.as_ptr() as *const v128) }
    };
    let mut done = 0;
    for ((t, b), o) in top.chunks_exact(8).zip(bottom.chunks_exact(8)).zip(out.chunks_exact_mut(4)) {
        let m = max_2x2([load(&t[..4]), load(&t[4..])], [load(&b[..4]), load(&b[4..])]);
        // SAFETY: `o` has 4 values; wasm stores need no alignment.
        unsafe { v128_store(o.as_mut_ptr() as *mut v128, m) };
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

/// Replace every `OptMaxPool` of `model` that [`MaxPool2x2S2`] or [`MaxPool2x2S1`] computes.
pub fn fast_pools(model: &mut TypedModel) -> TractResult<()> {
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(pool) = node.op_as::<OptMaxPool>() else { continue };
        let spec = &pool.pool_spec;
        let fact = model.outlet_fact(node.inputs[0])?;
        let Some(shape) = fact.shape.as_concrete() else { continue };
        let plain = pool.with_index_outputs.is_none()
            && fact.datum_type == f32::datum_type()
            && match spec.data_format {
                DataFormat::NCHW => shape.len() == 4,
                DataFormat::CHW => shape.len() == 3,
                _ => false,
            }
            && spec.kernel_shape[..] == [2, 2]
            && spec.dilations()[..] == [1, 1];
        let unpadded = match &spec.padding {
            PaddingSpec::Valid => true,
            PaddingSpec::Explicit(before, after) | PaddingSpec::ExplicitOnnxPool(before, after, _) => {
                before.iter().chain(after).all(|&p| p == 0)
            }
            _ => false,
        };
        let padded_after = match &spec.padding {
            PaddingSpec::SameUpper => true,
            PaddingSpec::Explicit(before, after) | PaddingSpec::ExplicitOnnxPool(before, after, false) => {
                before[..] == [0, 0] && after[..] == [1, 1]
            }
            _ => false,
        };
        let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let op: Box<dyn TypedOp> = match spec.strides()[..] {
            [2, 2] if plain && unpadded && h % 2 == 0 && w % 2 == 0 => Box::new(MaxPool2x2S2),
            [1, 1] if plain && padded_after && h > 0 && w > 0 => Box::new(MaxPool2x2S1),
            _ => continue,
        };
        model.node_mut(id).op = op;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{MaxPool, PoolSpec};

    /// A model of one max pool (2×2, stride `stride`, `padding`) on `[1, c, h, w]`.
    fn pool_model(c: usize, h: usize, w: usize, stride: usize, padding: PaddingSpec) -> TypedModel {
        let mut model = TypedModel::default();
        let input = model.add_source("input", f32::fact([1, c, h, w])).unwrap();
        let spec = PoolSpec::new(DataFormat::NCHW, tvec!(2, 2), padding, None, Some(tvec!(stride, stride)), c, c);
        let pool = model.wire_node("pool", MaxPool::new(spec, None), &[input]).unwrap();
        model.select_output_outlets(&pool).unwrap();
        model
    }

    /// Both pools give tract's results (odd and even sizes, rows longer and shorter than a
    /// vector), and the swap happens.
    #[test]
    fn the_fast_pools_pool_like_tract() {
        let cases = [
            (2, PaddingSpec::Valid, 3, 4, 8, "MaxPool2x2S2"),
            (2, PaddingSpec::Valid, 2, 6, 10, "MaxPool2x2S2"),
            (1, PaddingSpec::SameUpper, 3, 13, 13, "MaxPool2x2S1"),
            (1, PaddingSpec::SameUpper, 2, 1, 5, "MaxPool2x2S1"),
            (1, PaddingSpec::Explicit(tvec!(0, 0), tvec!(1, 1)), 2, 7, 4, "MaxPool2x2S1"),
        ];
        for (stride, padding, c, h, w, name) in cases {
            let values: Vec<f32> = (0..c * h * w).map(|i| ((i * 7919) % 113) as f32 - 56.0).collect();
            let input = Tensor::from_shape(&[1, c, h, w], &values).unwrap();
            let run = |fast: bool| {
                let mut model = pool_model(c, h, w, stride, padding.clone()).into_optimized().unwrap();
                if fast {
                    fast_pools(&mut model).unwrap();
                    assert!(model.nodes().iter().any(|n| n.op().name() == name), "{name} for {h}×{w}: {model}");
                }
                let out = model.into_runnable().unwrap().run(tvec!(input.clone().into_tvalue())).unwrap().remove(0);
                (out.shape().to_vec(), out.to_plain_array_view::<f32>().unwrap().iter().copied().collect::<Vec<_>>())
            };
            assert_eq!(run(true), run(false), "{name} on {c}×{h}×{w}");
        }
    }
}
