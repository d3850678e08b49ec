//! What the two 3×3 convolution ops ([`crate::winograd::Winograd3x3`] and
//! [`crate::direct::Direct3x3`]) share: evaluating one image at a time, their output facts,
//! whether a 2×2 max pool can be folded into them, and SIMD128 loads and stores of f32 lanes;
//! for their tests, a reference convolution in f64. The passes that put them in a plan are
//! [`crate::passes`].

use core::arch::wasm32::*;
use tract_onnx::tract_core::internal::*;

/// The `eval` of the 3×3 ops ([`crate::winograd::Winograd3x3`], [`crate::direct::Direct3x3`]): check the input (`[N, cin, H,
/// W]` or `[cin, H, W]`, f32, contiguous) and `run(image, h, w, output)` for each image into an
/// output of `cout` channels, `H / 2 × W / 2` with a 2×2 max `pool` folded in (else `H × W`).
pub(crate) fn eval_images(
    op: &str,
    (cin, cout, pool): (usize, usize, bool),
    inputs: TVec<TValue>,
    run: impl Fn(&[f32], usize, usize, &mut [f32]),
) -> TractResult<TVec<TValue>> {
    let shrink = shrink(pool);
    let input = args_1!(inputs);
    let shape: TVec<usize> = input.shape().into();
    let rank = shape.len();
    ensure!(rank >= 3 && shape[rank - 3] == cin, "{op}: input {shape:?} for {cin} channels");
    let (h, w) = (shape[rank - 2], shape[rank - 1]);
    ensure!(h.is_multiple_of(shrink) && w.is_multiple_of(shrink), "{op}: input {shape:?} for a pool of {shrink}");
    let input = input.to_plain_array_view::<f32>()?;
    let input = input.as_slice().with_context(|| format!("{op} needs a contiguous input"))?;
    let mut out_shape = shape.clone();
    out_shape[rank - 3] = cout;
    out_shape[rank - 2] = h / shrink;
    out_shape[rank - 1] = w / shrink;
    let mut output = Tensor::zero::<f32>(&out_shape)?;
    {
        let mut plain = output.try_as_plain_ram_mut()?;
        let out = plain.as_slice_mut::<f32>()?;
        let plane = cout * (h / shrink) * (w / shrink);
        for (image, out) in input.chunks_exact(cin * h * w).zip(out.chunks_exact_mut(plane)) {
            run(image, h, w, out);
        }
    }
    Ok(tvec!(output.into_tvalue()))
}

/// The output fact of the 3×3 ops: the input's shape with `cout` channels, its height and
/// width halved with a `pool` folded in.
pub(crate) fn image_facts(cout: usize, pool: bool, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
    let shrink = shrink(pool);
    let mut shape = inputs[0].shape.to_tvec();
    let rank = shape.len();
    shape[rank - 3] = cout.to_dim();
    shape[rank - 2] = shape[rank - 2].clone() / shrink;
    shape[rank - 1] = shape[rank - 1].clone() / shrink;
    Ok(tvec!(f32::fact(shape)))
}

/// Whether a 3×3 op with this `pool` flag and leaky ReLU slope `alpha` can take a 2×2 max pool
/// of its output folded in: none folded yet, and an activation that commutes with the maximum
/// (none, or a slope of at least 0: bias and such a leaky ReLU are non-decreasing).
pub(crate) fn takes_pool(pool: bool, alpha: Option<f32>) -> bool {
    !pool && alpha.is_none_or(|a| a >= 0.0)
}

/// What a 3×3 op's output height and width are divided by: 2 with a 2×2 max pool folded in.
pub(crate) fn shrink(pool: bool) -> usize {
    if pool { 2 } else { 1 }
}

/// 4 values from the start of `s`.
#[inline(always)]
pub(crate) fn load(s: &[f32]) -> v128 {
    let s = &s[..4];
    // SAFETY: `s` has 4 values; wasm loads need no alignment.
    unsafe { v128_load(s.as_ptr() as *const v128) }
}

/// 4 values into the start of `d`.
#[inline(always)]
pub(crate) fn store(d: &mut [f32], v: v128) {
    let d = &mut d[..4];
    // SAFETY: `d` has room for 4 values; wasm stores need no alignment.
    unsafe { v128_store(d.as_mut_ptr() as *mut v128, v) }
}

/// Store the first `n` (≤ 4) lanes of `v`.
#[inline(always)]
pub(crate) fn store_first(d: &mut [f32], v: v128, n: usize) {
    if n >= 4 {
        store(d, v);
    } else {
        let lanes = [f32x4_extract_lane::<0>(v), f32x4_extract_lane::<1>(v), f32x4_extract_lane::<2>(v)];
        d[..n].copy_from_slice(&lanes[..n]);
    }
}

/// Reference values for the 3×3 ops' tests.
#[cfg(test)]
pub(crate) mod reference {
    /// Deterministic values in [-1, 1).
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The maxima of each 2×2 block of `c` planes of `h × w` values (both even).
    pub(crate) fn pool2x2(full: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
        let (oh, ow) = (h / 2, w / 2);
        (0..c * oh * ow)
            .map(|i| {
                let (o, y, x) = (i / (oh * ow), i / ow % oh, i % ow);
                let at = |dy: usize, dx: usize| full[(o * h + 2 * y + dy) * w + 2 * x + dx];
                at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1))
            })
            .collect()
    }

    /// Direct convolution, padding 1, in f64.
    pub(crate) fn direct(
        input: &[f32],
        kernel: &[f32],
        bias: &[f32],
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; cout * h * w];
        for o in 0..cout {
            for y in 0..h {
                for x in 0..w {
                    let mut s = f64::from(bias[o]);
                    for i in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = ((y + ky) as isize - 1, (x + kx) as isize - 1);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    s += f64::from(input[(i * h + iy as usize) * w + ix as usize])
                                        * f64::from(kernel[((o * cin + i) * 3 + ky) * 3 + kx]);
                                }
                            }
                        }
                    }
                    out[(o * h + y) * w + x] = s;
                }
            }
        }
        out
    }
}
