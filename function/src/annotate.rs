//! `annotate=png|jpeg`: the image with each detection drawn on it (a box in its class's
//! colour, a label with the class name and confidence), encoded as PNG or JPEG.
//!
//! Drawing uses `imageproc` (the image crate's companion for drawing) and `ab_glyph` for the
//! text; the font is DejaVu Sans from the `matplotlib` wheel on PyPI, which set-up extracts
//! into `.cache/fonts/` before this crate is built (it is compiled into the component).

use std::io::Cursor;

use ab_glyph::{FontRef, PxScale};
use image::{ImageFormat, Rgb, RgbImage};
use yolo_core::options::Annotate;
use yolo_core::response::Detection;
use yolo_core::{ApiError, ErrorCode};

static FONT: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../.cache/fonts/DejaVuSans.ttf"));

/// A distinct, saturated colour per class (golden-angle hues).
fn colour(class_id: u32) -> Rgb<u8> {
    let hue = (class_id as f32 * 137.508) % 360.0;
    let (s, v) = (0.85f32, 0.95f32);
    let c = v * s;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    Rgb([((r + m) * 255.0) as u8, ((g + m) * 255.0) as u8, ((b + m) * 255.0) as u8])
}

/// Black or white, whichever reads better on `background`.
fn ink(background: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = background.0;
    let luma = 0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b);
    if luma > 140.0 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) }
}

/// Draw `detections` on `image` and encode it.
pub fn render(mut image: RgbImage, detections: &[Detection], format: Annotate) -> Result<Vec<u8>, ApiError> {
    let font = FontRef::try_from_slice(FONT)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("the embedded font does not load: {e}")))?;
    let (w, h) = image.dimensions();
    let side = w.max(h) as f32;
    let thickness = (side / 300.0).round().max(2.0) as i32;
    let scale = PxScale::from((side / 40.0).clamp(12.0, 48.0));
    for d in detections {
        let c = colour(d.class_id);
        let [x1, y1, x2, y2] = d.bbox.map(|v| v.round() as i32);
        for t in 0..thickness {
            let (left, top) = (x1 + t, y1 + t);
            let (width, height) = ((x2 - x1 - 2 * t).max(1) as u32, (y2 - y1 - 2 * t).max(1) as u32);
            imageproc::drawing::draw_hollow_rect_mut(
                &mut image,
                imageproc::rect::Rect::at(left, top).of_size(width, height),
                c,
            );
        }
        let label = format!("{} {:.2}", d.class_name, d.confidence);
        let (tw, th) = imageproc::drawing::text_size(scale, &font, &label);
        let pad = (th / 4).max(2) as i32;
        let box_h = th as i32 + 2 * pad;
        // Above the box when there is room, else inside its top edge.
        let top = if y1 - box_h >= 0 { y1 - box_h } else { y1.max(0) };
        let left = x1.clamp(0, (w as i32 - tw as i32 - 2 * pad).max(0));
        imageproc::drawing::draw_filled_rect_mut(
            &mut image,
            imageproc::rect::Rect::at(left, top).of_size(tw + 2 * pad as u32, box_h as u32),
            c,
        );
        imageproc::drawing::draw_text_mut(&mut image, ink(c), left + pad, top + pad, scale, &font, &label);
    }
    let mut out = Cursor::new(Vec::new());
    let encoded = match format {
        Annotate::Png => image.write_to(&mut out, ImageFormat::Png),
        Annotate::Jpeg => image.write_to(&mut out, ImageFormat::Jpeg),
    };
    encoded.map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot encode the annotated image: {e}")))?;
    Ok(out.into_inner())
}
