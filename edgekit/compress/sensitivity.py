"""Per-layer pruning sensitivity: prune one layer alone (one shot, no fine-tuning) and measure the accuracy drop."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .. import cache
from ..data import Dataset, class_indices
from ..layers import kind_of

PRUNABLE = ("Conv2D", "Dense", "DepthwiseConv2D", "Conv1D")
DEFAULT_SPARSITIES = (0.3, 0.5, 0.7, 0.9)


def prunable_layers(model, method: str) -> list:
    out_names = {t._keras_history.layer.name for t in model.outputs}
    layers = []
    for layer in model.layers:
        kind = kind_of(layer)
        if kind not in PRUNABLE or not layer.get_weights():
            continue
        if method == "filter" and (kind not in ("Conv2D", "Dense") or layer.name in out_names):
            continue
        layers.append(layer)
    return layers


def accuracy_of(model, data: Dataset) -> float:
    pred = model.predict(data.x, batch_size=512, verbose=0)
    return float((pred.reshape(len(pred), -1).argmax(axis=1) == class_indices(data.labels)).mean())


def _pruned(weights: list, sparsity: float, method: str) -> list:
    k = weights[0]
    if method == "magnitude":
        thresh = np.quantile(np.abs(k), sparsity)
        return [np.where(np.abs(k) <= thresh, 0, k)] + weights[1:]
    norms = np.abs(k).reshape(-1, k.shape[-1]).sum(axis=0)
    drop = np.argsort(norms)[: int(round(sparsity * k.shape[-1]))]
    k = k.copy()
    k[..., drop] = 0
    rest = [b.copy() for b in weights[1:]]
    for b in rest:
        b[drop] = 0
    return [k] + rest


def cache_key(model, data: Dataset, method: str, sparsities) -> str:
    h = hashlib.sha256()
    cache.model_digest(h, model)
    cache.data_digest(h, data)
    h.update(json.dumps([method, list(sparsities)]).encode())
    return h.hexdigest()


def analyse(model, data: Dataset, sparsities=DEFAULT_SPARSITIES, method: str = "magnitude",
            use_cache: bool = True) -> dict:
    """{"baseline", "method", "sparsities", "layers": {name: {"params", "accuracy": [..]}}}; cached by model hash."""
    key = cache_key(model, data, method, sparsities)
    result = cache.read("sensitivity", key) if use_cache else None
    if result is not None:
        result["cached"] = True
        return result
    base = accuracy_of(model, data)
    layers = {}
    for layer in prunable_layers(model, method):
        original = layer.get_weights()
        accs = []
        for s in sparsities:
            layer.set_weights(_pruned(original, s, method))
            accs.append(accuracy_of(model, data))
        layer.set_weights(original)
        layers[layer.name] = {"type": kind_of(layer), "params": int(original[0].size), "accuracy": accs}
    result = {"baseline": base, "method": method, "sparsities": list(sparsities), "layers": layers,
              "cache_key": key}
    cache.write("sensitivity", key, result)
    result["cached"] = False
    return result


def plot(result: dict, path: str | Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    xs = [0.0, *result["sparsities"]]
    for name, d in result["layers"].items():
        ax.plot(xs, [result["baseline"], *d["accuracy"]], marker="o", label=f"{name} ({d['params']:,})")
    ax.set_xlabel("sparsity of that layer alone" if result["method"] == "magnitude" else "fraction of filters removed")
    ax.set_ylabel("accuracy (no fine-tuning)")
    ax.set_title(f"pruning sensitivity ({result['method']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def analyse_files(model_path, eval_path, sparsities=DEFAULT_SPARSITIES, method: str = "magnitude",
                  use_cache: bool = True) -> dict:
    """`edgekit sensitivity`: load and check the model and the eval data, then `analyse`."""
    from ..data import check_fits, check_labels, load_data
    from ..modelio import load_keras_model
    model = load_keras_model(model_path)
    shape = tuple(model.inputs[0].shape)
    data = load_data(eval_path, shape)
    check_fits(data, shape, "eval")
    check_labels(data, tuple(model.outputs[0].shape), "eval")
    return analyse(model, data, sparsities, method, use_cache)
