//! Decoding PNG, JPEG and WebP bytes into an RGB image (the `image` crate; colour JPEGs
//! straight through `zune-jpeg`, the decoder the `image` crate itself uses), with EXIF
//! orientation applied and a size limit checked before any pixel is allocated.
//!
//! [`decode_rgb_for_input`] decodes for a model input of a known size: a colour JPEG several
//! times larger is decoded at 1/2, 1/4 or 1/8 scale (`jpeg-decoder`'s reduced IDCTs, what
//! libjpeg's `scale_denom` and Pillow's `Image.draft` do), so neither the decoder nor the
//! resize works on pixels the letterbox would throw away.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;
use zune_jpeg::errors::DecodeErrors;

use crate::error::{ApiError, ErrorCode};
use crate::letterbox::Letterbox;
use crate::options::DecodeMode;

/// Upper bounds on what a request may make the decoder allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width or height, in pixels.
    pub max_side: u32,
    /// Largest width × height.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 16 384 px a side and 40 megapixels: any real photograph, not a decompression bomb.
    fn default() -> Self {
        Self { max_side: 16_384, max_pixels: 40_000_000 }
    }
}

/// Recognise the image format from its first bytes (PNG, JPEG or WebP only).
pub fn sniff_format(bytes: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(bytes).ok()? {
        f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP) => Some(f),
        _ => None,
    }
}

/// An image decoded for a model input: upright (EXIF orientation applied), whole or reduced.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The pixels: [`Decoded::width`] × [`Decoded::height`], each divided by
    /// [`Decoded::reduction`] and rounded up.
    pub image: RgbImage,
    /// The image's own width (upright), which boxes are reported against.
    pub width: u32,
    /// The image's own height (upright).
    pub height: u32,
    /// 1 (decoded whole), 2, 4 or 8 (a JPEG decoded at that fraction of its size).
    pub reduction: u32,
}

impl Decoded {
    /// An image decoded whole.
    pub fn whole(image: RgbImage) -> Self {
        let (width, height) = image.dimensions();
        Self { image, width, height, reduction: 1 }
    }
}

/// Decode an image to 8-bit RGB (alpha dropped, grey expanded, 16-bit scaled down, as
/// Pillow's `convert("RGB")` does), with its EXIF orientation applied.
pub fn decode_rgb(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, ApiError> {
    decode(bytes, limits, None).map(|d| d.image)
}

/// [`decode_rgb`] for a model input of `input` (width, height): a colour JPEG much larger than
/// its letterboxed size is decoded at 1/2, 1/4 or 1/8 scale ([`jpeg_reduction`] with the
/// `mode`'s gap), so neither the decoder nor the resize works on pixels the input throws away.
/// Other images, and JPEGs `jpeg-decoder` cannot reduce, are decoded whole. A reduced decode's
/// pixels differ from a whole decode resized (a DCT-domain reduction filters differently from
/// the bilinear resize alone); the geometry does not.
pub fn decode_rgb_for_input(
    bytes: &[u8],
    limits: DecodeLimits,
    input: (u32, u32),
    mode: DecodeMode,
) -> Result<Decoded, ApiError> {
    decode(bytes, limits, mode.gap().map(|gap| (input, gap)))
}

/// The largest JPEG reduction (8, 4 or 2; else 1) that keeps `gap` times the size the image
/// has letterboxed into `input`: Pillow's rule (`Image.draft` asked for `gap` × that size),
/// `width >= r * gap * fitted width`, and the same for heights.
pub fn jpeg_reduction(width: u32, height: u32, input: (u32, u32), gap: u32) -> u32 {
    let fitted = Letterbox::fit(width, height, input.0, input.1);
    let keeps = |r: u32, side: u32, fitted: u32| u64::from(side) >= u64::from(r * gap) * u64::from(fitted);
    [8, 4, 2].into_iter().find(|&r| keeps(r, width, fitted.width) && keeps(r, height, fitted.height)).unwrap_or(1)
}

/// Decode; with `reduce_for` (model input size, gap) a large colour JPEG decodes reduced.
fn decode(bytes: &[u8], limits: DecodeLimits, reduce_for: Option<((u32, u32), u32)>) -> Result<Decoded, ApiError> {
    let format = sniff_format(bytes).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UndecodableImage,
            match image::guess_format(bytes) {
                Ok(other) => format!("{other:?} images are not supported: send PNG, JPEG or WebP"),
                Err(_) => "the body is not a PNG, JPEG or WebP image".to_owned(),
            },
        )
    })?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(ApiError::new(
            ErrorCode::UndecodableImage,
            "the JPEG is truncated: its image data ends without an end-of-image marker",
        ));
    }
    if format == ImageFormat::Jpeg
        && let Some(decoded) = decode_rgb_jpeg(bytes, limits, reduce_for)?
    {
        return Ok(decoded);
    }
    // The header alone first: a decompression bomb is refused before any decoder buffer exists.
    let mut probe = ImageReader::with_format(Cursor::new(bytes), format);
    probe.no_limits(); // reading the header allocates nothing; our own check follows
    let (w, h) = probe.into_dimensions().map_err(|e| map_image_error(e, limits))?;
    check_size(w, h, limits)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // Room for the decoded pixels (up to 16-bit RGBA) plus the decoder's own buffers.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| map_image_error(e, limits))?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, limits))?;
    img.apply_orientation(orientation);
    Ok(Decoded::whole(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.into_rgb8(),
    }))
}

