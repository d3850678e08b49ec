//! Winograd F(4×4, 3×3) convolutions for the plan (wasm32 with SIMD128 only).
//!
//! Why: 96 % of yolov3-tiny's 5.56 GFLOP are 3×3, stride-1 convolutions, and in Wasm the
//! provider's time is the multiply-adds of their GEMMs (one core, 128-bit vectors, ~22 GFLOPS
//! sustained). Winograd's minimal filtering computes a 4×4 output tile of a 3×3 convolution from
//! a 6×6 input tile with 36 multiplications per input channel instead of 144: the
//! convolution becomes 36 independent GEMMs (`[cout × cin] · [cin × tiles]`, one per point of
//! the transformed tile) between a transform of the input and one of the output. On yolov3-tiny
//! at 416×416 that is ~1.7 GFLOP of GEMM instead of ~5.2 (3.1× fewer; less than 4× because 13×13
//! maps pad to 16×16), plus the transforms (~15-20 % of the op's time, measured).
//!
//! [`crate::passes::conv3x3_ops`] rewrites a decluttered model (the baked one: a model loaded while
//! serving would pay the weight transform on every load): every f32 `Conv` with a 3×3 kernel, stride
//! and dilation 1, one group, padding 1 on every side, at least [`crate::passes::MIN_CHANNELS`] input channels
//! and a multiple of 4 output channels, and constant weights and bias, becomes a [`Winograd3x3`]
//! node (its weights transformed once, at load or bake time). A `LeakyRelu` that is the
//! convolution's only consumer is folded into it, as tract folds it into its GEMM.
//!
//! Arithmetic: the transforms are the usual ones of Lavin & Gray ("Fast Algorithms for
//! Convolutional Neural Networks", 2015) for the points 0, ±1, ±2, ∞. Results differ from a
//! direct convolution by rounding only (the unit tests bound the difference against a direct
//! convolution in f64; the end-to-end tests keep their detection tolerances).
//!
//! A 2×2, stride-2 max pool that alone reads the output is folded into the output transform
//! ([`crate::passes::fuse_pools`]): each 4×4 tile gives its 2×2 maxima, so the full-size output
//! is never stored (yolov3-tiny: the 208×208, 104×104 and 52×52 layers).
//!
//! The first layer (3 input channels) is not Winograd's: there it was measured no faster end to
//! end (407.6 vs 405.9 ms p50 per request, alternated), its output transform costing what the
//! GEMM saves. The same pass gives convolutions with fewer input channels to
//! [`crate::direct::Direct3x3`] instead.

use std::sync::Arc;

use core::arch::wasm32::*;
use tract_onnx::tract_core::internal::*;

use crate::conv3x3::{eval_images, image_facts, load, shrink, store, store_first, takes_pool};
use crate::gemm::{self, leaky};

/// Points of the transformed tile (6 × 6).
const POINTS: usize = 36;

/// A 3×3, stride-1 convolution with padding 1 computed as Winograd F(4×4, 3×3), input `[N, C,
/// H, W]` (or `[C, H, W]`), f32; bias added and an optional leaky ReLU applied to the output.
#[derive(Debug, Clone)]
pub struct Winograd3x3 {
    cin: usize,
    cout: usize,
    /// Transformed weights `G g Gᵀ`, laid out `[point][cout / 4][cin][4]`: for each point, the
    /// GEMM's A operand packed in panels of 4 rows (what [`gemm::add_mat_mul`] reads).
    u: Arc<Vec<f32>>,
    /// One value per output channel.
    bias: Arc<Vec<f32>>,
    /// The leaky ReLU folded in, if any.
    alpha: Option<f32>,
    /// A 2×2, stride-2 max pool of the output folded in ([`crate::passes::fuse_pools`]).
    pool: bool,
}

impl PartialEq for Winograd3x3 {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.u, &other.u)
            && Arc::ptr_eq(&self.bias, &other.bias)
            && self.alpha == other.alpha
            && self.pool == other.pool
    }
}

impl Eq for Winograd3x3 {}

