#!/usr/bin/env python3
"""`edgekit select` over a store of N measurements (default 10,000): wall time and whether TensorFlow was imported.

    python tools/bench_select.py [--measurements 10000] [--rounds 5]

The store and manifest are synthetic (variant accuracies and sizes, latencies drawn per variant with 100 raw runs
each); the selection code is the product's.  Goal: under 1 s without importing TensorFlow.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build(root: Path, n: int) -> Path:
    from edgekit.manifest import Manifest, Variant
    from edgekit.store import Store
    rng = np.random.default_rng(0)
    n_variants, boards, threads = 50, [f"pi{i}" for i in range(10)], [1, 4]
    repeats = max(1, n // (n_variants * len(boards) * len(threads)))
    variants = []
    for i in range(n_variants):
        variants.append(Variant(name=f"v{i:02d}", recipe="int8", path=f"v{i:02d}.tflite", sha256=f"{i:064x}",
                                bytes=int(rng.integers(20_000, 400_000)), gzip_bytes=10_000, sparsity=0.0,
                                max_unique_weights_per_channel=0, accuracy=float(rng.uniform(0.9, 0.99)),
                                keras_accuracy=0.98, inputs=[], outputs=[], ops=[], min_runtime_version="1.14.0",
                                compatible=True, problems=[]))
    manifest = Manifest(device="rpi4", device_profile={}, source_model={}, reference_keras_accuracy=0.98,
                        eval_data=None, variants=variants, created="", edgekit_version="bench")
    mpath = root / "manifest.json"
    manifest.write(mpath)
    store = Store(root / "s.db")
    rows = []
    for v in variants:
        base = float(rng.uniform(0.5, 20))
        for b in boards:
            for t in threads:
                for r in range(repeats):
                    lat = rng.gamma(20, base / 20, 100)
                    rows.append((v, b, t, r, lat))
    cols = ["settings_key", "status", "model_sha256", "model_name", "manifest_path", "variant", "board", "profile",
            "threads", "delegate", "warmup_runs", "min_runs", "min_seconds", "repeat_index", "input", "n_runs",
            "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throttled", "latencies_ms", "started_at", "finished_at"]
    with store.db:
        store.db.executemany(
            f"INSERT INTO measurements ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [(f"{v.sha256}{b}{t}{r}", "ok", v.sha256, v.name, str(mpath), v.name, b, "rpi4", t, "xnnpack", 10, 100,
              0.0, r, "random", 100, float(np.percentile(lat, 50)), float(np.percentile(lat, 90)),
              float(np.percentile(lat, 99)), float(lat.mean()), 0, json.dumps(lat.round(5).tolist()), "", "")
             for v, b, t, r, lat in rows])
    return root / "s.db", len(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measurements", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="edgekit-bench-select-"))
    store, n = build(root, args.measurements)
    code = ("import sys, time; t0 = time.perf_counter(); from edgekit.cli import main; "
            "rc = main(sys.argv[1:]); print('WALL', time.perf_counter() - t0, 'TF', 'tensorflow' in sys.modules, "
            "file=sys.stderr); sys.exit(0 if rc in (0, 1) else rc)")
    rows = []
    for label, extra in (("--board pi3 (1,000 rows)", ["--board", "pi3"]),
                         ("--device rpi4 (all rows)", ["--device", "rpi4"]),
                         ("--device rpi4 --max-latency-ms 5 --percentile p90", ["--device", "rpi4", "--max-latency-ms",
                                                                               "5", "--percentile", "p90"])):
        inner, outer, tf = [], [], set()
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", code, "select", "--store", str(store), "--json", *extra],
                               capture_output=True, text=True)
            outer.append(time.perf_counter() - t0)
            if p.returncode != 0:
                raise SystemExit(p.stderr)
            wall_line = next(ln for ln in p.stderr.splitlines() if ln.startswith("WALL")).split()
            inner.append(float(wall_line[1]))
            tf.add(wall_line[3])
        rows.append([label, f"{statistics.median(inner):.3f}", f"{statistics.median(outer):.3f}", ",".join(tf)])
    from edgekit.report_text import table
    print(f"store: {n:,} measurements (100 raw runs each), 50 variants x 10 boards x 2 thread counts\n")
    print(table(["query", "select s (median)", "process s (median)", "TF imported"], rows, "lrrl"))
    print("\ngoal: select under 1 s, TensorFlow never imported")


if __name__ == "__main__":
    main()
