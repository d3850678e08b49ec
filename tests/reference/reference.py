#!/usr/bin/env python3
"""Independent reference detector for the end-to-end tests.

Written separately from the Rust pipeline, with the tools a Python user would reach for:
Pillow for decoding and letterboxing, the `onnxruntime` package for inference, numpy for
decoding the output and class-wise NMS. The tests compare the host's answers with this
script's, box for box.

Usage: reference.py --model-dir models/yolov3-tiny [--conf 0.25] [--iou 0.45]
                    [--max-det 100] [--classes 0,2] IMAGE...
Prints one JSON object: {"<image path>": {"image": {...}, "detections": [...]}, ...}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def letterbox(img: Image.Image, width: int, height: int, color) -> tuple[np.ndarray, float, int, int]:
    """Resize keeping aspect ratio with Pillow BILINEAR, centre on `color`, return NCHW in [0, 1]."""
    w, h = img.size
    r = min(width / w, height / h)
    nw = max(1, min(width, math.floor(w * r + 0.5)))
    nh = max(1, min(height, math.floor(h * r + 0.5)))
    left, top = (width - nw) // 2, (height - nh) // 2
    canvas = Image.new("RGB", (width, height), tuple(color))
    canvas.paste(img.resize((nw, nh), Image.Resampling.BILINEAR), (left, top))
    x = np.asarray(canvas, dtype=np.float32) / 255.0
    return x.transpose(2, 0, 1)[None], r, left, top


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area(box) + area(others) - inter + 1e-9)


def detect(session, meta, labels, path: Path, conf: float, iou_thr: float, max_det: int, classes):
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    inp, out = meta["input"], meta["output"]
    x, r, left, top = letterbox(img, inp["width"], inp["height"], meta["letterbox"]["color"])
    pred = session.run([out["name"]], {inp["name"]: x})[0][0]
    if out["layout"] == "yolov8":  # [4 + C, N]: no objectness
        pred = pred.T
        scores_all = pred[:, 4:]
    elif out["layout"] == "yolov5":  # [N, 5 + C]
        scores_all = pred[:, 5:] * pred[:, 4:5]
    else:
        raise SystemExit(f"unknown output layout {out['layout']}")
    cls = scores_all.argmax(axis=1)
    score = scores_all[np.arange(len(cls)), cls]
    keep = score > conf
    if classes is not None:
        keep &= np.isin(cls, classes)
    boxes = pred[keep, :4]
    cls, score = cls[keep], score[keep]
    xyxy = np.stack(
        [boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2,
         boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2], axis=1)
    order = np.argsort(-score, kind="stable")
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if cls[k] == cls[i]]
        if same and (iou(xyxy[i], xyxy[same]) > iou_thr).any():
            continue
        kept.append(i)
        if len(kept) == max_det:
            break
    w, h = img.size
    detections = []
    for i in kept:
        x1, y1, x2, y2 = xyxy[i]
        bbox = [
            float(np.clip((x1 - left) / r, 0, w)), float(np.clip((y1 - top) / r, 0, h)),
            float(np.clip((x2 - left) / r, 0, w)), float(np.clip((y2 - top) / r, 0, h)),
        ]
        detections.append({
            "class_id": int(cls[i]), "class_name": labels[int(cls[i])],
            "confidence": float(score[i]), "bbox": bbox,
        })
    return {"image": {"width": w, "height": h}, "detections": detections}


def main() -> int:
    ap = argparse.ArgumentParser(description="Pillow + onnxruntime reference detector")
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--max-det", type=int, default=100)
    ap.add_argument("--classes", default=None, help="comma-separated class ids")
    ap.add_argument("images", nargs="+", type=Path)
    args = ap.parse_args()

    meta = json.loads((args.model_dir / "metadata.json").read_text())
    labels = (args.model_dir / meta.get("labels", "labels.txt")).read_text().splitlines()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(args.model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    result = {
        str(p): detect(session, meta, labels, p, args.conf, args.iou, args.max_det, classes)
        for p in args.images
    }
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
