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
    np.savez(out / "train.npz", x=x_tr, y=y_tr)
    np.savez(out / "test.npz", x=x_te, y=y_te)
    return out / "train.npz", out / "test.npz"


def build_digits_cnn():
    """A ~43k-parameter tf_keras CNN for 8x8x1 inputs."""
    from ._tf import keras
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
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
