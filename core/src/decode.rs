//! Decoding PNG, JPEG and WebP bytes into an RGB image (the `image` crate; colour JPEGs
//! straight through `zune-jpeg`, the decoder the `image` crate itself uses), with EXIF
//! orientation applied and a size limit checked before any pixel is allocated.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;
use zune_jpeg::errors::DecodeErrors;

use crate::error::{ApiError, ErrorCode};

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

/// Decode an image to 8-bit RGB (alpha dropped, grey expanded, 16-bit scaled down, as
/// Pillow's `convert("RGB")` does), with its EXIF orientation applied.
pub fn decode_rgb(bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage, ApiError> {
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
        && let Some(rgb) = decode_rgb_jpeg(bytes, limits)?
    {
        return Ok(rgb);
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
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.into_rgb8(),
    })
}

/// A JPEG whose output is RGB (YCbCr, RGB, CMYK and YCCK ones) decoded by `zune-jpeg`
/// directly, with the options the `image` crate would give it, so the same pixels: this skips
/// the `image` crate's copy of the input and its three header parses (≈ 5 M Wasm
/// instructions for a 1280×720 photograph). `None` for grey or alpha JPEGs, which take the
/// `image` crate's path and its conversion to RGB.
fn decode_rgb_jpeg(bytes: &[u8], limits: DecodeLimits) -> Result<Option<RgbImage>, ApiError> {
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
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    decoder.decode_into(&mut pixels).map_err(|e| map_jpeg_error(e, limits))?;
    let rgb = RgbImage::from_raw(w, h, pixels).expect("the buffer is w × h × 3 bytes");
    Ok(Some(if orientation == Orientation::NoTransforms {
        rgb
    } else {
        let mut img = DynamicImage::ImageRgb8(rgb);
        img.apply_orientation(orientation);
        img.into_rgb8()
    }))
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

    /// EXIF orientation 6 (rotate 90° clockwise) is applied; a 10×4 JPEG comes out 4×10.
    #[test]
    fn jpeg_exif_orientation_is_applied() {
        // Little-endian TIFF header, one IFD entry: Orientation (0x0112), SHORT, 1 value: 6.
        let exif = [
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
        .concat();
        let bytes = jpeg(&photo(10, 4), Some(exif));
        let ours = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
        let upright = image::load_from_memory(&bytes).unwrap().into_rgb8();
        assert_eq!(ours.dimensions(), (4, 10));
        assert_eq!(ours, image::imageops::rotate90(&upright));
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
