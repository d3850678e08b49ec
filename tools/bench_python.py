#!/usr/bin/env python3
"""The Python baseline of `cargo xtask bench`: what a user would write instead of yolo-edge.

Pillow decodes and letterboxes, the `onnxruntime` package infers (default session
options), numpy decodes the output and runs NMS: the same pipeline as
tests/reference/reference.py, whose functions it reuses.

  bench_python.py inprocess --model-dir DIR --reps N IMAGE...   JSON latencies (ms) per image
  bench_python.py worker --model-dir DIR                         for each image path read from stdin,
                                                                 one detection; prints its ms (so the
                                                                 benchmark can interleave it)
  bench_python.py threads --model-dir DIR --threads N --seconds S IMAGE
                                                                 N threads calling the pipeline back
                                                                 to back: JSON {"rps", "failed"}
  bench_python.py serve --model-dir DIR                          a ThreadingHTTPServer on a free
                                                                 port: POST /detect (raw image)
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reference"))
import reference  # noqa: E402


def load(model_dir: Path):
    meta = json.loads((model_dir / "metadata.json").read_text())
    labels = (model_dir / meta.get("labels", "labels.txt")).read_text().splitlines()
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return session, meta, labels


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["inprocess", "worker", "threads", "serve"])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("images", nargs="*", type=Path)
    args = ap.parse_intermixed_args()
    session, meta, labels = load(args.model_dir)

    if args.mode == "inprocess":
        out = {}
        for image in args.images:
            times = []
            for i in range(args.reps + 2):
                t = time.perf_counter()
                reference.detect(session, meta, labels, image, 0.25, 0.45, 100, None)
                if i >= 2:  # two warm-up runs
                    times.append((time.perf_counter() - t) * 1000)
            out[image.name] = times
        json.dump(out, sys.stdout)
        return 0

    if args.mode == "worker":
        print("ready", flush=True)
        for line in sys.stdin:
            data = Path(line.strip()).read_bytes()
            t = time.perf_counter()
            reference.detect(session, meta, labels, io.BytesIO(data), 0.25, 0.45, 100, None)
            print(f"{(time.perf_counter() - t) * 1000}", flush=True)
        return 0

    if args.mode == "threads":
        data = args.images[0].read_bytes()
        reference.detect(session, meta, labels, io.BytesIO(data), 0.25, 0.45, 100, None)  # warm-up
        done, failed, stop = [0], [0], threading.Event()
        lock = threading.Lock()

        def loop():
            while not stop.is_set():
                try:
                    reference.detect(session, meta, labels, io.BytesIO(data), 0.25, 0.45, 100, None)
                    ok = True
                except Exception:  # counted, like a failed HTTP answer
                    ok = False
                with lock:
                    (done if ok else failed)[0] += 1

        workers = [threading.Thread(target=loop) for _ in range(args.threads)]
        started = time.perf_counter()
        for w in workers:
            w.start()
        time.sleep(args.seconds)
        stop.set()
        for w in workers:
            w.join()
        json.dump({"rps": done[0] / (time.perf_counter() - started), "failed": failed[0]}, sys.stdout)
        return 0

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                result = reference.detect(session, meta, labels, io.BytesIO(body), 0.25, 0.45, 100, None)
                payload, status = json.dumps(result).encode(), 200
            except Exception as e:  # the baseline answers errors too
                payload, status = json.dumps({"error": str(e)}).encode(), 422
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
