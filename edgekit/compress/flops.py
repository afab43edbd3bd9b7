"""Multiply-accumulates and parameters per layer, from the Keras graph."""
from __future__ import annotations

import numpy as np


def _prod(shape) -> int:
    return int(np.prod([d for d in shape if d is not None]))


def layer_macs(layer) -> int:
    kind = type(layer).__name__
    try:
        out_shape = layer.output_shape
    except AttributeError:
        return 0
    if isinstance(out_shape, list):
        return 0
    if kind in ("Conv2D", "Conv1D"):
        k = layer.get_weights()[0]
        return _prod(out_shape[1:-1]) * int(np.prod(k.shape[:-1])) * k.shape[-1] // max(1, getattr(layer, "groups", 1))
    if kind == "DepthwiseConv2D":
        k = layer.get_weights()[0]
        return _prod(out_shape[1:-1]) * int(np.prod(k.shape))
    if kind == "Conv2DTranspose":
        k = layer.get_weights()[0]
        return _prod(layer.input_shape[1:-1]) * int(np.prod(k.shape))
    if kind == "Dense":
        k = layer.get_weights()[0]
        return _prod(out_shape[1:-1] or [1]) * int(k.size)
    return 0


def count(model) -> dict:
    """{"macs", "params", "per_layer": [{"name", "type", "macs", "params"}]} for a plain tf_keras model."""
    per = []
    for layer in model.layers:
        per.append({"name": layer.name, "type": type(layer).__name__, "macs": layer_macs(layer),
                    "params": int(layer.count_params())})
    return {"macs": sum(p["macs"] for p in per), "params": int(model.count_params()), "per_layer": per}
