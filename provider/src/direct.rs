//! Direct 3×3 convolutions with few input channels (wasm32 with SIMD128 only).
//!
//! Why: a network's first layer reads the image's 3 channels. Lowered by tract (im2col, then a
//! GEMM with k = 27), yolov3-tiny's first layer took ~40 ms per inference in Wasm for 0.15
//! GFLOP (~4 GFLOPS: the patch matrix is 27 × 173 056 values written and read again, and each
//! 4×8 tile's accumulators are loaded and stored every 27 steps). Winograd did not pay there
//! either (see [`crate::winograd`]). Computed directly, each output row is built in registers:
//! for 4 output channels × 8 adjacent pixels, 27 taps of 2 input vectors and 4 broadcast
//! weights each, then bias, leaky ReLU and one store per row of 8: no intermediate matrix.
//!
//! [`crate::winograd::conv3x3_ops`] installs a [`Direct3x3`] for the 3×3 convolutions with
//! fewer than [`crate::winograd::MIN_CHANNELS`] input channels.

use std::sync::Arc;

use core::arch::wasm32::*;
use tract_onnx::tract_core::internal::*;

use crate::gemm::{leaky, madd, splat};
use crate::winograd::{eval_images, image_facts, load, store_first};

/// Output pixels computed side by side: 2 vectors of 4.
const PIXELS: usize = 8;

/// A 3×3, stride-1 convolution with padding 1 computed directly, input `[N, C, H, W]` (or
/// `[C, H, W]`), f32; bias added and an optional leaky ReLU applied to the output.
#[derive(Debug, Clone)]
pub struct Direct3x3 {
    cin: usize,
    cout: usize,
    /// Each weight broadcast to a vector, laid out `[cout / 4][cin][9][4]`: the 4 output
    /// channels of a group next to each other for each tap.
    weights: Arc<Vec<f32>>,
    /// One value per output channel.
    bias: Arc<Vec<f32>>,
    /// The leaky ReLU folded in, if any.
    alpha: Option<f32>,
}

impl PartialEq for Direct3x3 {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights) && Arc::ptr_eq(&self.bias, &other.bias) && self.alpha == other.alpha
    }
}

impl Eq for Direct3x3 {}

impl Direct3x3 {
    /// Lay out `kernel` (`[cout][cin][3][3]`, row-major) with its bias (`[cout]`).
    pub fn new(cin: usize, cout: usize, kernel: &[f32], bias: Vec<f32>, alpha: Option<f32>) -> TractResult<Self> {
        ensure!(cout.is_multiple_of(4), "Direct3x3 needs a multiple of 4 output channels, got {cout}");
        ensure!(kernel.len() == cout * cin * 9, "Direct3x3: {} kernel values for {cout}×{cin}×3×3", kernel.len());
        ensure!(bias.len() == cout, "Direct3x3: {} bias values for {cout} channels", bias.len());
        let mut weights = vec![0f32; cout * cin * 9 * 4];
        for o in 0..cout {
            for i in 0..cin {
                for t in 0..9 {
                    weights[(((o / 4) * cin + i) * 9 + t) * 4 + o % 4] = kernel[(o * cin + i) * 9 + t];
                }
            }
        }
        Ok(Self { cin, cout, weights: Arc::new(weights), bias: Arc::new(bias), alpha })
    }

    /// Convolve one image, `input` `[cin][h][w]`, into `output` `[cout][h][w]`.
    fn run(&self, input: &[f32], h: usize, w: usize, output: &mut [f32]) {
        // Each channel with its zero border, rows wide enough for the last group of 8 pixels'
        // loads (x + 2 + 8 values from its first).
        let pw = w.next_multiple_of(PIXELS) + 4;
        let ph = h + 2;
        let mut padded = vec![0f32; self.cin * ph * pw];
        for c in 0..self.cin {
            for (y, row) in input[c * h * w..][..h * w].chunks_exact(w).enumerate() {
                padded[(c * ph + y + 1) * pw + 1..][..w].copy_from_slice(row);
            }
        }
        // SAFETY: `padded` has `cin` planes of `ph` rows of `pw` values; `output` has `cout`
        // planes of `h × w`; relaxed SIMD is part of Wasmtime's default wasm features.
        unsafe { self.convolve(&padded, pw, h, w, output) };
    }

