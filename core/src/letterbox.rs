//! Letterboxing: resize keeping the aspect ratio, centre on a padding colour, and lay the
//! result out as the model's NCHW `f32` input in `[0, 1]`.
//!
//! The resize is Pillow's `BILINEAR`, reproduced exactly by [`crate::resize`].

use image::RgbImage;

use crate::resize::resize_bilinear;

/// Where the resized image sits inside the model input, and how to map back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Original image width.
    pub src_width: u32,
    /// Original image height.
    pub src_height: u32,
    /// Scale from original to model pixels (same on both axes).
    pub scale: f64,
    /// Resized image width inside the input.
    pub width: u32,
    /// Resized image height inside the input.
    pub height: u32,
    /// Left padding in model pixels.
    pub left: u32,
    /// Top padding in model pixels.
    pub top: u32,
}

impl Letterbox {
    /// The geometry of fitting `src` into `dst`: scale `min(dw/sw, dh/sh)`, sizes rounded
    /// half up, padding split evenly with the odd pixel on the right / bottom.
    pub fn fit(src_width: u32, src_height: u32, dst_width: u32, dst_height: u32) -> Self {
        let scale =
            f64::min(f64::from(dst_width) / f64::from(src_width), f64::from(dst_height) / f64::from(src_height));
        let round = |v: u32, max: u32| ((f64::from(v) * scale + 0.5).floor() as u32).clamp(1, max);
        let width = round(src_width, dst_width);
        let height = round(src_height, dst_height);
        Self {
            src_width,
            src_height,
            scale,
            width,
            height,
            left: (dst_width - width) / 2,
            top: (dst_height - height) / 2,
        }
    }

    /// Map a box `[x1, y1, x2, y2]` in model pixels back to original pixels, clipped to the image.
    pub fn to_original(&self, b: [f32; 4]) -> [f32; 4] {
        let (sx, sy) = (self.src_width as f32, self.src_height as f32);
        let (l, t, s) = (self.left as f32, self.top as f32, self.scale as f32);
        [
            ((b[0] - l) / s).clamp(0.0, sx),
            ((b[1] - t) / s).clamp(0.0, sy),
            ((b[2] - l) / s).clamp(0.0, sx),
            ((b[3] - t) / s).clamp(0.0, sy),
        ]
    }
}

/// Letterbox `img` into a `width` × `height` NCHW RGB tensor with values `/255`, padded with
/// `color`. Returns the tensor (`3 * height * width` values) and its geometry.
pub fn letterbox(img: &RgbImage, width: u32, height: u32, color: [u8; 3]) -> (Vec<f32>, Letterbox) {
    let unit: [f32; 256] = std::array::from_fn(|v| v as f32 / 255.0);
    let lb = Letterbox::fit(img.width(), img.height(), width, height);
    (planes(&resize_bilinear(img, lb.width, lb.height), &lb, width, height, &unit, color), lb)
}

/// [`letterbox`], with the tensor directly as the little-endian `f32` bytes wasi-nn takes
/// (no intermediate `f32` buffer). Same values: `v as f32 / 255.0`, whichever way it is computed.
pub fn letterbox_le_bytes(img: &RgbImage, width: u32, height: u32, color: [u8; 3]) -> (Vec<u8>, Letterbox) {
    letterbox_reduced_le_bytes(img, img.dimensions(), width, height, color)
}

/// [`letterbox_le_bytes`] of an image of `original` size decoded reduced (`img` is smaller,
/// e.g. a JPEG decoded at 1/2 scale: [`crate::decode::decode_rgb_for_input`]): the geometry is
/// the original's, so boxes map back to its pixels; the resize starts from `img`.
pub fn letterbox_reduced_le_bytes(
    img: &RgbImage,
    original: (u32, u32),
    width: u32,
    height: u32,
    color: [u8; 3],
) -> (Vec<u8>, Letterbox) {
    let lb = Letterbox::fit(original.0, original.1, width, height);
    (byte_planes(&resize_bilinear(img, lb.width, lb.height), &lb, width, height, color), lb)
}

