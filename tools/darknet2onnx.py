#!/usr/bin/env python3
"""Convert a Darknet model (.cfg + .weights + .names) into a yolo-edge model directory.

The directory gets:
  model.onnx     ONNX (opset 13), input "images" [1, 3, H, W] RGB in [0, 1],
                 output "output" [1, N, 5 + C]: cx, cy, w, h in input pixels,
                 objectness and C class scores, all already decoded (sigmoid / exp),
                 which is the layout YOLOv5 exports also use ("yolov5").
  labels.txt     one class name per line.
  metadata.json  input size, tensor names, output layout, letterbox colour, provenance.

Only numpy and onnx are needed. Supported layers: convolutional (with or without batch
norm; linear, leaky, logistic, relu, mish activations), maxpool, upsample, route (with
groups), shortcut and yolo, which covers yolov3, yolov3-tiny and yolov4-tiny.

Darknet semantics reproduced here (from the Darknet reference implementation):
  * weights file: int32 major, minor, revision, then "seen" (int64 when major*10+minor >= 2),
    then per convolution [beta, gamma, mean, variance] (batch norm) or [bias], then kernels;
  * batch norm: y = gamma * (x - mean) / (sqrt(var) + 1e-6) + beta, folded into the kernel;
  * maxpool pads by size-1 in total, size-1 // 2 of it before (so a 2x2 stride-1 pool keeps
    the size and needs asymmetric padding);
  * yolo head: x = (sigmoid(tx) * s - (s - 1) / 2 + col) * stride, w = exp(tw) * anchor_w.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def parse_cfg(path: Path) -> list[dict]:
    """Parse a Darknet .cfg into a list of sections: {"type": str, key: value, ...}."""
    sections: list[dict] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"{path}: malformed section header {raw!r}")
            sections.append({"type": line[1:-1].strip()})
        elif "=" in line:
            if not sections:
                raise ValueError(f"{path}: option before any section: {raw!r}")
            key, value = line.split("=", 1)
            sections[-1][key.strip()] = value.strip()
        else:
            raise ValueError(f"{path}: cannot parse line {raw!r}")
    if not sections or sections[0]["type"] not in ("net", "network"):
        raise ValueError(f"{path}: the first section must be [net]")
    return sections


def ints(value: str) -> list[int]:
    return [int(v) for v in value.replace(" ", "").split(",") if v]


class WeightReader:
    """Sequential reader over the float32 payload of a .weights file."""

    def __init__(self, path: Path):
        raw = path.read_bytes()
        major, minor, revision = np.frombuffer(raw, dtype="<i4", count=3)
        seen_size = 8 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 4
        offset = 12 + seen_size
        self.version = f"{major}.{minor}.{revision}"
        self.data = np.frombuffer(raw, dtype="<f4", offset=offset)
        self.pos = 0

    def take(self, count: int) -> np.ndarray:
        if self.pos + count > self.data.size:
            raise ValueError(
                "the weights file is shorter than the cfg needs: cfg and weights do not match"
            )
        out = self.data[self.pos : self.pos + count].astype(np.float32)
        self.pos += count
        return out

    def remaining(self) -> int:
        return self.data.size - self.pos


class GraphBuilder:
    """Accumulates ONNX nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.counter = 0

    def name(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, hint: str, array: np.ndarray) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def activation(g: GraphBuilder, x: str, kind: str) -> str:
    if kind == "linear":
        return x
    if kind == "leaky":
        return g.op("LeakyRelu", [x], "leaky", alpha=0.1)
    if kind == "relu":
        return g.op("Relu", [x], "relu")
    if kind == "logistic":
        return g.op("Sigmoid", [x], "logistic")
    if kind == "mish":
        soft = g.op("Softplus", [x], "softplus")
        return g.op("Mul", [x, g.op("Tanh", [soft], "tanh")], "mish")
    raise ValueError(f"unsupported activation {kind!r}")


