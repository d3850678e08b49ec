//! Pillow-exact bilinear resampling of RGB images.
//!
//! The reference pipelines resize with Pillow's `Image.resize(size, BILINEAR)`. Pillow does
//! not interpolate between the two nearest pixels: it convolves with a triangle filter whose
//! support grows with the downscale factor (so shrinking antialiases), in two separable
//! passes (horizontal, then vertical) through an 8-bit intermediate image, with weights in
//! 22-bit fixed point. Every one of those choices moves pixel values by ±1, and ±1 on a
//! third of the pixels moves YOLO confidences by several thousandths, so this module
//! reproduces the algorithm itself rather than approximating it (general-purpose resize
//! crates differ from Pillow by ±1 on ~13% of the values of a typical photograph).

use image::RgbImage;

/// Fixed-point precision of the weights (Pillow: 32 − 8 − 2).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Filter weights of one output axis: for output index `i`, the input span
/// `starts[i] .. starts[i] + weights_of(i).len()` and its fixed-point weights.
struct AxisWeights {
    starts: Vec<usize>,
    lens: Vec<usize>,
    stride: usize,
    weights: Vec<i32>,
}

impl AxisWeights {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter.
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // the bilinear (triangle) filter has support 1
        let stride = support.ceil() as usize * 2 + 1;
        let mut starts = Vec::with_capacity(out_size);
        let mut lens = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * stride];
        let mut raw = vec![0f64; stride];
        for (i, row) in weights.chunks_exact_mut(stride).enumerate() {
            let center = (i as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero; the clamps make that equal to floor here.
            let min = ((center - support + 0.5) as i64).max(0) as usize;
            let max = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let len = max.saturating_sub(min).min(stride);
            let mut total = 0.0;
            for (x, w) in raw[..len].iter_mut().enumerate() {
                let t = ((x + min) as f64 - center + 0.5) / filter_scale;
                *w = (1.0 - t.abs()).max(0.0);
                total += *w;
            }
            for (dst, &w) in row.iter_mut().zip(&raw[..len]) {
                let w = if total != 0.0 { w / total } else { w };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                *dst = if w < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
            }
            starts.push(min);
            lens.push(len);
        }
        Self { starts, lens, stride, weights }
    }

    fn span(&self, i: usize) -> (usize, &[i32]) {
        let w = &self.weights[i * self.stride..i * self.stride + self.lens[i]];
        (self.starts[i], w)
    }

    /// The longest span.
    fn max_len(&self) -> usize {
        self.lens.iter().copied().max().unwrap_or(0)
    }

    /// The input range this axis reads: `first .. last`.
    fn used_range(&self) -> (usize, usize) {
        let n = self.starts.len();
        (self.starts[0], self.starts[n - 1] + self.lens[n - 1])
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over rows `first_row .. first_row + rows` of `src` (`src_w` wide).
fn horizontal(src: &[u8], src_w: usize, first_row: usize, rows: usize, axis: &AxisWeights) -> Vec<u8> {
    // Fixed-length kernels for the tap counts of ordinary downscales; the general loop beyond.
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    match axis.max_len() {
        0..=2 if src_w >= 2 => horizontal_fixed::<2, 7>(src, src_w, first_row, rows, axis),
        3 if src_w >= 3 => horizontal_fixed::<3, 10>(src, src_w, first_row, rows, axis),
        4 if src_w >= 4 => horizontal_fixed::<4, 13>(src, src_w, first_row, rows, axis),
        5..=6 if src_w >= 6 => horizontal_fixed::<6, 19>(src, src_w, first_row, rows, axis),
        7..=8 if src_w >= 8 => horizontal_fixed::<8, 25>(src, src_w, first_row, rows, axis),
        9..=12 if src_w >= 12 => horizontal_fixed::<12, 37>(src, src_w, first_row, rows, axis),
        13..=16 if src_w >= 16 => horizontal_fixed::<16, 49>(src, src_w, first_row, rows, axis),
        _ => horizontal_any(src, src_w, first_row, rows, axis),
    }
    // The guest: tap pairs through SIMD128 dot products (`guest::horizontal_pairs::<N, P, Q, R>`:
    // N taps, P = ⌈N/2⌉ pairs, Q = ⌈P/2⌉ 16-byte windows, R = 12Q + 4 bytes read per pixel).
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    match axis.max_len() {
        0..=2 if src_w >= 2 => guest::horizontal_pairs::<2, 1, 1, 16>(src, src_w, first_row, rows, axis),
        3..=4 if src_w >= 4 => guest::horizontal_pairs::<4, 2, 1, 16>(src, src_w, first_row, rows, axis),
        5..=6 if src_w >= 6 => guest::horizontal_pairs::<6, 3, 2, 28>(src, src_w, first_row, rows, axis),
        7..=8 if src_w >= 8 => guest::horizontal_pairs::<8, 4, 2, 28>(src, src_w, first_row, rows, axis),
        9..=12 if src_w >= 12 => guest::horizontal_pairs::<12, 6, 3, 40>(src, src_w, first_row, rows, axis),
        13..=16 if src_w >= 16 => guest::horizontal_pairs::<16, 8, 4, 52>(src, src_w, first_row, rows, axis),
        _ => horizontal_any(src, src_w, first_row, rows, axis),
    }
}

/// Each output pixel's span as `N` taps: the offset of its first byte in a row, and its
/// weights (spans shorter than `N` moved left where needed, padded with zero weights, which
/// leaves every sum unchanged).
fn fixed_spans<const N: usize>(src_w: usize, axis: &AxisWeights) -> impl Iterator<Item = (usize, [i32; N])> + '_ {
    debug_assert!(src_w >= N);
    (0..axis.starts.len()).map(move |x| {
        let (start, weights) = axis.span(x);
        let first = start.min(src_w - N);
        let mut kernel = [0i32; N];
        kernel[start - first..start - first + weights.len()].copy_from_slice(weights);
        (first * 3, kernel)
    })
}

