"""Per-layer pruning sensitivity: prune one layer alone (one shot, no fine-tuning) and measure the accuracy drop and
how far the outputs move from the unpruned model's (mean KL divergence, which needs no labels)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .. import cache
from ..data import Dataset, class_indices
from ..layers import kind_of

PRUNABLE = ("Conv2D", "Dense", "DepthwiseConv2D", "Conv1D", "SeparableConv2D")


def kernel_index(layer) -> int:
    """Which of a layer's weights TF-MOT prunes: the kernel, or a SeparableConv2D's pointwise kernel (NASNet is
    made of them: left out, its allocation saw a few plain convs only)."""
    return 1 if kind_of(layer) == "SeparableConv2D" else 0
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
    return _accuracy(model.predict(data.x, batch_size=512, verbose=0), data)


def correct_of(model, data: Dataset) -> np.ndarray:
    """Per sample: is the Keras model's top class the label?"""
    return _correct(model.predict(data.x, batch_size=512, verbose=0), data)


def _correct(pred: np.ndarray, data: Dataset) -> np.ndarray:
    return pred.reshape(len(pred), -1).argmax(axis=1) == class_indices(data.labels)


def _accuracy(pred: np.ndarray, data: Dataset) -> float:
    return float(_correct(pred, data).mean())


def _probabilities(pred: np.ndarray) -> np.ndarray:
    """Rows of class probabilities: the model's own when they are (softmax output), else softmax of its logits."""
    p = pred.reshape(len(pred), -1).astype(np.float64)
    if p.min() >= 0 and np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        return p
    e = np.exp(p - p.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def divergence(base: np.ndarray, pred: np.ndarray) -> float:
    """Mean KL(base || pred) over the samples: how far pruning moved the outputs.  Unlike accuracy it keeps
    measuring on data the model has memorized (every answer still right, but less sure) and is not counted in
    whole samples."""
    p, q = _probabilities(base), _probabilities(pred)
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))


def _pruned(weights: list, sparsity: float, method: str, index: int = 0) -> list:
    k = weights[index]
    if method == "magnitude":
        thresh = np.quantile(np.abs(k), sparsity)
        return weights[:index] + [np.where(np.abs(k) <= thresh, 0, k)] + weights[index + 1:]
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
    h.update(json.dumps([method, list(sparsities), "divergence", "separable"]).encode())
    return h.hexdigest()


def analyse(model, data: Dataset, sparsities=DEFAULT_SPARSITIES, method: str = "magnitude",
            use_cache: bool = True) -> dict:
    """{"baseline", "method", "sparsities", "layers": {name: {"params", "accuracy": [..], "divergence": [..]}}};
    cached by model hash."""
    key = cache_key(model, data, method, sparsities)
    result = cache.read("sensitivity", key) if use_cache else None
    if result is not None:
        result["cached"] = True
        return result
    ref = model.predict(data.x, batch_size=512, verbose=0)
    base = _accuracy(ref, data)
    layers = {}
    for layer in prunable_layers(model, method):
        original, at = layer.get_weights(), kernel_index(layer)
        accs, divs = [], []
        for s in sparsities:
            layer.set_weights(_pruned(original, s, method, at))
            pred = model.predict(data.x, batch_size=512, verbose=0)
            accs.append(_accuracy(pred, data))
            divs.append(round(divergence(ref, pred), 6))
        layer.set_weights(original)
        layers[layer.name] = {"type": kind_of(layer), "params": int(original[at].size), "accuracy": accs,
                              "divergence": divs}
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
