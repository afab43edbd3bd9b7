"""Models we did not design for edgekit, built offline (weights=None) and trained briefly on digits upscaled to RGB:
keras.applications families, an "odd layers" model with what TF-MOT trips on, and the same as Keras 3 models.

Used by tests and tools/bench_zoo.py.  Everything is built at run time; nothing is downloaded."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

APPLICATIONS = {  # name -> (constructor, extra kwargs)
    "MobileNetV2": ("MobileNetV2", {"alpha": 0.35}),
    "MobileNetV3Small": ("MobileNetV3Small", {"minimalistic": False}),
    "MobileNetV3Large": ("MobileNetV3Large", {"minimalistic": False}),
    "EfficientNetB0": ("EfficientNetB0", {}),
    "EfficientNetV2B0": ("EfficientNetV2B0", {}),
    "DenseNet121": ("DenseNet121", {}),
    "ResNet50V2": ("ResNet50V2", {}),
    "NASNetMobile": ("NASNetMobile", {}),
}
# Families whose built-in preprocessing (a Rescaling at the input) expects pixels in [0, 255]: fed [0, 1], MobileNetV3
# sees an almost constant input in [-1, -0.99] and trains to chance, and so does EfficientNetV2B0 (Rescaling 1/255,
# then a Normalization with ImageNet's mean and variance: about -2 everywhere; 0.096 after 10 epochs)
PIXELS_255 = {"MobileNetV3Small", "MobileNetV3Large", "EfficientNetV2B0"}


def scale(name: str) -> float:
    """The pixel range a model's own preprocessing expects: 255.0 or 1.0."""
    return 255.0 if name in PIXELS_255 else 1.0


def digits_rgb(size: int = 32, seed: int = 0, pixels: float = 1.0):
    """sklearn's digits scaled to [0, pixels], resized to size x size, 3 channels: (train, test) as (x, y)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0 * pixels).astype(np.float32)
    reps = max(1, size // 8)
    x = np.kron(x, np.ones((reps, reps), np.float32))[:, :size, :size]
    if x.shape[1] < size:
        x = np.pad(x, ((0, 0), (0, size - x.shape[1]), (0, size - x.shape[2])))
    x = np.repeat(x[..., None], 3, axis=-1)
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    x, y = x[idx], y[idx]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def write_npz(folder: Path, size: int = 32, pixels: float = 1.0) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = digits_rgb(size, pixels=pixels)
    np.savez(folder / "train.npz", x=xtr, y=ytr)
    np.savez(folder / "test.npz", x=xte, y=yte)
    return folder / "train.npz", folder / "test.npz"


def _keras(keras3: bool):
    if keras3:
        import keras
        return keras
    import tf_keras
    return tf_keras


def application(name: str, size: int = 32, keras3: bool = False):
    keras = _keras(keras3)
    ctor, kw = APPLICATIONS[name]
    kw = dict(kw)
    if name.startswith("MobileNetV3"):
        kw["include_preprocessing"] = True  # its Rescaling layer: what TF-MOT trips on
    return getattr(keras.applications, ctor)(input_shape=(size, size, 3), weights=None, classes=10, **kw)


def keras3_twin(model, name: str, size: int = 32):
    """The Keras 3 version of a tf_keras keras.applications `model`, with its weights (copied layer by layer in
    order: a few layer names differ between the two versions), checked to give the same outputs."""
    twin = application(name, size, keras3=True)
    src = [layer for layer in model.layers if layer.get_weights()]
    dst = [layer for layer in twin.layers if layer.get_weights()]
    assert len(src) == len(dst), (name, len(src), len(dst))
    for a, b in zip(src, dst):
        w = a.get_weights()
        assert [x.shape for x in w] == [tuple(x.shape) for x in b.get_weights()], (name, a.name, b.name)
        b.set_weights(w)
        if hasattr(a, "momentum"):
            b.momentum = a.momentum
    x = digits_rgb(size, pixels=scale(name))[1][0][:32]
    gap = float(np.abs(np.asarray(model(x, training=False)) - np.asarray(twin(x, training=False))).max())
    assert gap < 1e-4, f"{name}: the Keras 3 twin's outputs differ by {gap}"
    return twin


def keras3_fine_tune_gap(name: str, samples: int = 256, lr: float = 1e-4, size: int = 32) -> tuple[bool, int, float]:
    """The tf_keras application `name` (weights=None, seeded), its Keras 3 twin, and edgekit's tf_keras rebuild of
    the twin, each fine-tuned one epoch on `samples` digits with edgekit's own fine-tune: (the rebuild has the tf_keras
    model's layer kinds, Dropout layers, largest weight difference after the epoch)."""
    from collections import Counter

    import tf_keras
    from edgekit import keras3
    from edgekit.data import Dataset
    from edgekit.optimize.train import fine_tune
    tf_keras.utils.set_random_seed(0)
    plain = application(name, size)
    (x, y), _ = digits_rgb(size, pixels=scale(name))
    rebuilt = keras3.to_tf_keras(keras3_twin(plain, name, size), x[:32])
    kinds = Counter(type(layer).__name__ for layer in plain.layers)
    same_kinds = kinds == Counter(type(layer).__name__ for layer in rebuilt.layers)
    weights = []
    for m in (plain, rebuilt):
        copy = tf_keras.models.clone_model(m)
        copy.set_weights(m.get_weights())
        fine_tune(copy, Dataset(x[:samples], y[:samples], "digits"), epochs=1, lr=lr)
        weights.append([w for layer in copy.layers for w in layer.get_weights()])
    if len(weights[0]) != len(weights[1]):
        return False, kinds.get("Dropout", 0), float("inf")
    return same_kinds, kinds.get("Dropout", 0), max(float(np.abs(a - b).max()) for a, b in zip(*weights))