def convert(cfg: Path, weights: Path, log=print):
    sections = parse_cfg(cfg)
    net = sections[0]
    width, height = int(net.get("width", 416)), int(net.get("height", 416))
    channels = int(net.get("channels", 3))
    reader = WeightReader(weights)
    log(f"darknet weights version {reader.version}, {reader.data.size:,} floats")

    g = GraphBuilder()
    # Per layer: (tensor name, channels, height, width)
    outputs: list[tuple[str, int, int, int]] = []
    current = ("images", channels, height, width)
    heads: list[str] = []
    boxes = 0
    num_classes = None
    layers = sections[1:]

    for index, sec in enumerate(layers):
        kind = sec["type"]
        x, c, h, w = current
        if kind in ("convolutional", "conv"):
            filters = int(sec["filters"])
            size = int(sec.get("size", 1))
            stride = int(sec.get("stride", 1))
            groups = int(sec.get("groups", 1))
            pad = size // 2 if int(sec.get("pad", 0)) else int(sec.get("padding", 0))
            bn = int(sec.get("batch_normalize", 0))
            if bn:
                beta = reader.take(filters)
                gamma = reader.take(filters)
                mean = reader.take(filters)
                var = reader.take(filters)
            else:
                bias = reader.take(filters)
            kernel = reader.take(filters * (c // groups) * size * size).reshape(
                filters, c // groups, size, size
            )
            if bn:
                scale = gamma / (np.sqrt(var) + 1e-6)
                kernel = kernel * scale[:, None, None, None]
                bias = beta - mean * scale
            y = g.op(
                "Conv",
                [x, g.const("W", kernel), g.const("B", bias)],
                "conv",
                kernel_shape=[size, size],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=groups,
            )
            y = activation(g, y, sec.get("activation", "logistic"))
            oh = (h + 2 * pad - size) // stride + 1
            ow = (w + 2 * pad - size) // stride + 1
            current = (y, filters, oh, ow)
        elif kind == "maxpool":
            size = int(sec.get("size", 2))
            stride = int(sec.get("stride", size))
            pad = int(sec.get("padding", size - 1))
            oh = (h + pad - size) // stride + 1
            ow = (w + pad - size) // stride + 1
            begin = pad // 2
            end_h = max(0, (oh - 1) * stride + size - h - begin)
            end_w = max(0, (ow - 1) * stride + size - w - begin)
            y = g.op(
                "MaxPool",
                [x],
                "maxpool",
                kernel_shape=[size, size],
                strides=[stride, stride],
                pads=[begin, begin, end_h, end_w],
            )
            current = (y, c, oh, ow)
        elif kind == "upsample":
            stride = int(sec.get("stride", 2))
            scales = g.const("scales", np.array([1, 1, stride, stride], dtype=np.float32))
            y = g.op(
                "Resize",
                [x, "", scales],
                "upsample",
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
                nearest_mode="floor",
            )
            current = (y, c, h * stride, w * stride)
        elif kind == "route":
            refs = [r if r >= 0 else index + r for r in ints(sec["layers"])]
            parts = [outputs[r] for r in refs]
            groups = int(sec.get("groups", 1))
            group_id = int(sec.get("group_id", 0))
            if groups > 1:
                if len(parts) != 1:
                    raise ValueError("route with groups takes one layer")
                name, pc, ph, pw = parts[0]
                chunk = pc // groups
                starts = g.const("starts", np.array([group_id * chunk], dtype=np.int64))
                ends = g.const("ends", np.array([(group_id + 1) * chunk], dtype=np.int64))
                axes = g.const("axes", np.array([1], dtype=np.int64))
                y = g.op("Slice", [name, starts, ends, axes], "route_group")
                current = (y, chunk, ph, pw)
            elif len(parts) == 1:
                current = parts[0]
            else:
                if len({(p[2], p[3]) for p in parts}) != 1:
                    raise ValueError(f"route at layer {index} joins maps of different sizes")
                y = g.op("Concat", [p[0] for p in parts], "route", axis=1)
                current = (y, sum(p[1] for p in parts), parts[0][2], parts[0][3])
        elif kind == "shortcut":
            ref = int(sec["from"])
            other = outputs[ref if ref >= 0 else index + ref]
            y = g.op("Add", [x, other[0]], "shortcut")
            y = activation(g, y, sec.get("activation", "linear"))
            current = (y, c, h, w)
        elif kind == "yolo":
            mask = ints(sec["mask"])
            anchors = np.array(ints(sec["anchors"]), dtype=np.float32).reshape(-1, 2)[mask]
            classes = int(sec["classes"])
            if num_classes not in (None, classes):
                raise ValueError("yolo heads disagree on the number of classes")
            num_classes = classes
            scale_xy = float(sec.get("scale_x_y", 1.0))
            heads.append(yolo_head(g, x, len(mask), classes, h, w, width, height, anchors, scale_xy))
            boxes += len(mask) * h * w
        else:
            raise ValueError(f"unsupported layer type [{kind}] at layer {index}")
        outputs.append(current)
        log(f"  layer {index:3d} {kind:<14s} -> {current[1]:4d} x {current[2]:3d} x {current[3]:3d}")

    if not heads:
        raise ValueError("the cfg has no [yolo] layer")
    if reader.remaining() != 0:
        raise ValueError(
            f"{reader.remaining()} weights left over: cfg and weights do not match"
        )
    out = g.op("Concat", heads, "detections", axis=1) if len(heads) > 1 else heads[0]
    g.nodes.append(helper.make_node("Identity", [out], ["output"], name="output"))

    graph = helper.make_graph(
        g.nodes,
        "darknet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, channels, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, boxes, 5 + num_classes])],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="yolo-edge darknet2onnx"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, {"width": width, "height": height, "boxes": boxes, "classes": num_classes}


def yolo_head(g, x, anchors_n, classes, h, w, net_w, net_h, anchors, scale_xy) -> str:
    """Decode one [1, A*(5+C), H, W] head into [1, A*H*W, 5+C] boxes in input pixels."""
    attrs = 5 + classes
    shape = g.const("shape", np.array([1, anchors_n, attrs, h, w], dtype=np.int64))
    t = g.op("Reshape", [x, shape], "head_reshape")
    t = g.op("Transpose", [t], "head_transpose", perm=[0, 1, 3, 4, 2])  # [1, A, H, W, attrs]

    def part(start: int, end: int) -> str:
        starts = g.const("starts", np.array([start], dtype=np.int64))
        ends = g.const("ends", np.array([end], dtype=np.int64))
        axes = g.const("axes", np.array([4], dtype=np.int64))
        return g.op("Slice", [t, starts, ends, axes], "head_slice")

    cols, rows = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    grid = np.stack([cols, rows], axis=-1)[None, None]  # [1, 1, H, W, 2]
    stride = np.array([net_w / w, net_h / h], dtype=np.float32)

    xy = g.op("Sigmoid", [part(0, 2)], "xy_sigmoid")
    if scale_xy != 1.0:
        xy = g.op("Mul", [xy, g.const("scale_xy", np.float32(scale_xy))], "xy_scale")
        xy = g.op("Sub", [xy, g.const("xy_shift", np.float32((scale_xy - 1) / 2))], "xy_shift")
    xy = g.op("Add", [xy, g.const("grid", grid)], "xy_grid")
    xy = g.op("Mul", [xy, g.const("stride", stride)], "xy_pixels")

    wh = g.op("Exp", [part(2, 4)], "wh_exp")
    wh = g.op("Mul", [wh, g.const("anchors", anchors.reshape(1, anchors_n, 1, 1, 2))], "wh_pixels")

    scores = g.op("Sigmoid", [part(4, attrs)], "scores")
    t = g.op("Concat", [xy, wh, scores], "head_decoded", axis=4)
    flat = g.const("flat", np.array([1, anchors_n * h * w, attrs], dtype=np.int64))
    return g.op("Reshape", [t, flat], "head_flat")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--names", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--name", required=True, help="model name (the directory name under models/)")
    ap.add_argument("--source", default="", help="where the weights came from, for metadata")
    args = ap.parse_args()

    print(f"converting {args.cfg.name} + {args.weights.name} to ONNX", flush=True)
    try:
        model, shape = convert(args.cfg, args.weights, log=lambda m: print(m, flush=True))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    labels = [l.strip() for l in args.names.read_text().splitlines() if l.strip()]
    if len(labels) != shape["classes"]:
        print(
            f"error: {args.names} has {len(labels)} names but the model has {shape['classes']} classes",
            file=sys.stderr,
        )
        return 1

    args.out_dir.mkdir(parents=True, exist_ok=True)
    tmp = args.out_dir / "model.onnx.partial"
    onnx.save(model, str(tmp))
    tmp.replace(args.out_dir / "model.onnx")
    (args.out_dir / "labels.txt").write_text("\n".join(labels) + "\n")
    metadata = {
        "name": args.name,
        "format": "onnx",
        "input": {
            "name": "images",
            "width": shape["width"],
            "height": shape["height"],
            "layout": "NCHW",
            "color": "RGB",
            "scale": 1.0 / 255.0,
        },
        "output": {
            "name": "output",
            "layout": "yolov5",
            "boxes": shape["boxes"],
            "classes": shape["classes"],
        },
        "letterbox": {"color": [114, 114, 114], "resize": "bilinear"},
        "labels": "labels.txt",
        "source": {
            "description": args.source,
            "weights_sha256": sha256(args.weights),
            "converter": "tools/darknet2onnx.py",
        },
    }
    (args.out_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {args.out_dir}/model.onnx ({shape['boxes']} boxes x {5 + shape['classes']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
