"""Fine-tuning shared by every optimization step: a held-out slice, learning-rate decay, early stopping where it
is safe, and optional knowledge distillation from the original model."""
from __future__ import annotations

import numpy as np

from .steps import Distill

from ..data import Dataset
from ..layers import kind_of

BATCH = 32
VALIDATION_FRACTION = 0.1


def outputs_probabilities(model) -> bool:
    """True when the model ends in a softmax (so the loss must not apply one again)."""
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return kind_of(last) == "Softmax" or getattr(act, "__name__", "") == "softmax"


def _has_tfmot_wrappers(model) -> bool:
    return any(type(layer).__module__.startswith("tensorflow_model_optimization") for layer in model.layers)


SEED = 0


def reseed(seed: int = SEED) -> None:
    """Every random choice of a step (clustering's initial centroids, shuffling, dropout, initial weights of new
    layers) starts from the same seed, so the same recipe on the same model and data gives the same .tflite bytes in
    any process, on any executor (local, --jobs, Ray)."""
    from .._tf import keras
    keras.utils.set_random_seed(seed)


def fine_tune(model, data: Dataset, epochs: int, lr: float, callbacks=(), probabilities: bool | None = None,
              teacher=None, distill: Distill | None = None) -> dict:
    """Fit `model` in place; returns {"train_accuracy", "val_accuracy", "epochs_run"}.

    10% of the training data is held out; the learning rate follows a cosine decay; plain models stop early on the
    held-out accuracy (restoring the best weights).  TF-MOT-wrapped models run every epoch: restoring earlier
    weights would undo the pruning schedule."""
    from .._tf import keras
    reseed()
    probs = outputs_probabilities(model) if probabilities is None else probabilities
    one_hot = data.labels.ndim == 2
    val, tr = held_out_split(data)
    n_val = len(val)
    x_tr, y_tr = data.x[tr], data.labels[tr]
    steps = int(np.ceil(len(tr) / BATCH)) * max(1, epochs)
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.1)
    net = model
    if teacher is not None and distill:
        from ..compress.distill import make_distiller
        net = make_distiller(model, teacher, distill.temperature, distill.alpha, probs, one_hot)
        net.compile(optimizer=keras.optimizers.Adam(schedule))
        metric = "accuracy"
    else:
        loss = (keras.losses.CategoricalCrossentropy if one_hot else keras.losses.SparseCategoricalCrossentropy)(
            from_logits=not probs)
        metric = "categorical_accuracy" if one_hot else "sparse_categorical_accuracy"
        net.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=[metric])
    cbs = list(callbacks)
    if n_val and not _has_tfmot_wrappers(model):
        cbs.append(keras.callbacks.EarlyStopping(monitor=f"val_{metric}", patience=3, restore_best_weights=True,
                                                 mode="max"))
    hist = net.fit(x_tr, y_tr, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=True, callbacks=cbs,
                   validation_data=(data.x[val], data.labels[val]) if n_val else None)
    h = hist.history
    return {"train_accuracy": float(h[metric][-1]), "val_accuracy": float(h[f"val_{metric}"][-1]) if n_val else None,
            "epochs_run": len(h[metric])}