def odd_layers(size: int = 16, keras3: bool = False):
    """Rescaling and Normalization at the input, ZeroPadding2D, a standalone BatchNormalization (after a
    Concatenate, no conv before it), squeeze-excitation (Multiply), hard-swish as an Activation and as raw
    TensorFlow ops (TFOpLambda in tf_keras), Reshape, Dropout."""
    keras = _keras(keras3)
    L = keras.layers
    inp = keras.Input((size, size, 3))
    x = L.Rescaling(2.0, offset=-1.0, name="rescale")(inp)
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.Conv2D(16, 3, name="stem")(x)
    x = L.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = L.Activation("swish", name="act")(x)
    a = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    b = L.Conv2D(16, 1, name="pw")(x)
    x = L.Concatenate(name="cat")([a, b])
    x = L.BatchNormalization(momentum=0.9, name="lonely_bn")(x)  # standalone: after a Concatenate
    if not keras3:
        import tensorflow as tf
        x = x * tf.nn.relu6(x + 3.0) / 6.0  # hard-swish written as TF ops: TFOpLambda layers
    se = L.GlobalAveragePooling2D(name="se_pool")(x)
    se = L.Reshape((1, 1, 32), name="se_reshape")(se)
    se = L.Conv2D(8, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(32, 1, activation="sigmoid", name="se_expand")(se)
    x = L.Multiply(name="se_mul")([x, se])
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.2, name="drop")(x)
    out = L.Dense(10, activation="softmax", name="digit")(x)
    return keras.Model(inp, out, name="odd_layers")


def train(model, size: int, epochs: int = 3, keras3: bool = False, data=None, pixels: float = 1.0):
    """Train briefly on digits upscaled to RGB in [0, pixels] (`data`: other (x, y) arrays of that kind instead)."""
    (xtr, ytr), _ = digits_rgb(size, pixels=pixels) if data is None else (data, None)
    keras = _keras(keras3)
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    shipped = [layer.momentum for layer in norms]
    for layer in norms:  # keras.applications use momentum 0.99-0.999: with ~100 steps of training the moving
        layer.momentum = 0.9  # statistics would stay near their initial values
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=epochs, batch_size=32, verbose=0)
    for layer, m in zip(norms, shipped):  # then as the family ships it: what edgekit's fine-tunes meet in a
        layer.momentum = m  # user's model (momentum 0.9 hid that their statistics lagged the weights)
    return model


def accuracy(model, size: int, pixels: float = 1.0) -> float:
    _, (xte, yte) = digits_rgb(size, pixels=pixels)
    return float((model.predict(xte, verbose=0).argmax(1) == yte).mean())
