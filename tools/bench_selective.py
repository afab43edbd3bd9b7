#!/usr/bin/env python3
"""What int8-selective's fallbacks cost in speed on this CPU: one model as float32, int8, int16x8 (16-bit
activations) and dynamic range (float activations, int8 weights), one sample per invoke in LiteRT (XNNPACK where it
takes the model), rounds interleaved so that load on a shared machine falls on every variant alike; medians and
ratios to int8.

    python tools/bench_selective.py [--size 32] [--threads 1,2] [--rounds 7] [--runs 50]

The model is keras.applications MobileNetV2 (alpha 0.35, weights=None) trained one epoch on sklearn's digits
upscaled to RGB (an untrained one has ranges int16x8 cannot represent), calibrated on them.  Nothing is
downloaded."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES = ("float32", "int8", "int16x8", "dynamic")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    import zoo
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    from edgekit.validate import _interpreter
    keras.utils.set_random_seed(0)
    model = zoo.train(zoo.application("MobileNetV2", args.size), args.size, epochs=1)
    (x, _y), _ = zoo.digits_rgb(args.size)
    x = x[:200]
    flat = {m: convert(model, m, "float32", Dataset(x, None, "random")) for m in MODES}
    print(f"MobileNetV2 alpha 0.35, {args.size}x{args.size}: median ms per invoke over {args.rounds} interleaved "
          f"rounds of {args.runs}")
    print(f"{'threads':>7}  " + "  ".join(f"{m:>14}" for m in MODES))
    for threads in (int(t) for t in args.threads.split(",")):
        runners = {}
        for m, b in flat.items():
            it = _interpreter(b, threads=threads)
            it.allocate_tensors()
            runners[m] = it
        times: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.rounds):
            for m, it in runners.items():
                idx = it.get_input_details()[0]["index"]
                it.set_tensor(idx, x[:1])
                it.invoke()  # warm
                t0 = time.perf_counter()
                for _ in range(args.runs):
                    it.set_tensor(idx, x[:1])
                    it.invoke()
                times[m].append((time.perf_counter() - t0) / args.runs * 1000.0)
        med = {m: float(np.median(v)) for m, v in times.items()}
        print(f"{threads:>7}  " + "  ".join(f"{med[m]:7.3f} ({med[m] / med['int8']:4.1f}x)" for m in MODES))
    print("bytes    " + "  ".join(f"{len(flat[m]):>14,}" for m in MODES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
