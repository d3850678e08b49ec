//! Time the guest's image stages on one image, natively or compiled for the guest:
//!
//! ```text
//! cargo run --release -p yolo-core --example stages -- tests/data/large.jpg
//! cargo build --profile wasm --target wasm32-wasip2 -p yolo-core --example stages
//! cargo build --release -p yolo-edge --example wasi_run
//! target/release/examples/wasi_run target/wasm32-wasip2/wasm/examples/stages.wasm tests/data/large.jpg
//! ```
//!
//! Without more arguments it prints the median time of every stage. `stages IMAGE STAGE RUNS`
//! runs one stage `RUNS` times and nothing else: under `WASI_RUN_FUEL=1` the fuel of
//! `RUNS = n + 1` minus that of `RUNS = 1`, over `n`, is the stage's exact cost per call
//! (instruction counts do not care how busy the machine is). It also prints a checksum of the
//! input tensor, so that a faster letterbox can be checked to give the same bytes. Timings of
//! the whole service are `cargo xtask bench`'s.

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine as _;
use image::RgbImage;
use yolo_core::decode::{DecodeLimits, decode_rgb, jpeg_is_complete, sniff_format};
use yolo_core::letterbox::{Letterbox, letterbox_le_bytes};
use yolo_core::request::parse_detect_request;
use yolo_core::resize::resize_bilinear;

const RUNS: usize = 21;
const SIDE: u32 = 416;
const PAD: [u8; 3] = [114, 114, 114];

/// The input of every stage, prepared once.
struct Input {
    bytes: Vec<u8>,
    json: Vec<u8>,
    image: RgbImage,
    geometry: Letterbox,
}

/// A stage: its name and one call.
type Stage = (&'static str, fn(&Input));

/// The stages, in pipeline order.
const STAGES: [Stage; 12] = [
    ("json+base64 body", |i| drop(black_box(parse_detect_request(Some("application/json"), "", &i.json)))),
    ("raw body", |i| drop(black_box(parse_detect_request(None, "", &i.bytes)))),
    ("sniff + jpeg check", |i| {
        black_box((sniff_format(&i.bytes), jpeg_is_complete(&i.bytes)));
    }),
    ("decode (all)", |i| drop(black_box(decode_rgb(&i.bytes, DecodeLimits::default())))),
    ("image: header probe", |i| {
        let mut r = image::ImageReader::new(std::io::Cursor::new(&i.bytes[..])).with_guessed_format().unwrap();
        r.no_limits();
        black_box(r.into_dimensions().ok());
    }),
    ("zune: headers", |i| {
        let mut d = zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(&i.bytes[..]));
        black_box(d.decode_headers().ok());
    }),
    ("zune: to RGB", |i| drop(black_box(zune(&i.bytes, zune_core::colorspace::ColorSpace::RGB)))),
    ("zune: to YCbCr", |i| drop(black_box(zune(&i.bytes, zune_core::colorspace::ColorSpace::YCbCr)))),
    ("resize", |i| drop(black_box(resize_bilinear(&i.image, i.geometry.width, i.geometry.height)))),
    ("resize (horizontal only)", |i| drop(black_box(resize_bilinear(&i.image, i.geometry.width, i.image.height())))),
    ("resize (vertical only)", |i| drop(black_box(resize_bilinear(&i.image, i.image.width(), i.geometry.height)))),
    ("letterbox (all)", |i| drop(black_box(letterbox_le_bytes(&i.image, SIDE, SIDE, PAD)))),
];

fn zune(bytes: &[u8], to: zune_core::colorspace::ColorSpace) -> Option<Vec<u8>> {
    let options = zune_core::options::DecoderOptions::default().jpeg_set_out_colorspace(to);
    zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), options).decode().ok()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: stages IMAGE [STAGE RUNS]");
        std::process::exit(2);
    };
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let json = format!(r#"{{"image":"{}"}}"#, base64::engine::general_purpose::STANDARD.encode(&bytes)).into_bytes();
    let image = decode_rgb(&bytes, DecodeLimits::default()).expect("the image decodes");
    let geometry = Letterbox::fit(image.width(), image.height(), SIDE, SIDE);
    let input = Input { bytes, json, image, geometry };

    if let [_, stage, runs] = &args[..] {
        let (_, call) = STAGES.iter().find(|(name, _)| name == stage).unwrap_or_else(|| {
            panic!("no stage {stage:?}; the stages are {:?}", STAGES.map(|(name, _)| name));
        });
        for _ in 0..runs.parse::<usize>().expect("RUNS is a number") {
            call(&input);
        }
        return;
    }

    let (tensor, _) = letterbox_le_bytes(&input.image, SIDE, SIDE, PAD);
    let checksum = tensor.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    println!("{path}: {}x{}, tensor FNV-1a {checksum:016x}", input.image.width(), input.image.height());
    for (name, call) in STAGES {
        let p50 = median(
            (0..RUNS)
                .map(|_| {
                    let start = Instant::now();
                    call(&input);
                    start.elapsed()
                })
                .collect(),
        );
        println!("  {name:<26} p50 {:>8.3} ms", p50.as_secs_f64() * 1000.0);
    }
}
