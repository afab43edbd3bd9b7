#!/usr/bin/env python3
"""The per-op latency predictor on models it was not fitted on: predicted vs measured p50.

    python tools/bench_predict.py [--runs 100] [--ssh]

Models (random weights: latency does not depend on them; converted by the real converter, float32 and int8):
three families -- plain CNN (conv/depthwise/1x1 conv/pool/conv/GAP/dense), residual CNN (conv + BN + Add
blocks), MobileNet-like (depthwise-separable blocks with stride 2) -- at several widths and input sizes.
The table is built from `profile --ops` of a few models per family (the "fit" set); the predictor is then asked
about every other model (the "held-out" set, 40+), none of whose whole-model times it has seen; most of their op
signatures are not in the table either and are scaled from the closest measured op of the same kind.  Each
held-out model is then measured whole.  Prints, per board: share within +-10%, median and worst error, the share
of predicted time that came from measured signatures, and what building the table cost.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def build(kind: str, width: int, size: int):
    from edgekit._tf import keras
    keras.utils.set_random_seed(width * 100 + size)
    i = keras.Input((size, size, 3))
    if kind == "plain":
        h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(i)
        h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
        h = keras.layers.Conv2D(width * 2, 1, activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Conv2D(width * 2, 3, padding="same", activation="relu")(h)
    elif kind == "residual":
        h = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu")(i)
        for _ in range(2):
            r = keras.layers.Conv2D(width, 3, padding="same")(h)
            r = keras.layers.BatchNormalization()(r)
            h = keras.layers.ReLU()(keras.layers.Add()([h, r]))
    else:  # mobilenet-like
        h = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu6")(i)
        for mult in (1, 2, 2):
            h = keras.layers.DepthwiseConv2D(3, strides=2 if mult == 2 else 1, padding="same",
                                             activation="relu6")(h)
            h = keras.layers.Conv2D(int(width * mult), 1, activation="relu6")(h)
            width = int(width * mult)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(i, keras.layers.Dense(10, activation="softmax")(h))


def convert(model, mode: str, size: int) -> bytes:
    import numpy as np
    from edgekit._tf import tf
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "int8":
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.random((1, size, size, 3), dtype=np.float32)] for _ in range(8))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--ssh", action="store_true", help="also on a loopback SSH board (tools/loopback_board.py)")
    ap.add_argument("--lut", action="store_true", help="also with a kernel table: `lut build --like` each fit model "
                    "added to the fit models' op table (a second row per board)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    fit, held = [], []
    for kind, widths in (("plain", (16, 24, 32, 40, 48, 56)), ("residual", (16, 24, 32, 40, 48, 64)),
                         ("mobilenet", (16, 24, 32, 40, 48, 64))):
        for size in (32, 48):
            for w in widths:
                model = build(kind, w, size)
                for mode in ("float32", "int8"):
                    p = work / f"{kind}-w{w}-s{size}-{mode}.tflite"
                    p.write_bytes(convert(model, mode, size))
                    # fit set: the smallest and the largest width at 32 px, per family and mode
                    (fit if size == 32 and w in (widths[0], widths[-1]) else held).append(p)
    boards = [("local", ["--board", "local"])]
    board_proc = None
    if args.ssh:
        from loopback_board import LoopbackBoard
        import yaml
        board_proc = LoopbackBoard(work / "board").start()
        inv = work / "boards.yaml"
        inv.write_text(yaml.safe_dump({"boards": [board_proc.board_entry("loop", "local",
                                                                           workdir=str(work / "board-cache"))]}))
        (work / "kh").write_text(board_proc.known_hosts_line)
        boards.append(("loop", ["--board", "loop", "--boards", inv, "--known-hosts", work / "kh"]))
    from edgekit.predict import predict
    from edgekit.store import Store
    rows = []
    try:
        for name, where in boards:
            store = work / f"{name}.db"
            t0 = time.perf_counter()
            p = cli("profile", *fit, "--ops", *where, "--threads", "1", "--runs", args.runs, "--store", store)
            assert p.returncode == 0, p.stderr[-2000:]
            table_s = time.perf_counter() - t0
            n_ops = len(list((work / "edgekit-ops").glob("op-*.tflite")))
            p = cli("profile", *held, *where, "--threads", "1", "--runs", args.runs, "--store",
                    work / f"{name}-held.db", "--json")
            assert p.returncode == 0, p.stderr[-2000:]
            measured = {r["model_name"]: r["p50_ms"] for r in json.loads(p.stdout)["measurements"]}
            tables = [(name, store, table_s, n_ops)]
            if args.lut:
                lut_store = work / f"{name}-lut.db"
                shutil.copy(store, lut_store)
                t0 = time.perf_counter()
                for m in fit:
                    p = cli("lut", "build", "--like", m, *where, "--threads", "1", "--runs", args.runs, "--store",
                            lut_store)
                    assert p.returncode == 0, p.stderr[-2000:]
                n_lut = len(list((work / "edgekit-lut").glob("lut-*.tflite")))
                tables.append((f"{name} + lut", lut_store, table_s + time.perf_counter() - t0, n_ops + n_lut))
            for label, db, took, n in tables:
                errs, shares = [], []
                for m in held:
                    pred = predict(Store(db), m, name, 1)
                    got = measured[m.stem]
                    errs.append((pred.ms - got) / got)
                    shares.append(pred.measured_share)
                within = sum(abs(e) <= 0.10 for e in errs) / len(errs)
                worst = max(errs, key=abs)
                rows.append([label, str(len(fit)), str(len(held)), f"{within:.0%}",
                             f"{100 * statistics.median(abs(e) for e in errs):.1f}%", f"{100 * worst:+.1f}%",
                             f"{statistics.mean(shares):.0%}", f"{took / 60:.1f}", str(n)])
    finally:
        if board_proc is not None:
            board_proc.kill()
    from edgekit.report_text import table
    print(table(["board", "fit models", "held-out", "within +-10%", "median |error|", "worst", "from measured ops",
                 "table min", "single-op / kernel models"], rows, "lrrrrrrrr"))
    print(f"\nwork folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