    /// The convolution proper, over the padded planes.
    ///
    /// # Safety
    /// The CPU runs relaxed SIMD (Wasmtime's default).
    #[target_feature(enable = "relaxed-simd")]
    unsafe fn convolve(&self, padded: &[f32], pw: usize, h: usize, w: usize, output: &mut [f32]) {
        let (cin, ph) = (self.cin, h + 2);
        assert!(
            padded.len() >= cin * ph * pw && output.len() >= self.cout * h * w && pw >= w.next_multiple_of(PIXELS) + 4
        );
        let alpha = self.alpha.map(|a| f32x4_splat(a));
        for group in 0..self.cout / 4 {
            let weights = &self.weights[group * cin * 9 * 4..][..cin * 9 * 4];
            let bias: [v128; 4] = core::array::from_fn(|r| f32x4_splat(self.bias[group * 4 + r]));
            for y in 0..h {
                for x in (0..w).step_by(PIXELS) {
                    let mut acc = bias.map(|b| [b, b]);
                    for c in 0..cin {
                        let taps = &weights[c * 9 * 4..][..9 * 4];
                        for ky in 0..3 {
                            let row = &padded[(c * ph + y + ky) * pw + x..][..PIXELS + 2 + 2];
                            for kx in 0..3 {
                                let (lo, hi) = (load(&row[kx..]), load(&row[kx + 4..]));
                                let tap = load(&taps[(ky * 3 + kx) * 4..]);
                                let s = [splat::<0>(tap), splat::<1>(tap), splat::<2>(tap), splat::<3>(tap)];
                                for (a, s) in acc.iter_mut().zip(s) {
                                    // SAFETY: this function runs with relaxed SIMD enabled.
                                    *a = unsafe { [madd(s, lo, a[0]), madd(s, hi, a[1])] };
                                }
                            }
                        }
                    }
                    let n = (w - x).min(PIXELS);
                    for (r, [lo, hi]) in acc.into_iter().enumerate() {
                        let [lo, hi] = match alpha {
                            Some(a) => [leaky(lo, a), leaky(hi, a)],
                            None => [lo, hi],
                        };
                        let out = &mut output[((group * 4 + r) * h + y) * w + x..][..n];
                        store_first(out, lo, n);
                        if n > 4 {
                            store_first(&mut out[4..], hi, n - 4);
                        }
                    }
                }
            }
        }
    }
}

impl Op for Direct3x3 {
    fn name(&self) -> StaticName {
        "Direct3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{}→{} channels, leaky ReLU {:?}", self.cin, self.cout, self.alpha)])
    }

    op_as_typed_op!();
}

impl EvalOp for Direct3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        eval_images("Direct3x3", (self.cin, self.cout), inputs, |image, h, w, out| self.run(image, h, w, out))
    }
}

impl TypedOp for Direct3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        image_facts(self.cout, inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::winograd::tests::{direct, values};

    #[test]
    fn matches_a_direct_convolution_on_every_edge_case() {
        // Widths that are and are not multiples of 8 (and under 8), one row, 1 to 7 channels.
        for (cin, cout, h, w) in [(3, 16, 9, 20), (1, 4, 1, 1), (3, 4, 5, 8), (7, 8, 6, 13), (2, 12, 3, 7)] {
            let input = values(cin * h * w, 7);
            let kernel = values(cout * cin * 9, 8);
            let bias = values(cout, 9);
            let op = Direct3x3::new(cin, cout, &kernel, bias.clone(), None).unwrap();
            let mut got = vec![f32::NAN; cout * h * w];
            op.run(&input, h, w, &mut got);
            let want = direct(&input, &kernel, &bias, cin, cout, h, w);
            let worst = got.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0f64, f64::max);
            assert!(worst < 1e-5, "{cin}→{cout} {h}×{w}: worst difference {worst}");
        }
    }
}