/// A JPEG whose output is RGB (YCbCr, RGB, CMYK and YCCK ones) decoded by `zune-jpeg`
/// directly, with the options the `image` crate would give it, so the same pixels: this skips
/// the `image` crate's copy of the input and its three header parses (≈ 5 M Wasm
/// instructions for a 1280×720 photograph). `None` for grey or alpha JPEGs, which take the
/// `image` crate's path and its conversion to RGB. With `reduce_for` (model input size, gap),
/// reduced when [`jpeg_reduction`] allows.
fn decode_rgb_jpeg(
    bytes: &[u8],
    limits: DecodeLimits,
    reduce_for: Option<((u32, u32), u32)>,
) -> Result<Option<Decoded>, ApiError> {
    let max_side = limits.max_side as usize;
    let options = DecoderOptions::default().set_strict_mode(false).set_max_width(max_side).set_max_height(max_side);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    // The header alone first: a decompression bomb is refused before any pixel buffer exists.
    decoder.decode_headers().map_err(|e| map_jpeg_error(e, limits))?;
    let (Some((w, h)), Some(input)) = (decoder.dimensions(), decoder.input_colorspace()) else {
        return Ok(None);
    };
    if matches!(input, ColorSpace::RGBA | ColorSpace::Luma | ColorSpace::LumaA) {
        return Ok(None);
    }
    let (w, h) = (u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX));
    check_size(w, h, limits)?;
    decoder.set_options(options.jpeg_set_out_colorspace(ColorSpace::RGB));
    let orientation =
        decoder.exif().and_then(|exif| Orientation::from_exif_chunk(exif)).unwrap_or(Orientation::NoTransforms);
    let upright = if turns_sideways(orientation) { (h, w) } else { (w, h) };
    let reduction = reduce_for.map_or(1, |(input, gap)| jpeg_reduction(upright.0, upright.1, input, gap));
    if reduction > 1
        && let Some(reduced) = decode_jpeg_reduced(bytes, (w, h), reduction)
    {
        let image = apply_orientation(reduced, orientation);
        return Ok(Some(Decoded { image, width: upright.0, height: upright.1, reduction }));
    }
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    decoder.decode_into(&mut pixels).map_err(|e| map_jpeg_error(e, limits))?;
    let rgb = RgbImage::from_raw(w, h, pixels).expect("the buffer is w × h × 3 bytes");
    Ok(Some(Decoded::whole(apply_orientation(rgb, orientation))))
}