impl Winograd3x3 {
    /// Transform `kernel` (`[cout][cin][3][3]`, row-major) for the given bias (`[cout]`).
    pub fn new(cin: usize, cout: usize, kernel: &[f32], bias: Vec<f32>, alpha: Option<f32>) -> TractResult<Self> {
        ensure!(cout.is_multiple_of(4), "Winograd3x3 needs a multiple of 4 output channels, got {cout}");
        ensure!(kernel.len() == cout * cin * 9, "Winograd3x3: {} kernel values for {cout}×{cin}×3×3", kernel.len());
        ensure!(bias.len() == cout, "Winograd3x3: {} bias values for {cout} channels", bias.len());
        // G (6×3): the filter transform, in f64 so that U has one rounding.
        const G: [[f64; 3]; 6] = [
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        let mut u = vec![0f32; POINTS * cout * cin];
        for o in 0..cout {
            for i in 0..cin {
                let g = &kernel[(o * cin + i) * 9..][..9];
                // G g (6×3), then (G g) Gᵀ (6×6).
                let mut gg = [[0f64; 3]; 6];
                for (r, row) in gg.iter_mut().enumerate() {
                    for (c, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|k| G[r][k] * f64::from(g[k * 3 + c])).sum();
                    }
                }
                for r in 0..6 {
                    for c in 0..6 {
                        let v: f64 = (0..3).map(|k| gg[r][k] * G[c][k]).sum();
                        u[((r * 6 + c) * (cout / 4) + o / 4) * cin * 4 + i * 4 + o % 4] = v as f32;
                    }
                }
            }
        }
        Ok(Winograd3x3 { cin, cout, u: Arc::new(u), bias: Arc::new(bias), alpha, pool: false })
    }

    /// The same op with a 2×2, stride-2 max pool of its output folded in, if it can take one
    /// (no pool yet, and no activation that a pool would not commute with).
    pub fn pooled(&self) -> Option<Self> {
        takes_pool(self.pool, self.alpha).then(|| Winograd3x3 { pool: true, ..self.clone() })
    }

    /// Convolve one image, `input` `[cin][h][w]`, into `output` `[cout][h][w]`: the transforms
    /// and GEMMs run on blocks of whole tile rows ([`block_rows`]), so that a block's transformed
    /// input and output stay in the core's cache between its three steps.
    fn run(&self, input: &[f32], h: usize, w: usize, output: &mut [f32]) {
        self.run_in_blocks(input, h, w, output, block_rows(self.cin, self.cout, w.div_ceil(4), h.div_ceil(4)));
    }

    /// [`Self::run`] with `rows` tile rows per block.
    fn run_in_blocks(&self, input: &[f32], h: usize, w: usize, output: &mut [f32], rows: usize) {
        let (tiles_y, tiles_x) = (h.div_ceil(4), w.div_ceil(4));
        // GEMM columns come in blocks of 8; the transformed input's rows are that long.
        let most = (rows * tiles_x).next_multiple_of(8);
        let mut v = vec![0f32; POINTS * self.cin * most];
        // 4 spare values: the output transform reads whole groups of 4 tiles.
        let mut m = vec![0f32; POINTS * self.cout * most + 4];
        let mut scratch = InputScratch::new(tiles_x, rows);
        let activation = (&self.bias[..], self.alpha);
        for ty in (0..tiles_y).step_by(rows) {
            let block = ty..(ty + rows).min(tiles_y);
            let cols = (block.len() * tiles_x).next_multiple_of(8);
            input_transform(input, self.cin, (h, w), block.clone(), cols, &mut scratch, &mut v);
            // SAFETY: the buffers have the sizes `multiply` reads and writes; relaxed SIMD is
            // part of Wasmtime's default wasm features (the provider's GEMM kernel needs it too).
            unsafe { multiply(&self.u, &v, &mut m, self.cin, self.cout, cols) };
            output_transform(&m, activation, self.cout, (h, w), block, cols, self.pool, output);
        }
    }
}

/// Bytes of transformed input and output that one block may hold: about half of a core's L2.
/// Measured per inference of yolov3-tiny (Wasm, interleaved, median of 9): 148.5 ms unblocked,
/// 145.0 ms with 1 MiB (the 208×208 and 104×104 layers 15.3 → 12.3 and 11.9 → 9.0 ms), 147.9
/// with 512 KiB, 148.2 with 2 MiB.
const BLOCK_BYTES: usize = 1 << 20;

