"""Multiply-accumulates and parameters per layer, from the Keras graph."""
from __future__ import annotations

import numpy as np
from ..layers import kind_of


def _prod(shape) -> int:
    return int(np.prod([d for d in shape if d is not None]))


def _up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


def layer_macs(layer, multiple: int = 1) -> int:
    """MACs of one layer; with `multiple` > 1, channel counts are first rounded up to it (the work a kernel that
    computes channels in tiles of `multiple` really does)."""
    kind = kind_of(layer)
    try:
        out_shape = layer.output_shape
    except AttributeError:
        return 0
    if isinstance(out_shape, list):
        return 0
    if kind in ("Conv2D", "Conv1D"):
        k = layer.get_weights()[0]
        if multiple > 1 and getattr(layer, "groups", 1) == 1:
            taps = _prod(out_shape[1:-1]) * _prod(k.shape[:-2])
            return taps * _up(k.shape[-2], multiple) * _up(k.shape[-1], multiple)
        return _prod(out_shape[1:-1]) * int(np.prod(k.shape[:-1])) * k.shape[-1] // max(1, getattr(layer, "groups", 1))
    if kind == "DepthwiseConv2D":
        k = layer.get_weights()[0]
        return _prod(out_shape[1:-1]) * _prod(k.shape[:-2]) * _up(k.shape[-2] * k.shape[-1], multiple)
    if kind == "Conv2DTranspose":
        k = layer.get_weights()[0]
        return _prod(layer.input_shape[1:-1]) * int(np.prod(k.shape))
    if kind == "Dense":
        k = layer.get_weights()[0]
        return _prod(out_shape[1:-1] or [1]) * _up(k.shape[0], multiple) * _up(k.shape[1], multiple)
    return 0


def count(model, multiple: int = 1) -> dict:
    """{"macs", "params", "per_layer": [{"name", "type", "macs", "params"}]} for a plain tf_keras model; with
    `multiple` > 1 also "effective_macs" (channels rounded up to the kernel tile)."""
    per = []
    for layer in model.layers:
        row = {"name": layer.name, "type": kind_of(layer), "macs": layer_macs(layer),
               "params": int(layer.count_params())}
        if multiple > 1:
            row["effective_macs"] = layer_macs(layer, multiple)
        per.append(row)
    out = {"macs": sum(p["macs"] for p in per), "params": int(model.count_params()), "per_layer": per}
    if multiple > 1:
        out["effective_macs"] = sum(p["effective_macs"] for p in per)
    return out
