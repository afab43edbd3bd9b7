"""Linux app bundle (Raspberry Pi, Jetson): the model, the profiler's standalone runner, and predict.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .common import ExportSource, io_description

PREDICT = '''#!/usr/bin/env python3
"""Run {name}.tflite on one input with whichever TFLite runtime is installed (ai_edge_litert, tflite_runtime or
tensorflow).  Usage: python3 predict.py INPUT.npy [--top 3]   (INPUT: float values in the model's input shape)"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def interpreter_class():
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return __import__(name, fromlist=["Interpreter"]).Interpreter
        except ImportError:
            pass
    try:
        import tensorflow as tf
        return tf.lite.Interpreter
    except ImportError:
        sys.exit("no TFLite runtime: pip install ai-edge-litert (or tflite-runtime)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("--top", type=int, default=3)
    args = ap.parse_args()
    it = interpreter_class()(model_path=os.path.join(HERE, "{name}.tflite"))
    it.allocate_tensors()
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    x = np.load(args.input).astype(np.float32).reshape(d["shape"])
    if np.issubdtype(d["dtype"], np.integer):
        scale, zp = d["quantization"]
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / scale + zp), info.min, info.max)
    it.set_tensor(d["index"], x.astype(d["dtype"]))
    it.invoke()
    y = it.get_tensor(o["index"]).astype(np.float32).reshape(-1)
    if np.issubdtype(o["dtype"], np.integer):
        scale, zp = o["quantization"]
        y = (y - zp) * scale
    labels_file = os.path.join(HERE, "labels.txt")
    labels = open(labels_file).read().split("\\n") if os.path.exists(labels_file) else [str(i) for i in range(y.size)]
    top = np.argsort(-y)[: args.top]
    print(json.dumps([{{"label": labels[i], "score": float(y[i])}} for i in top]))


if __name__ == "__main__":
    main()
'''


def export_linux(src: ExportSource, out: Path) -> dict:
    from ..profiling.session import RUNNER
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src.path, out / f"{src.name}.tflite")
    shutil.copyfile(RUNNER, out / "runner.py")
    (out / "predict.py").write_text(PREDICT.format(name=src.name))
    files = [f"{src.name}.tflite", "runner.py", "predict.py", f"{src.name}.json"]
    if src.labels:
        (out / "labels.txt").write_text("\n".join(src.labels))
        files.append("labels.txt")
    (out / f"{src.name}.json").write_text(json.dumps(io_description(src.info), indent=2) + "\n")
    return {"files": files}