/// Tile rows per block: as many as keep a block's transformed input and output (`36 · (cin +
/// cout)` values per tile) within [`BLOCK_BYTES`], but at least as many as make a block's data
/// outweigh the transformed weights, which every block reads again (so the 13×13 and 26×26
/// layers, whose weights are large, run in one block).
fn block_rows(cin: usize, cout: usize, tiles_x: usize, tiles_y: usize) -> usize {
    let per_row = POINTS * (cin + cout) * 4 * tiles_x;
    let weights = POINTS * cin * cout * 4;
    (BLOCK_BYTES / per_row).max(weights.div_ceil(per_row)).clamp(1, tiles_y)
}

impl Op for Winograd3x3 {
    fn name(&self) -> StaticName {
        "Winograd3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{}→{} channels, leaky ReLU {:?}", self.cin, self.cout, self.alpha)])
    }

    op_as_typed_op!();
}

impl EvalOp for Winograd3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        eval_images("Winograd3x3", (self.cin, self.cout, self.pool), inputs, |image, h, w, out| {
            self.run(image, h, w, out)
        })
    }
}

impl TypedOp for Winograd3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        image_facts(self.cout, self.pool, inputs)
    }

    as_op!();
}

/// `Bᵀ d` for one column of a 6×6 tile (`d[k]`: the k-th row's values), the input transform's
/// rows.
#[inline(always)]
fn bt(d: [v128; 6]) -> [v128; 6] {
    let (two, four, five) = (f32x4_splat(2.0), f32x4_splat(4.0), f32x4_splat(5.0));
    let [d0, d1, d2, d3, d4, d5] = d;
    let (a, b) = (f32x4_sub(d4, f32x4_mul(four, d2)), f32x4_sub(d3, f32x4_mul(four, d1)));
    let (c, e) = (f32x4_sub(d4, d2), f32x4_mul(two, f32x4_sub(d3, d1)));
    [
        f32x4_add(f32x4_mul(four, d0), f32x4_sub(d4, f32x4_mul(five, d2))),
        f32x4_add(a, b),
        f32x4_sub(a, b),
        f32x4_add(c, e),
        f32x4_sub(c, e),
        f32x4_add(f32x4_mul(four, d1), f32x4_sub(d5, f32x4_mul(five, d3))),
    ]
}

/// `Aᵀ m` for one column of a transformed 6×6 tile: the 4 rows of the output tile.
#[inline(always)]
fn at(m: [v128; 6]) -> [v128; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (p, q) = (f32x4_add(m1, m2), f32x4_sub(m1, m2));
    let (r, s) = (f32x4_add(m3, m4), f32x4_sub(m3, m4));
    [
        f32x4_add(f32x4_add(m0, p), r),
        f32x4_add(q, f32x4_mul(f32x4_splat(2.0), s)),
        f32x4_add(p, f32x4_mul(f32x4_splat(4.0), r)),
        f32x4_add(f32x4_add(q, f32x4_mul(f32x4_splat(8.0), s)), m5),
    ]
}

/// The columns of four 4-wide groups laid side by side (`a`..`e`: 20 consecutive values of a
/// row): `[k-th value of each group]` for k in 0..6, i.e. each tile's 6 columns.
#[inline(always)]
fn gather6(a: v128, b: v128, c: v128, d: v128, e: v128) -> [v128; 6] {
    let (ab_lo, cd_lo) = (i32x4_shuffle::<0, 4, 1, 5>(a, b), i32x4_shuffle::<0, 4, 1, 5>(c, d));
    let (ab_hi, cd_hi) = (i32x4_shuffle::<2, 6, 3, 7>(a, b), i32x4_shuffle::<2, 6, 3, 7>(c, d));
    let (bc_lo, de_lo) = (i32x4_shuffle::<0, 4, 1, 5>(b, c), i32x4_shuffle::<0, 4, 1, 5>(d, e));
    [
        i32x4_shuffle::<0, 1, 4, 5>(ab_lo, cd_lo),
        i32x4_shuffle::<2, 3, 6, 7>(ab_lo, cd_lo),
        i32x4_shuffle::<0, 1, 4, 5>(ab_hi, cd_hi),
        i32x4_shuffle::<2, 3, 6, 7>(ab_hi, cd_hi),
        i32x4_shuffle::<0, 1, 4, 5>(bc_lo, de_lo),
        i32x4_shuffle::<2, 3, 6, 7>(bc_lo, de_lo),
    ]
}