/// `v as f32 / 255.0` as little-endian bytes.
fn unit_le_bytes(v: u8) -> [u8; 4] {
    (f32::from(v) / 255.0).to_le_bytes()
}

/// [`planes`] for the byte tensor: each padding value written once (not the whole tensor
/// filled first), image rows deinterleaved by [`row_to_planes`].
fn byte_planes(resized: &RgbImage, lb: &Letterbox, width: u32, height: u32, color: [u8; 3]) -> Vec<u8> {
    let (w, rw, rh) = (width as usize, lb.width as usize, lb.height as usize);
    let (left, top) = (lb.left as usize, lb.top as usize);
    let plane = w * height as usize * 4;
    let mut tensor = vec![0u8; 3 * plane];
    let (r_plane, rest) = tensor.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    let mut planes = [r_plane, g_plane, b_plane];
    // Padding: the rows above and below the image, and the columns left and right of it.
    let image_rows = top * w * 4..(top + rh) * w * 4;
    for (plane, c) in planes.iter_mut().zip(color) {
        let pad = unit_le_bytes(c);
        let fill = |bytes: &mut [u8]| bytes.chunks_exact_mut(4).for_each(|b| b.copy_from_slice(&pad));
        fill(&mut plane[..image_rows.start]);
        fill(&mut plane[image_rows.end..]);
        for row in plane[image_rows.clone()].chunks_exact_mut(w * 4) {
            fill(&mut row[..left * 4]);
            fill(&mut row[(left + rw) * 4..]);
        }
    }
    let raw = resized.as_raw();
    let [r, g, b] = planes;
    for y in 0..rh {
        let at = ((top + y) * w + left) * 4..((top + y) * w + left + rw) * 4;
        // The row and everything after it: the guest's kernel reads a little past a row's end.
        row_to_planes(&raw[y * rw * 3..], rw, &mut r[at.clone()], &mut g[at.clone()], &mut b[at]);
    }
    tensor
}

/// Deinterleave the first `n` RGB pixels of `rgb` into three runs of little-endian `f32`
/// (`v / 255`), `4n` bytes each.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn row_to_planes(rgb: &[u8], n: usize, r: &mut [u8], g: &mut [u8], b: &mut [u8]) {
    let lut: [[u8; 4]; 256] = std::array::from_fn(|v| unit_le_bytes(v as u8));
    let outs = r.chunks_exact_mut(4).zip(g.chunks_exact_mut(4)).zip(b.chunks_exact_mut(4));
    for (px, ((r, g), b)) in rgb[..n * 3].chunks_exact(3).zip(outs) {
        r.copy_from_slice(&lut[usize::from(px[0])]);
        g.copy_from_slice(&lut[usize::from(px[1])]);
        b.copy_from_slice(&lut[usize::from(px[2])]);
    }
}

/// [`row_to_planes`] in SIMD128 (the guest): four pixels at a time, one 16-byte load (12 bytes
/// used), a swizzle per channel into 32-bit lanes, then `f32x4.convert` and `f32x4.div` by
/// 255 (IEEE division, so the same bits as the scalar `v as f32 / 255.0`).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn row_to_planes(rgb: &[u8], n: usize, r: &mut [u8], g: &mut [u8], b: &mut [u8]) {
    use core::arch::wasm32::{f32x4_convert_u32x4, f32x4_div, f32x4_splat, i8x16, u8x16_swizzle};

    use crate::resize::guest::{load16, store16};
    const CHANNELS: [core::arch::wasm32::v128; 3] = [
        i8x16(0, -1, -1, -1, 3, -1, -1, -1, 6, -1, -1, -1, 9, -1, -1, -1),
        i8x16(1, -1, -1, -1, 4, -1, -1, -1, 7, -1, -1, -1, 10, -1, -1, -1),
        i8x16(2, -1, -1, -1, 5, -1, -1, -1, 8, -1, -1, -1, 11, -1, -1, -1),
    ];
    let scale = f32x4_splat(255.0);
    // Whole groups of four whose 16-byte read stays inside `rgb`.
    let groups = (n / 4).min(rgb.len().saturating_sub(4) / 12);
    let outs = r.chunks_exact_mut(16).zip(g.chunks_exact_mut(16)).zip(b.chunks_exact_mut(16));
    for (q, ((r, g), b)) in outs.take(groups).enumerate() {
        let v = load16(rgb[12 * q..].first_chunk::<16>().expect("checked by `groups`"));
        for (out, swizzle) in [r, g, b].into_iter().zip(CHANNELS) {
            let unit = f32x4_div(f32x4_convert_u32x4(u8x16_swizzle(v, swizzle)), scale);
            store16(out.try_into().expect("16 bytes"), unit);
        }
    }
    for x in groups * 4..n {
        let px = &rgb[x * 3..x * 3 + 3];
        r[x * 4..x * 4 + 4].copy_from_slice(&unit_le_bytes(px[0]));
        g[x * 4..x * 4 + 4].copy_from_slice(&unit_le_bytes(px[1]));
        b[x * 4..x * 4 + 4].copy_from_slice(&unit_le_bytes(px[2]));
    }
}