/// Row `first_row + y` of `src` with at least `extra` readable bytes after it: the row as it
/// lies in `src` (the bytes after it belong to the next row) or, for the last rows, a copy
/// padded with zeros in `padded`. Those bytes only ever meet zero weights.
fn row_with_slack<'a>(src: &'a [u8], row_bytes: usize, row: usize, extra: usize, padded: &'a mut Vec<u8>) -> &'a [u8] {
    let begin = row * row_bytes;
    match src.get(begin..begin + row_bytes + extra) {
        Some(row) => row,
        None => {
            padded.clear();
            padded.extend_from_slice(&src[begin..begin + row_bytes]);
            padded.resize(row_bytes + extra, 0);
            &padded[..]
        }
    }
}

/// The horizontal pass with every output pixel reading exactly `N` input pixels (`B` = 3N + 1
/// bytes; see [`fixed_spans`]). With the tap count known at compile time the loops unroll,
/// and each pixel is read as four bytes (RGB plus the next byte, a discarded lane) into four
/// accumulators.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn horizontal_fixed<const N: usize, const B: usize>(
    src: &[u8],
    src_w: usize,
    first_row: usize,
    rows: usize,
    axis: &AxisWeights,
) -> Vec<u8> {
    debug_assert!(B == 3 * N + 1 && src_w >= N);
    let out_w = axis.starts.len();
    let (offsets, kernels): (Vec<usize>, Vec<[i32; N]>) = fixed_spans::<N>(src_w, axis).unzip();
    let row_bytes = src_w * 3;
    let mut out = vec![0u8; out_w * rows * 3];
    let mut padded = Vec::new();
    for (y, out_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
        // The last pixel's fourth byte lies past the end of its row.
        let row = row_with_slack(src, row_bytes, first_row + y, 1, &mut padded);
        for ((px, &offset), kernel) in out_row.chunks_exact_mut(3).zip(&offsets).zip(&kernels) {
            let taps = row[offset..].first_chunk::<B>().expect("every shifted span lies inside the row");
            px.copy_from_slice(&weighted_pixel(taps, kernel));
        }
    }
    out
}

/// One output pixel: `clip8(HALF + Σ kernel[j] × pixel j)` per channel for the `N` pixels in
/// `taps`, accumulated in four lanes (R, G, B and a discarded lane).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn weighted_pixel<const N: usize, const B: usize>(taps: &[u8; B], kernel: &[i32; N]) -> [u8; 3] {
    let mut acc = [HALF; 4];
    for (j, &k) in kernel.iter().enumerate() {
        for (c, a) in acc.iter_mut().enumerate() {
            *a += i32::from(taps[3 * j + c]) * k;
        }
    }
    [clip8(acc[0]), clip8(acc[1]), clip8(acc[2])]
}

/// The horizontal pass for any span length (very large downscales, tiny images).
fn horizontal_any(src: &[u8], src_w: usize, first_row: usize, rows: usize, axis: &AxisWeights) -> Vec<u8> {
    let out_w = axis.starts.len();
    let mut out = vec![0u8; out_w * rows * 3];
    for (y, out_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
        let row = &src[(first_row + y) * src_w * 3..(first_row + y + 1) * src_w * 3];
        for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
            let (start, weights) = axis.span(x);
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            for (s, &k) in row[start * 3..(start + weights.len()) * 3].chunks_exact(3).zip(weights) {
                r += i32::from(s[0]) * k;
                g += i32::from(s[1]) * k;
                b += i32::from(s[2]) * k;
            }
            px.copy_from_slice(&[clip8(r), clip8(g), clip8(b)]);
        }
    }
    out
}

