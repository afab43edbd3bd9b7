#!/usr/bin/env python3
"""How int8 convolution latency steps with the channel count on a board (the kernel's channel tile).

    python tools/bench_channels.py [--board local] [--boards boards.yaml] [--size 32] [--runs 300] [--rounds 5]

Converts one 3x3 convolution (int8) at several output and input channel counts, measures them with `edgekit
profile`'s machinery on the board (XNNPACK, 1 thread; `local` by default, or any board of boards.yaml), and prints
the median p50 of interleaved rounds.  Flat stretches between multiples of the tile are why filter pruning keeps
channel counts at the device profile's `channel_multiple`; this is how to check that value on a real board.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OUT = (8, 16, 24, 32, 48, 64, 72, 96, 128, 136, 192, 256)
IN = (8, 16, 32, 64, 72, 128, 192, 256)


def conv_model(size: int, cin: int, cout: int):
    from edgekit._tf import keras
    inp = keras.Input((size, size, cin))
    return keras.Model(inp, keras.layers.Conv2D(cout, 3, padding="same")(inp))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="local", help="board name from --boards, or 'local'")
    ap.add_argument("--boards", help="board inventory (default ./boards.yaml)")
    ap.add_argument("--size", type=int, default=32, help="input height and width")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from edgekit.compress.kernels import host_channel_multiple, resolve
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    from edgekit.profiles import load_profile
    from edgekit.profiling.jobs import Settings, build_jobs, model_ref
    from edgekit.profiling.scheduler import Options, run_profile
    from edgekit.remote.inventory import select_boards
    from edgekit.report_text import table
    board = select_boards([args.board], False, args.boards)[0]
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-channels-"))
    rng = np.random.default_rng(0)
    cases = [("out", 64, c) for c in OUT] + [("in", c, 64) for c in IN]
    refs = {}
    for _which, cin, cout in cases:
        path = work / f"conv_{cin}_{cout}.tflite"
        if not path.exists():
            cal = Dataset(rng.random((16, args.size, args.size, cin), dtype=np.float32), None, "random")
            path.write_bytes(convert(conv_model(args.size, cin, cout), "int8", "int8", cal))
        refs[(cin, cout)] = model_ref(path)
    samples: dict = {}
    for _ in range(args.rounds):  # interleaved rounds: boards and this machine are shared and noisy
        jobs = build_jobs(list(refs.values()), [board], [1], 1, Settings(warmup=30, runs=args.runs))
        for row in run_profile(jobs, Options(store=str(work / "bench.db"), force=True)):
            if row["status"] == "ok":
                samples.setdefault(row["model_name"], []).append(row["p50_ms"])
    rows = []
    for which, cin, cout in cases:
        values = samples.get(refs[(cin, cout)].name)
        ms = float(np.median(values)) if values else float("nan")
        macs = args.size * args.size * 9 * cin * cout
        rows.append([which, str(cin), str(cout), f"{macs / 1e6:.1f}M", f"{ms:.4f}", f"{macs / ms / 1e6:.1f}"])
    print(table(["varied", "in ch", "out ch", "MACs", "p50 ms", "GMAC/s"], rows, "lrrrrr"))
    tile = resolve(load_profile(board.profile).channel_multiple)
    print(f"\nboard {board.name} (profile {board.profile}): {args.size}x{args.size} input, 3x3 conv, int8, XNNPACK, "
          f"1 thread; median of {args.rounds} interleaved rounds x {args.runs} runs")
    print(f"channel_multiple edgekit assumes for this board: {tile}" +
          (f" (this machine's CPU: {host_channel_multiple()})" if board.name == "local" else ""))


if __name__ == "__main__":
    main()