/// The 4×4 transpose: `[v0[l], v1[l], v2[l], v3[l]]` for each lane `l`.
#[inline(always)]
fn transpose(v: [v128; 4]) -> [v128; 4] {
    let (lo01, lo23) = (i32x4_shuffle::<0, 4, 1, 5>(v[0], v[1]), i32x4_shuffle::<0, 4, 1, 5>(v[2], v[3]));
    let (hi01, hi23) = (i32x4_shuffle::<2, 6, 3, 7>(v[0], v[1]), i32x4_shuffle::<2, 6, 3, 7>(v[2], v[3]));
    [
        i32x4_shuffle::<0, 1, 4, 5>(lo01, lo23),
        i32x4_shuffle::<2, 3, 6, 7>(lo01, lo23),
        i32x4_shuffle::<0, 1, 4, 5>(hi01, hi23),
        i32x4_shuffle::<2, 3, 6, 7>(hi01, hi23),
    ]
}

/// The input transform's buffers: one channel's rows of a block with their zero border, and
/// the 6 rows of one tile row after `Bᵀ`.
struct InputScratch {
    /// Row length: wide enough for whole groups of 4 tiles (+ 4 values the last group's 6th
    /// column reads).
    pw: usize,
    padded: Vec<f32>,
    rows: Vec<f32>,
}

impl InputScratch {
    fn new(tiles_x: usize, block_rows: usize) -> Self {
        let pw = 4 * tiles_x.next_multiple_of(4) + 4;
        InputScratch { pw, padded: vec![0f32; pw * (4 * block_rows + 2)], rows: vec![0f32; 6 * pw] }
    }
}

/// `V = Bᵀ d B` for every 6×6 tile (stride 4, padding 1) of the tile rows `block` of every
/// channel of `input` (`[cin][h][w]`), into `v` laid out `[point][cin][cols]` (tile `t` = `(ty -
/// block.start) * tiles_x + tx` in column `t`): for each point, the GEMM's B operand, row-major.
fn input_transform(
    input: &[f32],
    cin: usize,
    (h, w): (usize, usize),
    block: std::ops::Range<usize>,
    cols: usize,
    scratch: &mut InputScratch,
    v: &mut [f32],
) {
    let tiles_x = w.div_ceil(4);
    let InputScratch { pw, padded, rows } = scratch;
    let pw = *pw;
    let plane = cin * cols;
    // Padded row `r` is the image's row `4 * block.start + r - 1`.
    let first = (4 * block.start) as isize - 1;
    let height = 4 * block.len() + 2;
    for c in 0..cin {
        let channel = &input[c * h * w..][..h * w];
        for r in 0..height {
            let dst = &mut padded[r * pw + 1..][..w];
            match usize::try_from(first + r as isize) {
                Ok(y) if y < h => dst.copy_from_slice(&channel[y * w..][..w]),
                _ => dst.fill(0.0),
            }
        }
        for by in 0..block.len() {
            // Bᵀ over the tile row's 6 input rows, 4 columns at a time.
            for x in (0..pw).step_by(4) {
                let d: [v128; 6] = core::array::from_fn(|k| load(&padded[(4 * by + k) * pw + x..]));
                for (i, r) in bt(d).into_iter().enumerate() {
                    store(&mut rows[i * pw + x..], r);
                }
            }
            // Then B over each tile's 6 columns, for 4 tiles at a time.
            for tx in (0..tiles_x).step_by(4) {
                let n = (tiles_x - tx).min(4);
                let col = by * tiles_x + tx;
                for i in 0..6 {
                    let r = &rows[i * pw + 4 * tx..];
                    let columns = gather6(load(r), load(&r[4..]), load(&r[8..]), load(&r[12..]), load(&r[16..]));
                    for (j, value) in bt(columns).into_iter().enumerate() {
                        store_first(&mut v[(i * 6 + j) * plane + c * cols + col..], value, n);
                    }
                }
            }
        }
    }
}

