"""Training / calibration / evaluation data: `.npz` files with arrays `x` and `y`, or image folders."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CalibrationError, DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


CALIBRATION_SAMPLES = 200  # the representative dataset: this many samples of --train unless --calibration

@dataclass(frozen=True)
class Dataset:
    x: np.ndarray
    y: np.ndarray | None
    source: str
    classes: tuple[str, ...] | None = None  # class names in label order (image folders, .npz 'classes')

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def labels(self) -> np.ndarray:
        """y, for steps that need labels (fine-tuning, accuracy)."""
        if self.y is None:
            raise DataError(f"{self.source} has no labels (y)")
        return self.y

    def sample(self, n: int, seed: int = 0) -> Dataset:
        if n >= len(self):
            return self
        idx = np.random.default_rng(seed).choice(len(self), size=n, replace=False)
        return Dataset(self.x[idx], None if self.y is None else self.y[idx], f"{self.source}[sample {n}]",
                       self.classes)

    def split(self, fraction: float, seed: int = 0, at_most: int = 1000) -> tuple[Dataset, Dataset]:
        """(rest, held out): a validation split carved from training data, for decisions (never --eval)."""
        n = min(at_most, max(1, int(round(len(self) * fraction))))
        idx = np.random.default_rng(seed).permutation(len(self))
        held, rest = idx[:n], idx[n:]

        def take(i, what):
            return Dataset(self.x[i], None if self.y is None else self.y[i], f"{self.source}[{what}]", self.classes)
        return take(rest, f"fit {len(rest)}"), take(held, f"validation {n}")


def read_labels(path: str | Path) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"labels file {p} does not exist")
    return [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]


def load_data(path: str | Path, input_shape: tuple | None = None) -> Dataset:
    """Load `.npz` (arrays `x`, optional `y` and `classes`) or a folder of images in class sub-folders."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data {path}: no such file or folder")
    if path.is_dir():
        return _load_image_folder(path, input_shape)
    if path.suffix != ".npz":
        raise DataError(f"data {path}: expected a .npz file with arrays 'x' and 'y', or an image folder")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise DataError(f"data {path}: has no array 'x' (found: {', '.join(z.files) or 'nothing'})")
            x = np.asarray(z["x"])
            y = np.asarray(z["y"]) if "y" in z.files else None
            classes = tuple(str(c) for c in np.asarray(z["classes"]).reshape(-1)) if "classes" in z.files else None
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled objects), OSError
        raise DataError(f"data {path}: cannot read as .npz ({type(e).__name__}: {e})") from e
    if x.dtype.kind not in "fiub":
        raise DataError(f"data {path}: 'x' must be numeric, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"data {path}: 'x' has shape {x.shape}; need at least one sample of shape (N, ...)")
    if y is not None and y.shape[0] != x.shape[0]:
        raise DataError(f"data {path}: 'x' has {x.shape[0]} samples but 'y' has {y.shape[0]}")
    return Dataset(x.astype(np.float32, copy=False), y, str(path), classes)


def _load_image_folder(path: Path, input_shape: tuple | None) -> Dataset:
    from PIL import Image  # pillow comes with matplotlib

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"data {path}: an image folder needs one sub-folder per class")
    h = w = None
    channels = 3
    if input_shape is not None and len(input_shape) == 4:
        h, w, channels = input_shape[1], input_shape[2], input_shape[3]
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for f in sorted((path / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                img = Image.open(f).convert("L" if channels == 1 else "RGB")
            except Exception as e:
                raise DataError(f"data {f}: not a readable image ({e})") from e
            if h and w:
                img = img.resize((w, h))
            arr = np.asarray(img, dtype=np.float32) / 255.0
            xs.append(arr[..., None] if arr.ndim == 2 else arr)
            ys.append(label)
    if not xs:
        raise DataError(f"data {path}: no images found in {', '.join(classes)}")
    try:
        x = np.stack(xs)
    except ValueError as e:
        raise DataError(f"data {path}: images differ in size; give the model a fixed input size") from e
    return Dataset(x, np.asarray(ys, dtype=np.int64), str(path), tuple(classes))


def check_fits(data: Dataset, input_shape: tuple, role: str, error=DataError) -> None:
    """The samples must have the model's input shape (batch dimension aside)."""
    want = tuple(None if d is None else int(d) for d in input_shape[1:])
    got = tuple(int(d) for d in data.x.shape[1:])
    if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got)):
        raise error(f"{role} data {data.source}: samples have shape {got}, the model takes {want}")
    if not np.isfinite(data.x).all():
        raise error(f"{role} data {data.source}: 'x' contains NaN or infinite values")


def check_labels(data: Dataset, output_shape: tuple, role: str) -> None:
    """Labels must be class indices below the output size, or one-hot rows of the output size."""
    if data.y is None:
        raise DataError(f"{role} data {data.source}: has no array 'y' (labels are needed to measure accuracy)")
    n_out = output_shape[-1]
    y = data.y
    if y.ndim == 2 and y.shape[1] == n_out:
        return
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{role} data {data.source}: 'y' has shape {y.shape} dtype {y.dtype}; "
                        f"expected integer class indices (N,) or one-hot (N, {n_out})")
    if y.min() < 0 or y.max() >= n_out:
        raise DataError(f"{role} data {data.source}: labels range {int(y.min())}..{int(y.max())} "
                        f"but the model has {n_out} outputs")


def class_indices(y: np.ndarray) -> np.ndarray:
    return y.argmax(axis=1) if y.ndim == 2 else y


def check_disjoint(val: Dataset, train: Dataset) -> None:
    """Held-out data for decisions must not be in the training data (the fine-tunes learn from --train, so a shared
    sample would make every candidate look better than it is)."""
    import hashlib

    def rows(d: Dataset) -> set[bytes]:
        x = np.ascontiguousarray(d.x)
        return {hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in x.reshape(len(d), -1)}
    shared = len(rows(val) & rows(train))
    if shared:
        raise DataError(f"validation data {val.source}: {shared} of its {len(val)} samples are also in the training "
                        f"data {train.source}; --val must be data neither the model nor the fine-tunes learn from")


def check_calibration(data: Dataset, input_shape: tuple) -> None:
    if len(data) == 0:
        raise CalibrationError(f"calibration data {data.source}: has zero samples")
    check_fits(data, input_shape, "calibration", CalibrationError)
