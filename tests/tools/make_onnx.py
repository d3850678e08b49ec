#!/usr/bin/env python3
"""Build tiny ONNX graphs for the `yolo-edge models import` tests (numpy + onnx only).

Each graph takes an image tensor `images` [1, 3, H, W] and answers a constant "prediction"
that still depends on the input (`out = prediction + 0 * mean(images)`, so ONNX Runtime
cannot fold the input away). The prediction holds one confident box, of class 1, centred in
the input; every other box is background. Layouts:

  yolov5    output [1, N, 5 + C]: cx, cy, w, h, objectness, C class scores
  yolov8    output [1, 4 + C, N]: cx, cy, w, h, C class scores (no objectness)
  classify  output [1, 1000]: not a detection model

Ultralytics exports put `names`, `imgsz`, `stride` and `task` in the model's
metadata_props; `--ultralytics` writes them the same way (names as a Python dict literal).
`--dynamic` makes the batch, height and width symbolic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The box every detection layout answers, in input pixels (relative to the input size).
BOX = (0.5, 0.5, 0.25, 0.25)
OBJECTNESS = 0.9
CLASS_SCORE = 0.8
DETECTED_CLASS = 1


def prediction(layout: str, classes: int, size: int) -> np.ndarray:
    """The constant prediction: one box of class DETECTED_CLASS, the rest background."""
    # As many boxes as a stride 8/16/32 model of this size (times 3 anchors for YOLOv5).
    cells = sum((size // s) ** 2 for s in (8, 16, 32))
    if layout == "classify":
        return np.full((1, 1000), 0.001, dtype=np.float32)
    boxes = cells * 3 if layout == "yolov5" else cells
    cx, cy, w, h = (v * size for v in BOX)
    if layout == "yolov5":
        p = np.zeros((1, boxes, 5 + classes), dtype=np.float32)
        p[0, :, 0:4] = (size / 2, size / 2, 4.0, 4.0)
        p[0, :, 4] = 0.01
        p[0, :, 5:] = 0.01
        p[0, 7, 0:5] = (cx, cy, w, h, OBJECTNESS)
        p[0, 7, 5 + DETECTED_CLASS] = CLASS_SCORE
    else:
        p = np.zeros((1, 4 + classes, boxes), dtype=np.float32)
        p[0, 0:4, :] = np.array([[size / 2], [size / 2], [4.0], [4.0]])
        p[0, 4:, :] = 0.001
        p[0, 0:4, 7] = (cx, cy, w, h)
        p[0, 4 + DETECTED_CLASS, 7] = OBJECTNESS * CLASS_SCORE
    return p


def build(layout: str, classes: int, size: int, dynamic: bool) -> onnx.ModelProto:
    pred = prediction(layout, classes, size)
    dims = ["batch", 3, "height", "width"] if dynamic else [1, 3, size, size]
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)
    out_dims = list(pred.shape)
    if dynamic and layout != "classify":
        out_dims[1 if layout == "yolov5" else 2] = "anchors"
    output = helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_dims)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["prediction", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        f"tiny-{layout}",
        [images],
        [output],
        initializer=[
            numpy_helper.from_array(pred, "prediction"),
            numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="make_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layout", choices=["yolov5", "yolov8", "classify"], required=True)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--size", type=int, default=64, help="input height and width")
    ap.add_argument("--dynamic", action="store_true", help="symbolic batch, height and width")
    ap.add_argument("--ultralytics", action="store_true", help="names, imgsz, stride, task metadata")
    ap.add_argument("--task", default=None, help="the task metadata (default: detect, classify for classify)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model = build(args.layout, args.classes, args.size, args.dynamic)
    if args.ultralytics:
        task = args.task or ("classify" if args.layout == "classify" else "detect")
        names = {i: chr(ord("a") + i) for i in range(args.classes)}
        for key, value in {
            "description": "tiny test model",
            "author": "yolo-edge tests",
            "task": task,
            "stride": "32",
            "batch": "1",
            "imgsz": f"[{args.size}, {args.size}]",
            "names": repr(names),
        }.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, args.out)


if __name__ == "__main__":
    main()
