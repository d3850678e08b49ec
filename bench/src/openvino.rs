//! The OpenVINO backend, one client: the bare pipeline on OpenVINO and yolo-edge
//! `--backend openvino`, request by request.

use yolo_edge_tests::Host;

use crate::bare;
use crate::common::{IMAGES, Settings, ms, step, target};
use crate::one_client::interleaved;
use crate::servers::model_dir;
use crate::stats::{Summary, summarize};

/// The OpenVINO latencies on [`IMAGES`]`[0]`.
pub struct OpenVino {
    /// The bare pipeline on OpenVINO.
    pub bare: Summary,
    /// Its inference.
    pub bare_nn: Summary,
    /// yolo-edge `--backend openvino`, client-observed.
    pub host: Summary,
    /// yolo-edge's first answer on OpenVINO (its detections are paired with ONNX Runtime's).
    pub first_body: String,
}

/// Measure [`OpenVino`]; stops `ov_host` when done.
pub fn openvino(cfg: &Settings, cores: usize, agent: &ureq::Agent, ov_host: Host) -> anyhow::Result<OpenVino> {
    step("OpenVINO: bare pipeline and yolo-edge --backend openvino, interleaved");
    let ov_t = target(ov_host.url("/detect"), Some(&ov_host.key), &IMAGES[0]);
    // The host's configuration: a latency compilation on every core, one stream per core.
    let bare_ov = bare::Bare::load_openvino(&model_dir(), cores, cores)?;
    let ov = interleaved(cfg.reps, &bare_ov, &IMAGES[0], agent, &ov_t, None)?;
    anyhow::ensure!(ov.answers.iter().all(|a| a.status == 200), "OpenVINO host failed: {}", ov.answers[0].body);
    let measured = OpenVino {
        bare: summarize(&ov.bare),
        bare_nn: summarize(&ov.bare_nn),
        host: ms(&ov.answers),
        first_body: ov.answers[0].body.clone(),
    };
    drop(bare_ov);
    drop(ov_host);
    Ok(measured)
}
