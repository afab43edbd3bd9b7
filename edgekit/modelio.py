"""Load a tf_keras model (.keras, .h5, SavedModel folder) and refuse Keras 3 models with advice."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from .errors import ModelLoadError

KERAS3_ADVICE = ("TF-MOT needs a tf_keras (Keras 2) model: build and save it with `import tf_keras as keras` "
                 "(or TF_USE_LEGACY_KERAS=1 before importing TensorFlow), then pass that file")


def keras_version_of(path: Path) -> str | None:
    """The Keras version recorded in a saved model file, read without TensorFlow."""
    if path.is_dir():
        if (path / "keras_metadata.pb").exists():
            return "2"
        if (path / "saved_model.pb").exists():
            return None
        raise ModelLoadError(f"model {path}: folder is not a SavedModel (no saved_model.pb)")
    head = path.read_bytes()[:8]
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                meta = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() else {}
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
            raise ModelLoadError(f"model {path}: damaged .keras archive ({e})") from e
        return str(meta.get("keras_version", "")) or None
    if head.startswith(b"\x89HDF"):
        try:
            import h5py
            with h5py.File(path, "r") as f:
                v = f.attrs.get("keras_version")
                return v.decode() if isinstance(v, bytes) else (str(v) if v is not None else None)
        except OSError as e:
            raise ModelLoadError(f"model {path}: damaged HDF5 file ({e})") from e
    raise ModelLoadError(f"model {path}: not a Keras model (expected .keras, .h5 or a SavedModel folder)")


def load_keras_model(path: str | Path):
    """Load a tf_keras model; every failure becomes a one-line ModelLoadError."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model {path}: no such file or folder")
    try:
        version = keras_version_of(path)
    except PermissionError as e:
        raise ModelLoadError(f"model {path}: cannot read ({e.strerror})") from e
    if version and version.split(".")[0] == "3":
        raise ModelLoadError(f"model {path} was saved by Keras {version}. {KERAS3_ADVICE}")
    from ._tf import keras
    try:
        if path.is_dir() and version is None:
            raise ModelLoadError(f"model {path}: a SavedModel without Keras metadata (exported by Keras 3 "
                                 f"`model.export()` or plain TF). {KERAS3_ADVICE}")
        model = keras.models.load_model(path, compile=False)
    except ModelLoadError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"model {path}: cannot load with tf_keras ({first[:300]})") from e
    if not isinstance(model, keras.Model):
        raise ModelLoadError(f"model {path}: loaded object is not a Keras model")
    return model


def check_is_tf_keras(model) -> None:
    """A model object handed to the Python API must come from tf_keras, not Keras 3."""
    from ._tf import keras
    if not isinstance(model, keras.Model):
        mod = type(model).__module__
        raise ModelLoadError(f"model object of type {mod}.{type(model).__name__} is not a tf_keras model. "
                             f"{KERAS3_ADVICE}")


def clone(model):
    """A copy with the same weights: TF-MOT wrappers reuse layers, so never train the caller's model."""
    from ._tf import keras
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