/// `M[point] = U[point] · V[point]` for the 36 points: `u` `[point][cout / 4][cin][4]`, `v`
/// `[point][cin][cols]`, `m` `[point][cout][cols]`.
///
/// # Safety
/// The slices hold at least those sizes; the CPU runs relaxed SIMD (Wasmtime's default).
#[target_feature(enable = "relaxed-simd")]
unsafe fn multiply(u: &[f32], v: &[f32], m: &mut [f32], cin: usize, cout: usize, cols: usize) {
    assert!(u.len() >= POINTS * cout * cin && v.len() >= POINTS * cin * cols && m.len() >= POINTS * cout * cols);
    assert!(cout.is_multiple_of(4) && cols.is_multiple_of(8));
    let zero = f32x4_splat(0.0);
    for p in 0..POINTS {
        let (u, v, m) = (&u[p * cout * cin..], &v[p * cin * cols..], &mut m[p * cout * cols..]);
        for panel in 0..cout / 4 {
            let a = u[panel * cin * 4..].as_ptr() as *const v128;
            for col in (0..cols).step_by(8) {
                let mut acc = [[zero; 2]; 4];
                // SAFETY: A is `cin` packed groups of 4; B is `cin` rows of `cols` values, and
                // `col + 8 <= cols`.
                unsafe { gemm::add_mat_mul(&mut acc, cin, a, v[col..].as_ptr() as *const v128, cols / 4) };
                for (r, [lo, hi]) in acc.into_iter().enumerate() {
                    let out = &mut m[(panel * 4 + r) * cols + col..];
                    store(out, lo);
                    store(&mut out[4..], hi);
                }
            }
        }
    }
}

/// `Aᵀ M` for 4 tiles side by side (from column `at_col` of `m`'s planes, `plane` values apart):
/// `[row a][column j]`, each a vector over the 4 tiles.
#[inline(always)]
fn columns_transformed(m: &[f32], plane: usize, at_col: usize) -> [[v128; 6]; 4] {
    let mut half = [[f32x4_splat(0.0); 6]; 4];
    for j in 0..6 {
        let column = at(core::array::from_fn(|i| load(&m[(i * 6 + j) * plane + at_col..])));
        for (a, value) in column.into_iter().enumerate() {
            half[a][j] = value;
        }
    }
    half
}

/// `Y = Aᵀ M A` (+ bias, leaky ReLU) for every tile of the tile rows `block`, from `m`
/// (`[point][cout][cols]`) into `output`: `[cout][h][w]`, cropping the tiles at the right and
/// bottom edges ([`store_tiles`]), or with `pool` (`h` and `w` even) `[cout][h / 2][w / 2]`,
/// each tile's 2×2 maxima ([`store_pooled`]).
#[allow(clippy::too_many_arguments)]
fn output_transform(
    m: &[f32],
    (bias, alpha): (&[f32], Option<f32>),
    cout: usize,
    (h, w): (usize, usize),
    block: std::ops::Range<usize>,
    cols: usize,
    pool: bool,
    output: &mut [f32],
) {
    let tiles_x = w.div_ceil(4);
    let plane = cout * cols;
    let (oh, ow) = (h / shrink(pool), w / shrink(pool));
    let alpha = alpha.map(|a| f32x4_splat(a));
    for o in 0..cout {
        let b = f32x4_splat(bias[o]);
        let activate = |v: v128| match alpha {
            Some(alpha) => leaky(f32x4_add(v, b), alpha),
            None => f32x4_add(v, b),
        };
        let out = &mut output[o * oh * ow..][..oh * ow];
        for (by, ty) in block.clone().enumerate() {
            for tx in (0..tiles_x).step_by(4) {
                let half = columns_transformed(m, plane, o * cols + by * tiles_x + tx);
                if pool {
                    store_pooled(half, activate, out, (oh, ow), (ty, tx));
                } else {
                    store_tiles(half, activate, out, (h, w), (ty, tx));
                }
            }
        }
    }
}

/// `A` over the columns of 4 tiles' `half` (tile row `ty`, tiles `tx..`), `activate`d, into the
/// output plane `out` (`h × w`), cropped at its right and bottom edges.
#[inline(always)]
fn store_tiles(
    half: [[v128; 6]; 4],
    activate: impl Fn(v128) -> v128,
    out: &mut [f32],
    (h, w): (usize, usize),
    (ty, tx): (usize, usize),
) {
    for (a, row) in half.into_iter().enumerate() {
        let y = 4 * ty + a;
        if y >= h {
            break;
        }
        // The row's 4 values, each a vector over 4 tiles, then one vector per tile.
        for (l, tile) in transpose(at(row).map(&activate)).into_iter().enumerate() {
            let x = 4 * (tx + l);
            if x >= w {
                break;
            }
            store_first(&mut out[y * w + x..], tile, w - x);
        }
    }
}

