"""Low-rank factorization: a Dense (or 1x1 Conv2D) kernel W (in x out) becomes U (in x r) then V (r x out), from a
truncated SVD keeping `energy` of the squared singular values (or a fixed `rank`).  Only done where it saves
parameters."""
from __future__ import annotations

import numpy as np

from .graph import rebuild
from ..layers import kind_of


def _rank(s: np.ndarray, energy: float | None, rank: int | None) -> int:
    if rank or energy is None:
        return int(min(rank or len(s), len(s)))
    cum = np.cumsum(s ** 2) / np.sum(s ** 2)
    return int(np.searchsorted(cum, energy) + 1)


def factorize(model, energy: float | None = 0.9, rank: int | None = None, min_params: int = 4096):
    """Returns (new model, report {layer: {"rank", "params_before", "params_after"}})."""
    from .._tf import keras
    report = {}
    out_names = {t._keras_history.layer.name for t in model.outputs}

    def replace(layer, ins):
        kind = kind_of(layer)
        w = layer.get_weights()
        if not w or layer.name in out_names:
            return None
        is_dense = kind == "Dense"
        is_1x1 = kind == "Conv2D" and tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1) \
            and getattr(layer, "groups", 1) == 1
        if not (is_dense or is_1x1) or w[0].size < min_params:
            return None
        k = w[0].reshape(-1, w[0].shape[-1])
        u, s, vt = np.linalg.svd(k, full_matrices=False)
        r = _rank(s, energy, rank)
        n_in, n_out = k.shape
        if r * (n_in + n_out) >= n_in * n_out:
            return None
        a = (u[:, :r] * np.sqrt(s[:r])).astype(np.float32)
        b = (np.sqrt(s[:r])[:, None] * vt[:r]).astype(np.float32)
        cfg = layer.get_config()
        if is_dense:
            first = keras.layers.Dense(r, use_bias=False, name=f"{layer.name}_lr_u")
            second = keras.layers.Dense(n_out, activation=cfg["activation"], use_bias=cfg["use_bias"],
                                        name=layer.name)
            x = second(first(ins[0]))
            first.set_weights([a])
        else:
            first = keras.layers.Conv2D(r, 1, use_bias=False, name=f"{layer.name}_lr_u")
            second = keras.layers.Conv2D(n_out, 1, activation=cfg["activation"], use_bias=cfg["use_bias"],
                                         name=layer.name)
            x = second(first(ins[0]))
            first.set_weights([a.reshape(1, 1, n_in, r)])
            b = b.reshape(1, 1, r, n_out)
        second.set_weights([b] + w[1:])
        report[layer.name] = {"rank": r, "params_before": int(k.size), "params_after": int(r * (n_in + n_out))}
        return x
    return rebuild(model, replace, name=f"{model.name}_lowrank"), report