/// Lay `resized` out as three planes of `width` × `height` elements (`lut[v]` for a channel
/// value `v`) at the letterbox offset, padding with `lut[color]`.
fn planes<T: Copy>(
    resized: &RgbImage,
    lb: &Letterbox,
    width: u32,
    height: u32,
    lut: &[T; 256],
    color: [u8; 3],
) -> Vec<T> {
    let plane = (width * height) as usize;
    let mut tensor = Vec::with_capacity(3 * plane);
    for c in color {
        tensor.extend(std::iter::repeat_n(lut[usize::from(c)], plane));
    }
    let (w, rw) = (width as usize, lb.width as usize);
    let (left, top) = (lb.left as usize, lb.top as usize);
    let (r_plane, rest) = tensor.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    for (y, row) in resized.as_raw().chunks_exact(rw * 3).enumerate() {
        let start = (top + y) * w + left;
        let (r, g, b) =
            (&mut r_plane[start..start + rw], &mut g_plane[start..start + rw], &mut b_plane[start..start + rw]);
        for (x, px) in row.chunks_exact(3).enumerate() {
            r[x] = lut[usize::from(px[0])];
            g[x] = lut[usize::from(px[1])];
            b[x] = lut[usize::from(px[2])];
        }
    }
    tensor
}

/// Little-endian bytes of an `f32` slice (the wasi-nn tensor data format).
pub fn f32_to_le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `f32` values from little-endian bytes (trailing bytes that do not fill an `f32` are ignored).
pub fn f32_from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn pattern() -> RgbImage {
        RgbImage::from_fn(37, 23, |x, y| {
            Rgb([((x * 7 + y * 3) % 256) as u8, ((x * x + y * 11) % 256) as u8, ((x * y * 5 + 17) % 256) as u8])
        })
    }

    fn assert_close_to_pillow(w: u32, h: u32, expected: &[u8]) {
        let ours = resize_bilinear(&pattern(), w, h);
        assert_eq!(ours.as_raw().len(), expected.len());
        let differing = ours.as_raw().iter().zip(expected).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{w}x{h}: {differing} values differ from Pillow");
    }

    #[test]
    fn shrinking_matches_pillow_antialiased_bilinear() {
        assert_close_to_pillow(16, 10, include_bytes!("../testdata/pillow-bilinear-37x23-to-16x10.rgb"));
    }

    #[test]
    fn enlarging_matches_pillow_bilinear() {
        assert_close_to_pillow(50, 31, include_bytes!("../testdata/pillow-bilinear-37x23-to-50x31.rgb"));
    }

    #[test]
    fn geometry_of_a_wide_image() {
        // coffee.png: 600x400 into 416x416
        let lb = Letterbox::fit(600, 400, 416, 416);
        assert_eq!((lb.width, lb.height, lb.left, lb.top), (416, 277, 0, 69));
        assert!((lb.scale - 416.0 / 600.0).abs() < 1e-12);
    }

    #[test]
    fn geometry_of_a_tall_and_a_tiny_image() {
        let lb = Letterbox::fit(810, 1080, 416, 416);
        assert_eq!((lb.width, lb.height, lb.left, lb.top), (312, 416, 52, 0));
        let lb = Letterbox::fit(1, 1000, 416, 416);
        assert_eq!((lb.width, lb.height), (1, 416));
        let lb = Letterbox::fit(416, 416, 416, 416);
        assert_eq!((lb.width, lb.height, lb.left, lb.top), (416, 416, 0, 0));
    }

    #[test]
    fn boxes_map_back_and_clip() {
        let lb = Letterbox::fit(600, 400, 416, 416);
        let s = 416.0 / 600.0;
        let b = lb.to_original([10.0, 69.0 + 10.0, 10.0 + 100.0 * s as f32, 400.0]);
        assert!((b[0] - 10.0 / s as f32).abs() < 1e-3);
        assert!((b[1] - 10.0 / s as f32).abs() < 1e-3);
        assert!((b[2] - (10.0 / s as f32 + 100.0)).abs() < 1e-2);
        assert_eq!(b[3], 400.0, "clipped to the image height");
        let b = lb.to_original([-50.0, -50.0, 1000.0, 1000.0]);
        assert_eq!(b, [0.0, 0.0, 600.0, 400.0]);
    }

    #[test]
    fn tensor_layout_and_padding() {
        let img = RgbImage::from_pixel(4, 2, Rgb([255, 0, 51]));
        let (t, lb) = letterbox(&img, 4, 4, [114, 114, 114]);
        assert_eq!((lb.top, lb.height), (1, 2));
        assert_eq!(t.len(), 3 * 16);
        let at = |c: usize, y: usize, x: usize| t[c * 16 + y * 4 + x];
        assert_eq!(at(0, 0, 0), 114.0 / 255.0, "padding row");
        assert_eq!(at(0, 1, 0), 1.0);
        assert_eq!(at(1, 1, 3), 0.0);
        assert_eq!(at(2, 2, 2), 0.2);
        assert_eq!(at(2, 3, 1), 114.0 / 255.0, "padding row");
    }

    #[test]
    fn the_byte_tensor_is_the_f32_tensor() {
        let img = RgbImage::from_fn(9, 5, |x, y| Rgb([(x * 20) as u8, (y * 40) as u8, 7]));
        let (floats, a) = letterbox(&img, 8, 8, [114, 114, 114]);
        let (bytes, b) = letterbox_le_bytes(&img, 8, 8, [114, 114, 114]);
        assert_eq!(a, b);
        assert_eq!(bytes, f32_to_le_bytes(&floats));
        assert!(floats.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    /// The byte tensor (the guest's SIMD128 deinterleave when compiled for it) equals the
    /// `f32` tensor for widths that leave 0–3 pixels after the last group of four, with padding
    /// on either axis.
    #[test]
    fn the_byte_tensor_is_the_f32_tensor_at_every_width() {
        for (w, h, dw, dh) in
            [(37, 23, 50, 50), (23, 37, 40, 30), (5, 3, 9, 9), (1, 1, 4, 4), (64, 48, 63, 63), (640, 427, 416, 416)]
        {
            let img = RgbImage::from_fn(w, h, |x, y| {
                Rgb([(x * 5 + y) as u8, (x * y) as u8, (255u32.wrapping_sub(x + y)) as u8])
            });
            let (floats, a) = letterbox(&img, dw, dh, [114, 0, 255]);
            let (bytes, b) = letterbox_le_bytes(&img, dw, dh, [114, 0, 255]);
            assert_eq!(a, b);
            assert_eq!(bytes, f32_to_le_bytes(&floats), "{w}x{h} into {dw}x{dh}");
        }
    }

    #[test]
    fn le_bytes_round_trip() {
        let v = [0.5f32, -1.25, 3.0e-7];
        assert_eq!(f32_from_le_bytes(&f32_to_le_bytes(&v)), v);
    }
}
