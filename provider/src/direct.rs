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
//! [`crate::passes::conv3x3_ops`] installs a [`Direct3x3`] for the 3×3 convolutions with
//! fewer than [`crate::passes::MIN_CHANNELS`] input channels.
//!
//! A 2×2, stride-2 max pool that alone reads such a convolution's output is folded into it
//! ([`crate::passes::fuse_pools`]): two rows of 8 pixels in registers, pooled, then stored, so yolov3-tiny's
//! first layer never writes its 11 MB output (measured per inference in Wasm: 9.1–9.5 ms for
//! both against 12.7 + 2.5 ms).

use std::sync::Arc;

use core::arch::wasm32::*;
use tract_onnx::tract_core::internal::*;

use crate::conv3x3::{eval_images, image_facts, load, store_first, takes_pool};
use crate::gemm::{leaky, madd, splat};
use crate::pool::max_2x2;

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
    /// A 2×2, stride-2 max pool of the output folded in ([`crate::passes::fuse_pools`]).
    pool: bool,
}

impl PartialEq for Direct3x3 {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights)
            && Arc::ptr_eq(&self.bias, &other.bias)
            && self.alpha == other.alpha
            && self.pool == other.pool
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
        Ok(Self { cin, cout, weights: Arc::new(weights), bias: Arc::new(bias), alpha, pool: false })
    }

    /// The same op with a 2×2, stride-2 max pool of its output folded in, if it can take one
    /// (no pool yet, and no activation that a pool would not commute with).
    pub fn pooled(&self) -> Option<Self> {
        takes_pool(self.pool, self.alpha).then(|| Direct3x3 { pool: true, ..self.clone() })
    }

    /// Convolve one image, `input` `[cin][h][w]`, into `output` `[cout][h][w]` (`[cout][h /
    /// 2][w / 2]` with the pool).
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
        // planes of `h × w` (a quarter with the pool); relaxed SIMD is part of Wasmtime's
        // default wasm features.
        unsafe {
            if self.pool {
                self.convolve_pooled(&padded, pw, h, w, output)
            } else {
                self.convolve(&padded, pw, h, w, output)
            }
        };
    }

    /// The convolution proper, over the padded planes.
    ///
    /// # Safety
    /// The CPU runs relaxed SIMD (Wasmtime's default).
    #[target_feature(enable = "relaxed-simd")]
    unsafe fn convolve(&self, padded: &[f32], pw: usize, h: usize, w: usize, output: &mut [f32]) {
        assert!(
            padded.len() >= self.cin * (h + 2) * pw
                && output.len() >= self.cout * h * w
                && pw >= w.next_multiple_of(PIXELS) + 4
        );
        let alpha = self.alpha.map(|a| f32x4_splat(a));
        for group in 0..self.cout / 4 {
            for y in 0..h {
                for x in (0..w).step_by(PIXELS) {
                    // SAFETY: asserted above; relaxed SIMD as this function.
                    let acc = unsafe { self.pixels(padded, pw, h, group, y, x) };
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

    /// The convolution followed by a 2×2, stride-2 max pool (`h` and `w` even): two rows of 8
    /// pixels, their maxima, then the leaky ReLU (it is monotonic, so the pool may come first:
    /// the same values as pooling its output), 4 values stored per row of 8 pixels.
    ///
    /// # Safety
    /// The CPU runs relaxed SIMD (Wasmtime's default).
    #[target_feature(enable = "relaxed-simd")]
    unsafe fn convolve_pooled(&self, padded: &[f32], pw: usize, h: usize, w: usize, output: &mut [f32]) {
        assert!(
            padded.len() >= self.cin * (h + 2) * pw
                && output.len() >= self.cout * (h / 2) * (w / 2)
                && pw >= w.next_multiple_of(PIXELS) + 4
                && h.is_multiple_of(2)
                && w.is_multiple_of(2)
        );
        let alpha = self.alpha.map(|a| f32x4_splat(a));
        let (oh, ow) = (h / 2, w / 2);
        for group in 0..self.cout / 4 {
            for y in (0..h).step_by(2) {
                for x in (0..w).step_by(PIXELS) {
                    // SAFETY: asserted above; relaxed SIMD as this function.
                    let (top, bottom) = unsafe {
                        (self.pixels(padded, pw, h, group, y, x), self.pixels(padded, pw, h, group, y + 1, x))
                    };
                    // Pooled values of this block: the pixels' pairs that are inside the image.
                    let n = (w - x).min(PIXELS) / 2;
                    for (r, (t, b)) in top.into_iter().zip(bottom).enumerate() {
                        let mut m = max_2x2(t, b);
                        if let Some(a) = alpha {
                            m = leaky(m, a);
                        }
                        store_first(&mut output[((group * 4 + r) * oh + y / 2) * ow + x / 2..][..n], m, n);
                    }
                }
            }
        }
    }

    /// Output channels `4 · group ..` for the 8 pixels from (`y`, `x`): the bias plus the 27
    /// taps' products, `[channel][pixels 0..4, 4..8]`.
    ///
    /// # Safety
    /// The CPU runs relaxed SIMD; `padded` holds `cin` planes of `h + 2` rows of `pw` values, and
    /// `x + 12 <= pw`.
    #[target_feature(enable = "relaxed-simd")]
    #[inline]
    unsafe fn pixels(&self, padded: &[f32], pw: usize, h: usize, group: usize, y: usize, x: usize) -> [[v128; 2]; 4] {
        let (cin, ph) = (self.cin, h + 2);
        let weights = &self.weights[group * cin * 9 * 4..][..cin * 9 * 4];
        let mut acc: [[v128; 2]; 4] = core::array::from_fn(|r| [f32x4_splat(self.bias[group * 4 + r]); 2]);
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
        acc
    }
}

impl Op for Direct3x3 {
    fn name(&self) -> StaticName {
        "Direct3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}→{} channels, leaky ReLU {:?}, 2×2 max pool {}",
            self.cin, self.cout, self.alpha, self.pool
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Direct3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        eval_images("Direct3x3", (self.cin, self.cout, self.pool), inputs, |image, h, w, out| {
            self.run(image, h, w, out)
        })
    }
}

impl TypedOp for Direct3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        image_facts(self.cout, self.pool, inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv3x3::reference::{direct, pool2x2, values};

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

    /// With the pool folded in, each output is the maximum of its 2×2 block of the unpooled
    /// op's (leaky ReLU applied) output, to the bit: the same sums, and max and leaky ReLU
    /// commute.
    #[test]
    fn a_folded_pool_gives_the_pooled_output_exactly() {
        // Widths that are and are not multiples of 8 (and under 8).
        for (cin, cout, h, w) in [(3, 16, 10, 20), (1, 4, 2, 2), (3, 4, 6, 8), (2, 8, 4, 14), (3, 4, 8, 6)] {
            let input = values(cin * h * w, 10);
            let kernel = values(cout * cin * 9, 11);
            let bias = values(cout, 12);
            let op = Direct3x3::new(cin, cout, &kernel, bias, Some(0.1)).unwrap();
            let mut full = vec![f32::NAN; cout * h * w];
            op.run(&input, h, w, &mut full);
            let pooled_op = op.pooled().unwrap();
            let mut got = vec![f32::NAN; cout * (h / 2) * (w / 2)];
            pooled_op.run(&input, h, w, &mut got);
            assert_eq!(got, pool2x2(&full, cout, h, w), "{cin}→{cout} {h}×{w}");
        }
    }
}
