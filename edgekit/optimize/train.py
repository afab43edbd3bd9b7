"""Fine-tuning shared by the optimization steps."""
from __future__ import annotations

import numpy as np

from ..data import Dataset

BATCH = 32


def outputs_probabilities(model) -> bool:
    """True when the model ends in a softmax (so the loss must not apply one again)."""
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return type(last).__name__ == "Softmax" or getattr(act, "__name__", "") == "softmax"


def fine_tune(model, data: Dataset, epochs: int, lr: float, callbacks=(), probabilities: bool | None = None):
    """Compile and fit `model` in place; returns the final training accuracy."""
    from .._tf import keras
    probs = outputs_probabilities(model) if probabilities is None else probabilities
    one_hot = data.y.ndim == 2
    loss = (keras.losses.CategoricalCrossentropy if one_hot else keras.losses.SparseCategoricalCrossentropy)(
        from_logits=not probs)
    metric = "categorical_accuracy" if one_hot else "sparse_categorical_accuracy"
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=[metric])
    hist = model.fit(data.x, data.y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True,
                     callbacks=list(callbacks))
    return float(hist.history[metric][-1])


def steps_per_epoch(data: Dataset) -> int:
    return int(np.ceil(len(data) / BATCH))


def kernel_stats(model) -> tuple[float, int]:
    """(sparsity, max distinct values per output channel) over Conv/Dense kernels of a plain Keras model."""
    zeros = total = 0
    max_unique = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "Dense", "DepthwiseConv2D", "Conv1D", "Conv2DTranspose"):
            continue
        w = layer.get_weights()[0]
        zeros += int(np.sum(w == 0))
        total += w.size
        per_channel = w.reshape(-1, w.shape[-1]) if kind != "DepthwiseConv2D" else w.reshape(-1, w.shape[-2])
        max_unique = max(max_unique, max(len(np.unique(per_channel[:, c])) for c in range(per_channel.shape[1])))
    return (zeros / total if total else 0.0), max_unique
