#!/usr/bin/env python3
"""Profiler overhead and fidelity over loopback SSH (needs /usr/sbin/sshd; run as root or with a usable sshd).

    python tools/bench_profiler.py [--rounds 3]

1. The same model (MobileNetV2 0.35, 96x96, int8) timed in-process with LiteRT and through `edgekit profile`
   over loopback SSH, rounds interleaved: ratio of medians (goal 0.95-1.05).
2. Overhead per extra model on a warm connection: wall time of profiling M small models vs 1, minus the time the
   runner spent measuring (goal < 0.5 s).
3. M models x 2 loopback boards vs M models on 1 board, --threads 1: throughput ratio (goal >= 1.6x).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from loopback_board import LoopbackBoard  # noqa: E402


def build_models(work: Path) -> tuple[Path, list[Path]]:
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    from edgekit.examples import build_digits_cnn
    rng = np.random.default_rng(0)
    mnet = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    cal = Dataset(rng.random((32, 96, 96, 3), dtype=np.float32), None, "random")
    big = work / "mobilenetv2_035_int8.tflite"
    big.write_bytes(convert(mnet, "int8", "int8", cal))
    small = []
    digits = build_digits_cnn()
    dcal = Dataset(rng.random((32, 8, 8, 1), dtype=np.float32), None, "random")
    for mode in ("float32", "float16", "dynamic", "int8", "int16x8"):
        p = work / f"digits_{mode}.tflite"
        p.write_bytes(convert(digits, mode, "int8" if mode == "int8" else "float32", dcal))
        small.append(p)
    return big, small


def in_process_median(model: Path, warmup: int, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(model), num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    info = np.iinfo(d["dtype"])
    it.set_tensor(d["index"], np.random.default_rng(0).integers(info.min, info.max + 1, d["shape"]).astype(d["dtype"]))
    for _ in range(warmup):
        it.invoke()
    lat = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        lat.append((time.perf_counter() - t0) * 1000)
    return statistics.median(lat)


def edgekit(args: list, cwd: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgekit", "profile", *map(str, args), "--json"], cwd=cwd,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edgekit profile failed: {proc.stderr[-800:]}")
    return wall, json.loads(proc.stdout)


def runner_seconds(rows: list[dict]) -> float:
    """Time the runner spent loading and invoking (warm-up estimated from the median)."""
    return sum((r["load_ms"] + r["first_ms"] + r["warmup_runs"] * r["p50_ms"] + r["mean_ms"] * r["n_runs"]) / 1000
               for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-"))
    big, small = build_models(work)
    b1 = LoopbackBoard(work / "b1").start()
    b2 = LoopbackBoard(work / "b2", client_key=b1.client_key).start()
    try:
        inv = work / "boards.yaml"
        inv.write_text(yaml.safe_dump({"boards": [b1.board_entry("pi1", workdir=str(work / "w1")),
                                                  b2.board_entry("pi2", workdir=str(work / "w2"))]}))
        (work / "known_hosts").write_text(b1.known_hosts_line + b2.known_hosts_line)
        common = ["--boards", inv, "--known-hosts", work / "known_hosts", "--store", work / "s.db", "--force",
                  "--threads", "1"]
        rows = []

        # 1. fidelity
        warmup, runs = 50, 1000
        local, remote = [], []
        edgekit([big, "--board", "pi1", "--runs", "5", *common], work)  # upload once
        for _ in range(args.rounds):
            local.append(in_process_median(big, warmup, runs))
            _, out = edgekit([big, "--board", "pi1", "--warmup", warmup, "--runs", runs, *common], work)
            remote.append(out["measurements"][0]["p50_ms"])
        ratio = statistics.median(remote) / statistics.median(local)
        rows.append(["MobileNetV2 int8 p50, in-process LiteRT", f"{statistics.median(local):.4f} ms", ""])
        rows.append(["MobileNetV2 int8 p50, edgekit over loopback SSH", f"{statistics.median(remote):.4f} ms", ""])
        rows.append(["ratio of medians (SSH / in-process)", f"{ratio:.3f}", "0.95-1.05"])

        # 2. overhead per extra model, warm connection (models already on the board)
        edgekit([*small, "--board", "pi1", "--runs", "5", *common], work)
        over = []
        for _ in range(args.rounds):
            w1, o1 = edgekit([small[0], "--board", "pi1", "--runs", "100", *common], work)
            wm, om = edgekit([*small, "--board", "pi1", "--runs", "100", *common], work)
            extra = (wm - runner_seconds(om["measurements"])) - (w1 - runner_seconds(o1["measurements"]))
            over.append(extra / (len(small) - 1))
        rows.append([f"overhead per extra model ({len(small)} vs 1 model)", f"{statistics.median(over):.3f} s",
                     "< 0.5 s"])

        # 3. two boards vs one
        m = [big] * 1 + small[:3]
        job = ["--runs", "1500", "--warmup", "20"]
        edgekit([*m, "--all-boards", "--runs", "5", *common], work)
        ratios = []
        for _ in range(args.rounds):
            t1, _ = edgekit([*m, "--board", "pi1", *job, *common], work)
            t2, _o2 = edgekit([*m, "--board", "pi1", "--board", "pi2", *job, *common], work)
            ratios.append(2 * t1 / t2)
        rows.append([f"{len(m)} models x 1 board, wall", f"{t1:.2f} s", ""])
        rows.append([f"{len(m)} models x 2 boards, wall", f"{t2:.2f} s", ""])
        rows.append(["throughput 2 boards / 1 board (median)", f"{statistics.median(ratios):.2f}x", ">= 1.6x"])
    finally:
        b1.kill()
        b2.kill()
    from edgekit.report_text import table
    print(table(["measure", "value", "goal"], rows, "lrr"))
    nproc = subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()
    print(f"\nrounds: {args.rounds}; machine: {nproc}"
          " cores, shared and noisy: compare ratios from one run")


if __name__ == "__main__":
    main()