/// Vertical pass: `src` is `width` wide; `axis` starts are relative to `src`'s first row.
fn vertical(src: &[u8], width: usize, axis: &AxisWeights, row_offset: usize) -> Vec<u8> {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return guest::vertical(src, width, axis, row_offset);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    vertical_portable(src, width, axis, row_offset)
}

/// [`vertical`] in plain Rust (native code; the reference for the guest's kernel).
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128", not(test)), allow(dead_code))]
fn vertical_portable(src: &[u8], width: usize, axis: &AxisWeights, row_offset: usize) -> Vec<u8> {
    let out_h = axis.starts.len();
    let stride = width * 3;
    let mut out = vec![0u8; stride * out_h];
    let mut acc = vec![0i32; stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (start, weights) = axis.span(y);
        acc.fill(HALF);
        for (j, &k) in weights.iter().enumerate() {
            let row = &src[(start - row_offset + j) * stride..(start - row_offset + j + 1) * stride];
            for (a, &s) in acc.iter_mut().zip(row) {
                *a += i32::from(s) * k;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Resize an RGB image to `width` × `height` exactly as Pillow's `BILINEAR` does.
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (src_w, src_h) = (img.width() as usize, img.height() as usize);
    let (dst_w, dst_h) = (width as usize, height as usize);
    if (src_w, src_h) == (dst_w, dst_h) {
        return img.clone();
    }
    let rows = AxisWeights::new(src_h, dst_h);
    let columns = AxisWeights::new(src_w, dst_w);
    let (first_row, last_row) = rows.used_range();
    let need_horizontal = dst_w != src_w;
    let need_vertical = dst_h != src_h;
    let data = if need_horizontal {
        let band = horizontal(img.as_raw(), src_w, first_row, last_row - first_row, &columns);
        if need_vertical { vertical(&band, dst_w, &rows, first_row) } else { band }
    } else {
        vertical(img.as_raw(), src_w, &rows, 0)
    };
    RgbImage::from_raw(width, height, data).unwrap_or_else(|| RgbImage::new(width, height))
}

/// The guest's SIMD128 kernels: the same integer sums as the portable loops, so the same bytes
/// (the unit tests, which `cargo xtask test` also runs compiled for the guest, compare them).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod guest {
    use core::arch::wasm32::{
        i8x16, i16x8, i16x8_narrow_i32x4, i32x4_add, i32x4_dot_i16x8, i32x4_mul, i32x4_shl, i32x4_shr, i32x4_splat,
        u8x16_narrow_i16x8, u8x16_swizzle, u16x8_extend_high_u8x16, u16x8_extend_low_u8x16, u32x4_extend_high_u16x8,
        u32x4_extend_low_u16x8, u32x4_extract_lane, u64x2, u64x2_extract_lane, v128,
    };

    use super::{AxisWeights, HALF, PRECISION_BITS, clip8, fixed_spans, row_with_slack};

    /// Sixteen bytes as a vector (two 64-bit loads; `v128.load` itself needs `unsafe`).
    #[inline(always)]
    pub(crate) fn load16(bytes: &[u8; 16]) -> v128 {
        let (lo, hi) = bytes.split_at(8);
        u64x2(u64::from_le_bytes(lo.try_into().expect("8 bytes")), u64::from_le_bytes(hi.try_into().expect("8 bytes")))
    }

    /// A vector's sixteen bytes (two 64-bit stores).
    #[inline(always)]
    pub(crate) fn store16(out: &mut [u8; 16], v: v128) {
        out[..8].copy_from_slice(&u64x2_extract_lane::<0>(v).to_le_bytes());
        out[8..].copy_from_slice(&u64x2_extract_lane::<1>(v).to_le_bytes());
    }

    /// Weights are split as `w = hi × 2¹⁵ + lo` with `lo` in `0..2¹⁵`, so that both halves fit
    /// the signed 16-bit lanes of `i32x4.dot_i16x8_s`; `Σ p·w = 2¹⁵ Σ p·hi + Σ p·lo` exactly.
    const SPLIT: u32 = 15;

    /// Two taps' pixels (6 bytes at the start, or at byte 6, of a 16-byte window) as eight
    /// 16-bit lanes `[R₀ R₁ G₀ G₁ B₀ B₁ 0 0]`: one dot product then sums a channel's pair.
    const PAIR_AT_0: v128 = i8x16(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
    const PAIR_AT_6: v128 = i8x16(6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1);

    /// One tap pair's weights as `[k₀ k₁ k₀ k₁ k₀ k₁ 0 0]`, high and low halves.
    fn pair_weights(k0: i32, k1: i32) -> (v128, v128) {
        let hi = |k: i32| (k >> SPLIT) as i16;
        let lo = |k: i32| (k & ((1 << SPLIT) - 1)) as i16;
        let (h0, h1, l0, l1) = (hi(k0), hi(k1), lo(k0), lo(k1));
        (i16x8(h0, h1, h0, h1, h0, h1, 0, 0), i16x8(l0, l1, l0, l1, l0, l1, 0, 0))
    }

    /// An output pixel's `P` tap pairs: high and low halves of the weights.
    type PairWeights<const P: usize> = ([v128; P], [v128; P]);

    /// The horizontal pass with `N` taps per output pixel taken as `P` pairs, read through `Q`
    /// 16-byte windows 12 bytes apart (`R` = 12Q + 4 bytes from the span's first byte): per
    /// pair one swizzle and two dot products, per pixel one shift-and-narrow for all channels.
    pub(super) fn horizontal_pairs<const N: usize, const P: usize, const Q: usize, const R: usize>(
        src: &[u8],
        src_w: usize,
        first_row: usize,
        rows: usize,
        axis: &AxisWeights,
    ) -> Vec<u8> {
        debug_assert!(P == N.div_ceil(2) && Q == P.div_ceil(2) && R == 12 * Q + 4 && src_w >= N);
        let out_w = axis.starts.len();
        let (offsets, kernels): (Vec<usize>, Vec<PairWeights<P>>) = fixed_spans::<N>(src_w, axis)
            .map(|(offset, k)| {
                let tap = |j: usize| k.get(j).copied().unwrap_or(0);
                let pairs: [(v128, v128); P] = core::array::from_fn(|p| pair_weights(tap(2 * p), tap(2 * p + 1)));
                (offset, (pairs.map(|(h, _)| h), pairs.map(|(_, l)| l)))
            })
            .unzip();
        let row_bytes = src_w * 3;
        let mut out = vec![0u8; out_w * rows * 3];
        let mut padded = Vec::new();
        for (y, out_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
            let row = row_with_slack(src, row_bytes, first_row + y, R - 3 * N, &mut padded);
            for ((px, &offset), (high, low)) in out_row.chunks_exact_mut(3).zip(&offsets).zip(&kernels) {
                let taps = row[offset..].first_chunk::<R>().expect("every shifted span lies inside the row");
                let mut acc_hi = i32x4_splat(0);
                let mut acc_lo = i32x4_splat(HALF);
                for q in 0..Q {
                    let window = load16(taps[12 * q..].first_chunk::<16>().expect("R covers every window"));
                    for (half, swizzle) in [PAIR_AT_0, PAIR_AT_6].into_iter().enumerate() {
                        let p = 2 * q + half;
                        if p < P {
                            let pixels = u8x16_swizzle(window, swizzle);
                            acc_hi = i32x4_add(acc_hi, i32x4_dot_i16x8(pixels, high[p]));
                            acc_lo = i32x4_add(acc_lo, i32x4_dot_i16x8(pixels, low[p]));
                        }
                    }
                }
                let acc = i32x4_add(i32x4_shl(acc_hi, SPLIT), acc_lo);
                let shifted = i32x4_shr(acc, PRECISION_BITS);
                let narrow = i16x8_narrow_i32x4(shifted, shifted);
                let [r, g, b, _] = u32x4_extract_lane::<0>(u8x16_narrow_i16x8(narrow, narrow)).to_le_bytes();
                px.copy_from_slice(&[r, g, b]);
            }
        }
        out
    }

    /// The vertical pass, sixteen bytes of a row at a time (four 32-bit accumulators), the
    /// bytes beyond the last multiple of 16 as in the portable loop.
    pub(super) fn vertical(src: &[u8], width: usize, axis: &AxisWeights, row_offset: usize) -> Vec<u8> {
        let out_h = axis.starts.len();
        let stride = width * 3;
        let mut out = vec![0u8; stride * out_h];
        let whole = stride / 16 * 16;
        for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
            let (start, weights) = axis.span(y);
            let first = (start - row_offset) * stride;
            let band = &src[first..first + weights.len() * stride];
            let (vectors, rest) = out_row.split_at_mut(whole);
            for (c, chunk) in vectors.chunks_exact_mut(16).enumerate() {
                let mut acc = [i32x4_splat(HALF); 4];
                for (row, &k) in band.chunks_exact(stride).zip(weights) {
                    let v = load16(row[c * 16..].first_chunk::<16>().expect("inside the row"));
                    let k = i32x4_splat(k);
                    let (lo, hi) = (u16x8_extend_low_u8x16(v), u16x8_extend_high_u8x16(v));
                    let wide = [
                        u32x4_extend_low_u16x8(lo),
                        u32x4_extend_high_u16x8(lo),
                        u32x4_extend_low_u16x8(hi),
                        u32x4_extend_high_u16x8(hi),
                    ];
                    for (a, w) in acc.iter_mut().zip(wide) {
                        *a = i32x4_add(*a, i32x4_mul(w, k));
                    }
                }
                let [a, b, c, d] = acc.map(|a| i32x4_shr(a, PRECISION_BITS));
                let bytes = u8x16_narrow_i16x8(i16x8_narrow_i32x4(a, b), i16x8_narrow_i32x4(c, d));
                store16(chunk.try_into().expect("16 bytes"), bytes);
            }
            for (i, o) in rest.iter_mut().enumerate() {
                let mut acc = HALF;
                for (row, &k) in band.chunks_exact(stride).zip(weights) {
                    acc += i32::from(row[whole + i]) * k;
                }
                *o = clip8(acc);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: usize, h: usize) -> Vec<u8> {
        (0..w * h * 3).map(|i| ((i * 7919 + i / 5 * 31) % 251) as u8).collect()
    }

    /// Every fixed-length kernel (and the padding of short spans, and the last row's spare
    /// byte) gives exactly what the general loop gives.
    #[test]
    fn fixed_kernels_equal_the_general_loop() {
        for (src_w, dst_w) in [
            (20, 40),
            (60, 40),
            (40, 50),
            (40, 13),
            (100, 41),
            (100, 30),
            (120, 31),
            (300, 61),
            (300, 41),
            (500, 63),
            (9, 3),
        ] {
            let src_h = 7;
            let src = pattern(src_w, src_h);
            let axis = AxisWeights::new(src_w, dst_w);
            let general = horizontal_any(&src, src_w, 0, src_h, &axis);
            let chosen = horizontal(&src, src_w, 0, src_h, &axis);
            assert_eq!(chosen, general, "{src_w} → {dst_w} (longest span {})", axis.max_len());
        }
    }

    /// The same over many sizes, from one pixel up, shrinking and enlarging.
    #[test]
    fn fixed_kernels_equal_the_general_loop_for_all_small_sizes() {
        for src_w in 1..=64 {
            for dst_w in [1, 2, 3, src_w / 2, src_w / 3, src_w / 5, src_w / 7, src_w - 1, src_w * 2, src_w * 3] {
                if dst_w == 0 || dst_w == src_w {
                    continue;
                }
                let src = pattern(src_w, 2);
                let axis = AxisWeights::new(src_w, dst_w);
                assert_eq!(
                    horizontal(&src, src_w, 0, 2, &axis),
                    horizontal_any(&src, src_w, 0, 2, &axis),
                    "{src_w} → {dst_w}"
                );
            }
        }
    }

    /// The vertical pass (the guest's SIMD128 kernel when compiled for it) equals the
    /// portable loop, for widths with and without a tail beyond the last 16 bytes.
    #[test]
    fn vertical_kernel_equals_the_portable_loop() {
        for (width, src_h, dst_h) in [(1, 9, 4), (5, 7, 3), (16, 20, 41), (37, 23, 10), (416, 720, 234), (61, 50, 49)] {
            let src = pattern(width, src_h);
            let axis = AxisWeights::new(src_h, dst_h);
            assert_eq!(
                vertical(&src, width, &axis, 0),
                vertical_portable(&src, width, &axis, 0),
                "{width} wide, {src_h} → {dst_h} rows"
            );
        }
    }

    #[test]
    fn spans_cover_the_input_and_weights_sum_to_one() {
        for (n, m) in [(1280, 416), (600, 416), (37, 50), (5000, 416)] {
            let axis = AxisWeights::new(n, m);
            let (first, last) = axis.used_range();
            assert!(first == 0 && last == n, "{n} → {m}: reads {first}..{last}");
            for i in 0..m {
                let sum: i32 = axis.span(i).1.iter().sum();
                assert!((sum - (1 << PRECISION_BITS)).abs() <= axis.lens[i] as i32, "{n} → {m}, output {i}: {sum}");
            }
        }
    }
}
