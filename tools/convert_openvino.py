#!/usr/bin/env python3
"""Produce a model's OpenVINO IR (model.xml + model.bin) from its model.onnx.

Weights stay in f32 (no compression): the precision used at run time is the CPU plugin's
choice (bf16 where the CPU has AVX512-BF16) unless the host asks for f32. Idempotent: does
nothing when the IR is newer than the ONNX file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    args = ap.parse_args()
    onnx_path = args.model_dir / "model.onnx"
    xml, bin_ = args.model_dir / "model.xml", args.model_dir / "model.bin"
    if xml.is_file() and bin_.is_file() and xml.stat().st_mtime >= onnx_path.stat().st_mtime:
        print(f"OpenVINO IR in {args.model_dir} is up to date")
        return 0
    import openvino as ov

    print(f"converting {onnx_path} to OpenVINO IR (OpenVINO {ov.get_version()})", flush=True)
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml), compress_to_fp16=False)
    print(f"wrote {xml} and {bin_}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
