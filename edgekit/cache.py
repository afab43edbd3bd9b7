"""edgekit's on-disk cache (`~/.cache/edgekit`, or `$EDGEKIT_CACHE`): content keys and JSON entries.

Entries are small JSON files named by a sha256 of everything that decides them (the model's architecture and
weights, the data, the settings, the versions), so a stale entry is never read: anything that changed changes the
key.  Writes are atomic; an unreadable entry is a miss, never an error."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def root() -> Path:
    return Path(os.environ.get("EDGEKIT_CACHE", Path.home() / ".cache" / "edgekit"))


def model_digest(h, model) -> None:
    """Feed a Keras model's architecture and weights into the hash `h`."""
    h.update(model.to_json().encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())


def data_digest(h, data) -> None:
    """Feed a Dataset's samples and labels into the hash `h`."""
    h.update(np.ascontiguousarray(data.x).tobytes())
    if data.y is not None:
        h.update(np.ascontiguousarray(data.y).tobytes())


def new_hash(*parts) -> hashlib._Hash:
    h = hashlib.sha256()
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return h


def read(kind: str, key: str) -> dict | None:
    try:
        value = json.loads((root() / kind / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write(kind: str, key: str, value: dict) -> None:
    """Atomic; a cache that cannot be written (read-only home) is skipped silently: it only saves time."""
    folder = root() / kind
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(value, indent=1))
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        tmp.unlink(missing_ok=True)