/// [`store_tiles`] followed by a 2×2, stride-2 max pool, into the pooled plane `out` (`oh ×
/// ow`): the maxima first, then `activate` (bias and leaky ReLU are monotonic: the same values
/// as pooling the activated output).
#[inline(always)]
fn store_pooled(
    half: [[v128; 6]; 4],
    activate: impl Fn(v128) -> v128,
    out: &mut [f32],
    (oh, ow): (usize, usize),
    (ty, tx): (usize, usize),
) {
    for pair in 0..2 {
        // Rows 2·pair and 2·pair + 1 of the tiles: both inside the image or neither.
        let y = 2 * ty + pair;
        if y >= oh {
            break;
        }
        let (top, bottom) = (at(half[2 * pair]), at(half[2 * pair + 1]));
        let v: [v128; 4] = core::array::from_fn(|c| f32x4_pmax(top[c], bottom[c]));
        // Each tile's two pooled columns, then side by side: 8 values for 4 tiles.
        let [p0, p1] = [f32x4_pmax(v[0], v[1]), f32x4_pmax(v[2], v[3])].map(&activate);
        let x = 2 * tx;
        let n = ow - x;
        let row = &mut out[y * ow + x..];
        store_first(row, i32x4_shuffle::<0, 4, 1, 5>(p0, p1), n.min(4));
        if n > 4 {
            store_first(&mut row[4..], i32x4_shuffle::<2, 6, 3, 7>(p0, p1), (n - 4).min(4));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv3x3::reference::{direct, pool2x2, values};

    #[test]
    fn matches_a_direct_convolution_on_every_edge_case() {
        // Heights and widths that are and are not multiples of 4, tile rows of fewer and of more
        // than 4 tiles, and channel counts that are and are not multiples of the k unrolling.
        for (cin, cout, h, w) in [(8, 4, 4, 4), (9, 8, 13, 13), (16, 12, 26, 20), (12, 8, 7, 30), (8, 4, 1, 5)] {
            let input = values(cin * h * w, 1);
            let kernel = values(cout * cin * 9, 2);
            let bias = values(cout, 3);
            let op = Winograd3x3::new(cin, cout, &kernel, bias.clone(), None).unwrap();
            let want = direct(&input, &kernel, &bias, cin, cout, h, w);
            // In one block, and in blocks of 1, 2 and 3 tile rows (the last one shorter).
            for rows in [None, Some(1), Some(2), Some(3)] {
                let mut got = vec![f32::NAN; cout * h * w];
                match rows {
                    None => op.run(&input, h, w, &mut got),
                    Some(rows) => op.run_in_blocks(&input, h, w, &mut got, rows),
                }
                assert!(
                    got.iter().all(|v| v.is_finite()),
                    "{cin}→{cout} {h}×{w} in blocks of {rows:?} rows: unwritten"
                );
                let worst = got.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0f64, f64::max);
                assert!(worst < 1e-4, "{cin}→{cout} {h}×{w} in blocks of {rows:?} rows: worst difference {worst}");
            }
        }
    }

    /// With the pool folded in, each output is the maximum of its 2×2 block of the unpooled
    /// op's output, to the bit, in one block or several (sizes with whole and with partial
    /// tiles at the right and bottom).
    #[test]
    fn a_folded_pool_gives_the_pooled_output_exactly() {
        for (cin, cout, h, w) in [(8, 4, 8, 8), (9, 8, 26, 26), (16, 12, 12, 20), (8, 4, 2, 6), (8, 8, 10, 30)] {
            let input = values(cin * h * w, 16);
            let op = Winograd3x3::new(cin, cout, &values(cout * cin * 9, 17), values(cout, 18), Some(0.1)).unwrap();
            let mut full = vec![f32::NAN; cout * h * w];
            op.run(&input, h, w, &mut full);
            let want = pool2x2(&full, cout, h, w);
            let pooled = op.pooled().unwrap();
            for rows in [None, Some(1), Some(2)] {
                let mut got = vec![f32::NAN; cout * (h / 2) * (w / 2)];
                match rows {
                    None => pooled.run(&input, h, w, &mut got),
                    Some(rows) => pooled.run_in_blocks(&input, h, w, &mut got, rows),
                }
                assert_eq!(got, want, "{cin}→{cout} {h}×{w} in blocks of {rows:?} rows");
            }
        }
        // A pool does not commute with a negative slope: no folding then.
        let negative = Winograd3x3::new(8, 4, &values(4 * 8 * 9, 19), values(4, 20), Some(-0.5)).unwrap();
        assert!(negative.pooled().is_none());
    }
}