/// A colour JPEG of `size` decoded at 1/`reduction` scale by `jpeg-decoder` (image-rs; unlike
/// `zune-jpeg` it has reduced IDCTs: 4×4, 2×2 and 1×1 per 8×8 block, so the IDCT, the
/// upsampling and the colour conversion do a quarter of the work or less; the entropy decoding
/// is the same). `None` when it cannot (a stream it refuses, CMYK output): the caller then
/// decodes the whole image, whose decoder reports any real error.
fn decode_jpeg_reduced(bytes: &[u8], size: (u32, u32), reduction: u32) -> Option<RgbImage> {
    let want = (size.0.div_ceil(reduction), size.1.div_ceil(reduction));
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    let got = decoder.scale(u16::try_from(want.0).ok()?, u16::try_from(want.1).ok()?).ok()?;
    if (u32::from(got.0), u32::from(got.1)) != want {
        return None;
    }
    let pixels = decoder.decode().ok()?;
    if decoder.info()?.pixel_format != jpeg_decoder::PixelFormat::RGB24 {
        return None;
    }
    RgbImage::from_raw(want.0, want.1, pixels)
}

/// Whether an EXIF orientation swaps width and height.
fn turns_sideways(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

fn apply_orientation(rgb: RgbImage, orientation: Orientation) -> RgbImage {
    if orientation == Orientation::NoTransforms {
        return rgb;
    }
    let mut img = DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    img.into_rgb8()
}

fn map_jpeg_error(e: DecodeErrors, limits: DecodeLimits) -> ApiError {
    match e {
        DecodeErrors::LargeDimensions(_) => ApiError::new(
            ErrorCode::ImageTooLarge,
            format!(
                "the image exceeds the decoding limits ({} px a side, {} megapixels): {e}",
                limits.max_side,
                limits.max_pixels as f64 / 1e6
            ),
        ),
        other => ApiError::new(ErrorCode::UndecodableImage, format!("the image could not be decoded: {other}")),
    }
}

/// Whether a JPEG stream is whole: walking its marker segments from SOI, every scan's
/// entropy-coded data is followed by another marker, and the stream reaches EOI. (The
/// `image` crate's decoder fills a truncated JPEG with grey and reports success; Pillow
/// refuses it, and so do we.)
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    loop {
        // Find the next marker (skipping fill bytes 0xFF).
        i = next_ff(bytes, i);
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else { return false };
        i += 1;
        match marker {
            0xD9 => return true,            // EOI
            0x01 | 0xD0..=0xD7 => continue, // TEM, RSTn: no length
            0x00 => continue,               // stuffed byte outside a scan: tolerate
            _ => {
                let Some(len) = bytes.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
                    return false;
                };
                if len < 2 || i + len > bytes.len() {
                    return false;
                }
                i += len;
                if marker == 0xDA {
                    // SOS: entropy-coded data runs until a marker other than a stuffed 0xFF00 or RSTn.
                    loop {
                        i = next_ff(bytes, i);
                        match bytes.get(i + 1) {
                            None => return false,
                            Some(0x00 | 0xD0..=0xD7) => i += 2,
                            Some(0xFF) => i += 1,
                            Some(_) => break,
                        }
                    }
                }
            }
        }
    }
}

/// The index of the first 0xFF byte at or after `from` (`bytes.len()` if none): `memchr`, whose
/// guest build scans 16 bytes at a time with SIMD128.
fn next_ff(bytes: &[u8], from: usize) -> usize {
    bytes.get(from..).and_then(|rest| memchr::memchr(0xFF, rest)).map_or(bytes.len(), |k| from + k)
}

fn check_size(w: u32, h: u32, limits: DecodeLimits) -> Result<(), ApiError> {
    if w == 0 || h == 0 {
        return Err(ApiError::new(ErrorCode::UndecodableImage, format!("the image is empty ({w}x{h})")));
    }
    if w > limits.max_side || h > limits.max_side || u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(ApiError::new(
            ErrorCode::ImageTooLarge,
            format!(
                "the image is {w}x{h} pixels; the limit is {} px a side and {} megapixels",
                limits.max_side,
                limits.max_pixels as f64 / 1e6
            ),
        ));
    }
    Ok(())
}

