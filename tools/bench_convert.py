#!/usr/bin/env python3
"""Wall time and peak memory (RSS) of each pipeline step, for the digits CNN and MobileNetV2 (0.35, 96x96).

    python tools/bench_convert.py [--skip-mobilenet]

Peak RSS is sampled every 5 ms during each step (process-wide: TensorFlow's memory stays mapped after a step,
so later steps start from the earlier high-water mark).
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
import typing
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Step:
    rows: typing.ClassVar[list] = []

    def __init__(self, model: str, name: str):
        self.model, self.name, self.peak, self.done = model, name, 0.0, False

    def _sample(self):
        while not self.done:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.005)

    def __enter__(self):
        self.start_rss = rss_mb()
        self.t = threading.Thread(target=self._sample, daemon=True)
        self.t.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        secs = time.perf_counter() - self.t0
        self.done = True
        self.t.join()
        self.rows.append((self.model, self.name, secs, self.start_rss, max(self.peak, rss_mb()),
                          getattr(self, "note", "")))


def bench_digits():
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    from edgekit.examples import build_digits_cnn, digits_arrays
    from edgekit.optimize import cluster, prune, qat
    from edgekit.validate import accuracy
    x_tr, y_tr, x_te, y_te = digits_arrays()
    train, test = Dataset(x_tr, y_tr, "train"), Dataset(x_te, y_te, "test")
    from edgekit._tf import keras
    with Step("digits", "train 30 epochs") as s:
        model = build_digits_cnn()
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x_tr, y_tr, epochs=30, batch_size=32, verbose=0)
    with Step("digits", "prune 80% (4 ep)"):
        pruned = prune.prune(model, {"target": 0.8, "epochs": 4}, train)
    with Step("digits", "cluster 16 (3 ep)"):
        clustered = cluster.cluster(pruned, {"clusters": 16, "epochs": 3}, train, preserve_sparsity=True)
    with Step("digits", "PCQAT (3 ep)"):
        pcqat = qat.qat(clustered, {"epochs": 3}, train, "PCQAT")
    for mode, m in (("float32", model), ("float16", model), ("dynamic", model), ("int8", model), ("int8", pcqat)):
        label = "convert " + mode + (" (PCQAT)" if m is pcqat else "")
        with Step("digits", label) as s:
            blob = convert(m, mode, "int8" if mode == "int8" else "float32", train)
        s.note = f"{len(blob):,} B"
    with Step("digits", "validate PCQAT int8, 360 samples") as s:
        s.note = f"acc {accuracy(blob, test):.4f}"
    del keras


def bench_mobilenet():
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    from edgekit.optimize import prune, qat
    from edgekit.validate import predict
    rng = np.random.default_rng(0)
    x = rng.random((64, 96, 96, 3), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    data = Dataset(x, y, "random")
    with Step("mobilenetv2-0.35", "build (random weights)") as s:
        model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
        s.note = f"{model.count_params():,} params"
    with Step("mobilenetv2-0.35", "prune 50% (1 ep, 64 img)"):
        pruned = prune.prune(model, {"target": 0.5, "epochs": 1}, data)
    with Step("mobilenetv2-0.35", "QAT (1 ep, 64 img)"):
        q = qat.qat(model, {"epochs": 1}, data, "QAT")
    for mode, m in (("float32", model), ("dynamic", model), ("int8", model), ("int8", pruned), ("int8", q)):
        label = "convert " + mode + {id(pruned): " (pruned)", id(q): " (QAT)"}.get(id(m), "")
        with Step("mobilenetv2-0.35", label) as s:
            blob = convert(m, mode, "int8" if mode == "int8" else "float32", data)
        s.note = f"{len(blob):,} B"
    with Step("mobilenetv2-0.35", "interpreter 64 img"):
        predict(blob, x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-mobilenet", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with Step("-", "import TensorFlow + TF-MOT"):
        import edgekit._tf  # noqa: F401
    bench_digits()
    if not args.skip_mobilenet:
        bench_mobilenet()
    from edgekit.report_text import table
    rows = [[m, n, f"{s:.2f}", f"{a:.0f}", f"{p:.0f}", note] for m, n, s, a, p, note in Step.rows]
    print(table(["model", "step", "seconds", "RSS before MB", "peak RSS MB", "note"], rows, "llrrrl"))
    print(f"\ntotal {time.perf_counter() - t0:.1f} s, process peak RSS {max(r[4] for r in Step.rows):.0f} MB")


if __name__ == "__main__":
    main()
