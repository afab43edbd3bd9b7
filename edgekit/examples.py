"""The bundled example: scikit-learn's digits (8x8 grey images, shipped with scikit-learn, no download)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def digits_arrays(seed: int = 0):
    """(x_train, y_train, x_test, y_test): 1437 / 360 samples, x in [0, 1], shape (N, 8, 8, 1)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def write_digits_npz(out: Path) -> tuple[Path, Path]:
    """Write train.npz and test.npz (arrays x, y) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr, x_te, y_te = digits_arrays()
    classes = np.array([str(d) for d in range(10)])
    np.savez(out / "train.npz", x=x_tr, y=y_tr, classes=classes)
    np.savez(out / "test.npz", x=x_te, y=y_te, classes=classes)
    return out / "train.npz", out / "test.npz"


def build_digits_cnn():
    """A ~43k-parameter tf_keras CNN for 8x8x1 inputs."""
    from ._tf import keras
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(128, activation="relu", name="fc1"),
        keras.layers.Dense(10, activation="softmax", name="fc2"),
    ], name="digits_cnn")


def train_digits_model(out: Path, epochs: int = 30) -> Path:
    """Train the example CNN on digits and save it as `out/digits.keras` (tf_keras format)."""
    from ._tf import keras
    x_tr, y_tr, _, _ = digits_arrays()
    model = build_digits_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_tr, y_tr, epochs=epochs, batch_size=32, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "digits.keras"
    model.save(path)
    return path


def digits_arrays_upscaled(size: int = 32, seed: int = 0):
    """Digits upscaled to size x size (nearest neighbour): a larger input for latency work."""
    x_tr, y_tr, x_te, y_te = digits_arrays(seed)
    f = size // 8
    up = lambda x: np.kron(x, np.ones((1, f, f, 1), dtype=np.float32))  # noqa: E731
    return up(x_tr), y_tr, up(x_te), y_te


def build_residual_cnn(input_shape=(32, 32, 1), classes: int = 10, width: int = 32):
    """A small CNN with BatchNorm, depthwise convolutions and residual connections (a MobileNet-like block)."""
    from ._tf import keras
    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input(input_shape)
    x = L.Conv2D(width, 3, padding="same", use_bias=False)(inp)
    x = L.ReLU()(L.BatchNormalization()(x))
    for stage, filters in enumerate((width, 2 * width)):
        if stage:
            x = L.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
            x = L.ReLU()(L.BatchNormalization()(x))
        y = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        y = L.ReLU()(L.BatchNormalization()(y))
        y = L.Conv2D(filters, 1, use_bias=False)(y)
        y = L.BatchNormalization()(y)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.Conv2D(4 * width, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(classes, activation="softmax")(x)
    return keras.Model(inp, out, name="residual_cnn")