fn map_image_error(e: image::ImageError, limits: DecodeLimits) -> ApiError {
    match e {
        image::ImageError::Limits(l) => ApiError::new(
            ErrorCode::ImageTooLarge,
            format!(
                "the image exceeds the decoding limits ({} px a side, {} megapixels): {l}",
                limits.max_side,
                limits.max_pixels as f64 / 1e6
            ),
        ),
        other => ApiError::new(ErrorCode::UndecodableImage, format!("the image could not be decoded: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb, RgbaImage};

    fn png(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    #[test]
    fn decodes_png_and_jpeg() {
        let img = RgbImage::from_fn(7, 5, |x, y| Rgb([x as u8 * 30, y as u8 * 40, 200]));
        let back = decode_rgb(&png(&img), DecodeLimits::default()).unwrap();
        assert_eq!(back, img);

        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .write_image(img.as_raw(), 7, 5, image::ExtendedColorType::Rgb8)
            .unwrap();
        let back = decode_rgb(&jpeg, DecodeLimits::default()).unwrap();
        assert_eq!(back.dimensions(), (7, 5));
    }

    fn jpeg(img: &RgbImage, exif: Option<Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
        if let Some(exif) = exif {
            encoder.set_exif_metadata(exif).unwrap();
        }
        encoder.write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8).unwrap();
        out
    }

    fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 9 + y) as u8, (y * 13) as u8, ((x ^ y) * 5) as u8]))
    }

    /// Colour JPEGs skip the `image` crate's wrapper: same pixels as through it.
    #[test]
    fn colour_jpegs_decode_as_the_image_crate_decodes_them() {
        for (w, h) in [(1, 1), (7, 5), (64, 48), (333, 101)] {
            let bytes = jpeg(&photo(w, h), None);
            let ours = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
            let theirs = image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg).unwrap().into_rgb8();
            assert_eq!(ours, theirs, "{w}x{h}");
        }
    }

    /// A CMYK JPEG (Pillow's: Adobe marker, inverted values) decodes to the RGB Pillow gives.
    #[test]
    fn cmyk_jpegs_decode_to_rgb() {
        let rgb = decode_rgb(include_bytes!("../testdata/pillow-cmyk-16x8.jpg"), DecodeLimits::default()).unwrap();
        assert_eq!(rgb.dimensions(), (16, 8));
        let near = |p: &Rgb<u8>, want: [u8; 3]| p.0.iter().zip(want).all(|(&a, b)| a.abs_diff(b) <= 8);
        assert!(near(rgb.get_pixel(2, 4), [0, 255, 255]), "cyan half: {:?}", rgb.get_pixel(2, 4));
        assert!(near(rgb.get_pixel(13, 4), [0, 0, 0]), "black half: {:?}", rgb.get_pixel(13, 4));
    }

    /// A grey JPEG takes the `image` crate's path: grey expanded to RGB.
    #[test]
    fn grey_jpegs_are_expanded() {
        let grey = image::GrayImage::from_fn(9, 6, |x, y| image::Luma([(x * 20 + y * 7) as u8]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .write_image(grey.as_raw(), 9, 6, image::ExtendedColorType::L8)
            .unwrap();
        let ours = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
        let theirs = image::load_from_memory(&bytes).unwrap().into_rgb8();
        assert_eq!(ours, theirs);
        assert!(ours.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    }

    /// EXIF with orientation 6 (rotate 90° clockwise): a little-endian TIFF header, one IFD
    /// entry: Orientation (0x0112), SHORT, 1 value: 6.
    fn orientation_6() -> Vec<u8> {
        [
            b"II".as_slice(),
            &42u16.to_le_bytes(),
            &8u32.to_le_bytes(),
            &1u16.to_le_bytes(),
            &0x0112u16.to_le_bytes(),
            &3u16.to_le_bytes(),
            &1u32.to_le_bytes(),
            &6u16.to_le_bytes(),
            &0u16.to_le_bytes(),
            &0u32.to_le_bytes(),
        ]
        .concat()
    }

    /// EXIF orientation 6 (rotate 90° clockwise) is applied; a 10×4 JPEG comes out 4×10.
    #[test]
    fn jpeg_exif_orientation_is_applied() {
        let bytes = jpeg(&photo(10, 4), Some(orientation_6()));
        let ours = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
        let upright = image::load_from_memory(&bytes).unwrap().into_rgb8();
        assert_eq!(ours.dimensions(), (4, 10));
        assert_eq!(ours, image::imageops::rotate90(&upright));
    }

    #[test]
    fn jpeg_reduction_keeps_the_letterboxed_size_covered() {
        let fast = |w, h| jpeg_reduction(w, h, (416, 416), 1);
        assert_eq!(fast(1280, 720), 2); // 640x360 covers 416x234
        assert_eq!(fast(832, 468), 2); // exactly
        assert_eq!(fast(831, 468), 1); // 415.5 wide at 1/2
        assert_eq!(fast(1920, 1080), 4);
        assert_eq!(fast(4000, 3000), 8);
        assert_eq!(fast(600, 400), 1);
        assert_eq!(fast(416, 4000), 8); // tall: 52x500 covers 43x416
        // Auto keeps twice the letterboxed size.
        let auto = |w, h| jpeg_reduction(w, h, (416, 416), 2);
        assert_eq!(auto(1280, 720), 1);
        assert_eq!(auto(1664, 936), 2);
        assert_eq!(auto(2560, 1440), 2);
        assert_eq!(auto(4032, 3024), 4); // a phone photograph: 1008x756 keeps 2 x 416x312
    }

    fn smooth(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            Rgb([(255.0 * fx) as u8, (255.0 * fy) as u8, (128.0 + 100.0 * (6.0 * fx + 4.0 * fy).sin()) as u8])
        })
    }

    fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(&x, &y)| f64::from(x.abs_diff(y))).sum::<f64>() / a.len() as f64
    }

    /// A JPEG twice the input decodes at half size, and letterboxes to nearly the tensor of
    /// the whole image resized (same geometry; pixels a DCT-domain reduction apart).
    #[test]
    fn large_jpegs_decode_reduced_to_nearly_the_same_input() {
        let bytes = jpeg(&smooth(900, 600), None);
        let d = decode_rgb_for_input(&bytes, DecodeLimits::default(), (416, 416), DecodeMode::Fast).unwrap();
        assert_eq!((d.width, d.height, d.reduction, d.image.dimensions()), (900, 600, 2, (450, 300)));
        let full = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
        let (reduced, a) = crate::letterbox::letterbox_reduced_le_bytes(&d.image, (900, 600), 416, 416, [114; 3]);
        let (whole, b) = crate::letterbox::letterbox_le_bytes(&full, 416, 416, [114; 3]);
        assert_eq!(a, b);
        let as_u8 = |t: &[u8]| -> Vec<u8> {
            t.chunks_exact(4).map(|c| (f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * 255.0).round() as u8).collect()
        };
        let diff = mean_abs_diff(&as_u8(&reduced), &as_u8(&whole));
        assert!(diff < 0.5, "mean |reduced - whole| = {diff}");
        // `full`, or `auto` (which keeps twice the letterboxed size), decode this one whole.
        for mode in [DecodeMode::Full, DecodeMode::Auto] {
            let d = decode_rgb_for_input(&bytes, DecodeLimits::default(), (416, 416), mode).unwrap();
            assert_eq!(d, Decoded::whole(full.clone()), "{mode:?}");
        }
        let big = jpeg(&smooth(1700, 1000), None);
        let d = decode_rgb_for_input(&big, DecodeLimits::default(), (416, 416), DecodeMode::Auto).unwrap();
        assert_eq!((d.reduction, d.image.dimensions()), (2, (850, 500)));
        // A small image decodes whole, as decode_rgb gives it.
        let small = jpeg(&smooth(500, 300), None);
        let d = decode_rgb_for_input(&small, DecodeLimits::default(), (416, 416), DecodeMode::Fast).unwrap();
        assert_eq!(d, Decoded::whole(decode_rgb(&small, DecodeLimits::default()).unwrap()));
    }

    /// EXIF orientation 6 on a reduced decode: the upright size is reported, the reduced
    /// pixels are turned the same way.
    #[test]
    fn reduced_jpegs_are_turned_upright() {
        let bytes = jpeg(&smooth(1000, 420), Some(orientation_6()));
        let d = decode_rgb_for_input(&bytes, DecodeLimits::default(), (200, 200), DecodeMode::Fast).unwrap();
        assert_eq!((d.width, d.height), (420, 1000));
        assert_eq!(d.reduction, 4);
        assert_eq!(d.image.dimensions(), (105, 250));
        let whole = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
        let shrunk = image::imageops::resize(&whole, 105, 250, image::imageops::FilterType::Triangle);
        let diff = mean_abs_diff(d.image.as_raw(), shrunk.as_raw());
        assert!(diff < 1.0, "mean |reduced - whole shrunk| = {diff}");
    }

    /// A broken large JPEG is refused as a whole one is.
    #[test]
    fn truncated_large_jpegs_are_refused() {
        let bytes = jpeg(&smooth(900, 600), None);
        let e = decode_rgb_for_input(&bytes[..bytes.len() / 2], DecodeLimits::default(), (416, 416), DecodeMode::Fast)
            .unwrap_err();
        assert_eq!(e.status(), 422, "{e}");
        let few = DecodeLimits { max_side: 16_384, max_pixels: 100_000 };
        assert_eq!(decode_rgb_for_input(&bytes, few, (416, 416), DecodeMode::Fast).unwrap_err().status(), 413);
    }

    #[test]
    fn rgba_loses_alpha() {
        let img = RgbaImage::from_pixel(2, 2, image::Rgba([10, 20, 30, 0]));
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(img.as_raw(), 2, 2, image::ExtendedColorType::Rgba8)
            .unwrap();
        let back = decode_rgb(&out, DecodeLimits::default()).unwrap();
        assert_eq!(back.get_pixel(1, 1), &Rgb([10, 20, 30]));
    }

    #[test]
    fn refuses_garbage_truncation_and_other_formats() {
        let e = decode_rgb(b"hello, I am text", DecodeLimits::default()).unwrap_err();
        assert_eq!(e.status(), 422);
        let img = RgbImage::from_pixel(64, 64, Rgb([1, 2, 3]));
        let full = png(&img);
        let e = decode_rgb(&full[..full.len() / 2], DecodeLimits::default()).unwrap_err();
        assert_eq!(e.status(), 422, "{e}");
        let e = decode_rgb(b"GIF89a\x01\x00\x01\x00", DecodeLimits::default()).unwrap_err();
        assert_eq!(e.status(), 422);
        assert!(e.message.contains("Gif"), "{}", e.message);
    }

    #[test]
    fn truncated_jpegs_are_caught() {
        let img = RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8 * 4, y as u8 * 5, 90]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .write_image(img.as_raw(), 64, 48, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert!(jpeg_is_complete(&jpeg));
        let mut with_trailer = jpeg.clone();
        with_trailer.extend_from_slice(b"camera trailer bytes");
        assert!(jpeg_is_complete(&with_trailer), "data after EOI is fine");
        for cut in [jpeg.len() - 2, jpeg.len() / 2, 30, 3] {
            assert!(!jpeg_is_complete(&jpeg[..cut]), "cut at {cut}");
            assert_eq!(decode_rgb(&jpeg[..cut], DecodeLimits::default()).unwrap_err().status(), 422);
        }
    }

    #[test]
    fn refuses_oversized_images_before_decoding() {
        let img = RgbImage::from_pixel(300, 200, Rgb([9, 9, 9]));
        let bytes = png(&img);
        let small = DecodeLimits { max_side: 250, max_pixels: 1_000_000 };
        assert_eq!(decode_rgb(&bytes, small).unwrap_err().status(), 413);
        let few = DecodeLimits { max_side: 1000, max_pixels: 50_000 };
        assert_eq!(decode_rgb(&bytes, few).unwrap_err().status(), 413);
    }
}
