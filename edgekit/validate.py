"""Accuracy of a .tflite in the real LiteRT interpreter (no TensorFlow import)."""
from __future__ import annotations

import numpy as np

from .data import Dataset, class_indices
from .errors import ModelFormatError


def _interpreter(model_bytes: bytes, threads: int = 2, xnnpack: bool = True):
    """LiteRT's interpreter; without `xnnpack`, its reference kernels only (XNNPACK refuses to prepare some int8
    graphs the builtin kernels run, e.g. a requantization scale out of its range)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from ._quiet import captured_stderr
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with captured_stderr():
            return Interpreter(model_content=model_bytes, num_threads=threads, experimental_op_resolver_type=resolver)
    except (ValueError, RuntimeError) as e:
        raise ModelFormatError(f"LiteRT cannot load the model: {str(e).splitlines()[0]}") from e


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        scale, zp = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zp = detail["quantization"]
        return (y.astype(np.float32) - zp) * scale
    return y.astype(np.float32)


def predict(model_bytes: bytes, x: np.ndarray, batch: int = 128) -> np.ndarray:
    """Run every sample through the interpreter; returns float outputs of the first output tensor."""
    interp = _interpreter(model_bytes)
    inp = interp.get_input_details()[0]
    outs = []
    batched = True
    for start in range(0, x.shape[0], batch):
        chunk = x[start:start + batch]
        if batched:
            try:
                interp.resize_tensor_input(inp["index"], [chunk.shape[0], *chunk.shape[1:]])
                interp.allocate_tensors()
            except (ValueError, RuntimeError):
                batched = False
                interp = _interpreter(model_bytes)
                try:
                    interp.allocate_tensors()
                except RuntimeError:  # XNNPACK would not prepare it: the builtin kernels give the same answers
                    interp = _interpreter(model_bytes, xnnpack=False)
                    interp.allocate_tensors()
        rows = [chunk] if batched else [chunk[i:i + 1] for i in range(chunk.shape[0])]
        for r in rows:
            interp.set_tensor(inp["index"], quantize_input(r, inp))
            interp.invoke()
            out = interp.get_output_details()[0]
            outs.append(dequantize_output(interp.get_tensor(out["index"]), out))
    return np.concatenate(outs, axis=0)


def correct(model_bytes: bytes, data: Dataset) -> np.ndarray:
    """Per sample: is the flatbuffer's top class the label?"""
    from ._quiet import captured_stderr
    with captured_stderr():  # LiteRT announces its XNNPACK delegate on fd 2
        pred = predict(model_bytes, data.x)
    return pred.reshape(pred.shape[0], -1).argmax(axis=1) == class_indices(data.labels)


def accuracy(model_bytes: bytes, data: Dataset) -> float:
    return float(np.mean(correct(model_bytes, data)))