def held_out_split(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(held-out indices, training indices) of a fine-tune: the same slice every time for the same data."""
    idx = np.random.default_rng(0).permutation(len(data))
    n_val = int(len(data) * VALIDATION_FRACTION) if len(data) >= 50 else 0
    return idx[:n_val], idx[n_val:]


def steps_per_epoch(data: Dataset) -> int:
    return int(np.ceil(len(data) * (1 - VALIDATION_FRACTION) / BATCH))


KERNEL_KINDS = ("Conv2D", "Dense", "DepthwiseConv2D", "Conv1D", "Conv2DTranspose", "SeparableConv2D")


def _kernels(layer, kind: str) -> list:
    """A layer's kernels, each as (weights per output channel in columns): the ones the flatbuffer has as
    CONV / DEPTHWISE_CONV / FULLY_CONNECTED weights (a SeparableConv2D is a depthwise and a pointwise conv there)."""
    w = layer.get_weights()
    if kind == "SeparableConv2D":
        return [w[0].reshape(-1, w[0].shape[-2] * w[0].shape[-1]), w[1].reshape(-1, w[1].shape[-1])]
    if kind == "DepthwiseConv2D":
        return [w[0].reshape(-1, w[0].shape[-2])]
    return [w[0].reshape(-1, w[0].shape[-1])]


def kernel_counts(model) -> dict[str, tuple[str, int, int]]:
    """layer name -> (kind, kernel weights, zeros among them) for the Conv/Dense kernels of a plain Keras model;
    a SeparableConv2D's depthwise kernel, which TF-MOT does not prune, as "NAME (depthwise part)" of its own."""
    out = {}
    for layer in model.layers:
        kind = kind_of(layer)
        if kind in KERNEL_KINDS:
            ks = _kernels(layer, kind)
            if kind == "SeparableConv2D":
                dw, ks = ks[0], ks[1:]
                out[f"{layer.name} (depthwise part)"] = ("DepthwiseConv2D", int(dw.size), int(np.sum(dw == 0)))
            out[layer.name] = (kind, sum(int(k.size) for k in ks), sum(int(np.sum(k == 0)) for k in ks))
    return out


def kernel_stats(model) -> tuple[float, int]:
    """(sparsity, max distinct values per output channel) over Conv/Dense kernels of a plain Keras model, counted
    as the flatbuffer will have them (so the two compare like for like)."""
    zeros = total = 0
    max_unique = 0
    for layer in model.layers:
        kind = kind_of(layer)
        if kind not in KERNEL_KINDS:
            continue
        for per_channel in _kernels(layer, kind):
            zeros += int(np.sum(per_channel == 0))
            total += per_channel.size
            max_unique = max(max_unique, max(len(np.unique(per_channel[:, c]))
                                             for c in range(per_channel.shape[1])))
    return (zeros / total if total else 0.0), max_unique


def _batchnorms(model) -> list:
    return [layer for layer in model.layers if kind_of(layer) == "BatchNormalization"]


def recalibrate_batchnorm(model, data: Dataset, samples: int = 512, chunk: int = 128) -> int:
    """Re-estimate every BatchNormalization layer's moving mean and variance on `samples` training inputs (no weight
    changes), in chunks averaged with equal weight (a large model's activations for 512 inputs at once would not
    fit).  Removing filters shifts the statistics downstream layers see; with the old ones a pruned model scores
    far below what it can do, so candidates would be judged on stale statistics.  Returns the layers updated."""
    layers = _batchnorms(model)
    if not layers:
        return 0
    x = data.sample(samples, seed=3).x.astype(np.float32)
    saved = [layer.momentum for layer in layers]
    try:
        for i, start in enumerate(range(0, len(x), chunk)):
            for layer in layers:
                layer.momentum = i / (i + 1)  # running mean of the chunks' statistics; the first replaces the old
            model(x[start:start + chunk], training=True)
    finally:
        for layer, m in zip(layers, saved):
            layer.momentum = m
    return len(layers)


def refresh_batchnorm(model, data: Dataset) -> dict | None:
    """After a fine-tune: a short fine-tune moves the weights, but with the momentum real models ship with (0.99 in
    most keras.applications, 0.999 in MobileNetV3 and Keras 3) it barely moves the BatchNormalization statistics,
    which then no longer match the weights (Keras 3 MobileNetV3Small: every pruning setting 1.1 points over budget
    where its tf_keras twin at momentum 0.9 lost nothing).  The statistics are re-estimated on the fine-tune's
    training part and kept when they score no worse on its held-out part (the slice `fine_tune` held out)."""
    from ..compress.sensitivity import accuracy_of
    layers = _batchnorms(model)
    val, tr = held_out_split(data)  # the split fine_tune made
    if not layers or not len(val):
        return None
    held_out = Dataset(data.x[val], data.labels[val], data.source)
    before = accuracy_of(model, held_out)
    saved = [layer.get_weights() for layer in layers]
    recalibrate_batchnorm(model, Dataset(data.x[tr], data.labels[tr], data.source))
    after = accuracy_of(model, held_out)
    if after < before:
        for layer, w in zip(layers, saved):
            layer.set_weights(w)
    return {"held_out_accuracy_before": round(before, 4), "held_out_accuracy_after": round(after, 4),
            "kept": after >= before, "layers": len(layers)}
