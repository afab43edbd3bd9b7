#!/usr/bin/env python3
"""How int8 convolution latency on this machine steps with the channel count (the kernel's channel tile).

    python tools/bench_channels.py [--size 32] [--runs 300] [--rounds 5]

Converts one 3x3 convolution (int8, XNNPACK, 1 thread) at several output and input channel counts and prints
the median latency of interleaved rounds next to the tile `edgekit` assumes for this CPU (`channel_multiple: auto`
in the `local` profile).  Flat stretches between multiples of the tile are why filter pruning rounds to it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def conv_model(size: int, cin: int, cout: int):
    from edgekit._tf import keras
    inp = keras.Input((size, size, cin))
    return keras.Model(inp, keras.layers.Conv2D(cout, 3, padding="same")(inp))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32, help="input height and width")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter
    from edgekit.compress.kernels import host_channel_multiple
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    from edgekit.report_text import table
    tile = host_channel_multiple()
    rng = np.random.default_rng(0)
    cases = [("out", 64, c) for c in (8, 16, 24, 32, 48, 64, 72, 96, 128, 136, 192, 256)]
    cases += [("in", c, 64) for c in (8, 16, 32, 64, 72, 128, 192, 256)]
    interpreters = {}
    for case in cases:
        _, cin, cout = case
        cal = Dataset(rng.random((16, args.size, args.size, cin), dtype=np.float32), np.zeros(16, np.int64), "random")
        it = Interpreter(model_content=convert(conv_model(args.size, cin, cout), "int8", "int8", cal), num_threads=1)
        it.allocate_tensors()
        interpreters[case] = it
    samples: dict = {c: [] for c in cases}
    for _ in range(args.rounds):  # interleaved: this machine is shared and noisy
        for case, it in interpreters.items():
            for _ in range(30):
                it.invoke()
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                it.invoke()
                times.append(time.perf_counter() - t0)
            samples[case].append(float(np.median(times)) * 1e3)
    rows = []
    for (which, cin, cout) in cases:
        ms = float(np.median(samples[(which, cin, cout)]))
        macs = args.size * args.size * 9 * cin * cout
        rows.append([which, str(cin), str(cout), f"{macs / 1e6:.1f}M", f"{ms:.4f}", f"{macs / ms / 1e6:.1f}"])
    print(table(["varied", "in ch", "out ch", "MACs", "p50 ms", "GMAC/s"], rows, "lrrrrr"))
    print(f"\n{args.size}x{args.size} input, 3x3 conv, int8, XNNPACK, 1 thread; median of {args.rounds} interleaved "
          f"rounds x {args.runs} runs")
    print(f"edgekit's channel_multiple for this CPU: {tile}")


if __name__ == "__main__":
    main()
