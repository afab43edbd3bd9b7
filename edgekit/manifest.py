"""manifest.json: one record per converted variant, written atomically, read without TensorFlow."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ConfigError

SCHEMA_VERSION = 1


@dataclass
class Variant:
    name: str
    recipe: str
    path: str
    sha256: str
    bytes: int
    gzip_bytes: int
    sparsity: float
    max_unique_weights_per_channel: int
    accuracy: float | None
    keras_accuracy: float | None
    inputs: list[dict]
    outputs: list[dict]
    ops: list[dict]
    min_runtime_version: str | None
    compatible: bool
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    quantization: dict = field(default_factory=dict)
    optimizations: dict = field(default_factory=dict)
    survival: dict = field(default_factory=dict)
    edgetpu: dict | None = None
    steps: list[dict] = field(default_factory=list)
    recipe_config: dict = field(default_factory=dict)
    macs: int | None = None  # multiply-accumulates of one inference, from the Keras graph
    params: int | None = None  # what made it: reuse needs the same config and source
    max_drop: float | None = None  # the accuracy budget (points below the original Keras model)
    accuracy_drop: float | None = None  # points below reference_keras_accuracy, on --eval (negative: better)
    within_budget: bool | None = None  # None without --eval; select/sweep leave False out unless asked


@dataclass
class Manifest:
    device: str
    device_profile: dict
    source_model: dict
    reference_keras_accuracy: float | None
    eval_data: dict | None
    variants: list[Variant]
    created: str
    edgekit_version: str
    schema_version: int = SCHEMA_VERSION
    labels: list[str] | None = None  # class names in output order (from --labels or the data's classes)
    failed: list[dict] = field(default_factory=list)  # recipes that failed under keep_going: {recipe, error}
    files: list[str] = field(default_factory=list)  # every file edgekit wrote into the folder (its own, and only these)
    # what the strength searches decided on: {source, samples, carved_from_train, reference_accuracy[,
    # seen_by_model_gap_points]}; None when no recipe searched a strength
    validation_data: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(f"manifest has no variant '{name}' (has: {', '.join(v.name for v in self.variants)})")

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)


def variant_file(manifest_path: str | Path, variant: Variant, verify: bool = True) -> Path:
    """The variant's model file: inside the manifest's own folder only, and (with `verify`) the very bytes the
    manifest describes.  A path that leaves the folder, or a file whose sha256 differs, is refused."""
    base = Path(manifest_path).resolve().parent
    rel = Path(variant.path)
    target = (base / rel).resolve()
    if rel.is_absolute() or ".." in rel.parts or target.parent != base:
        raise ConfigError(f"manifest {manifest_path}: variant '{variant.name}' points outside the manifest's folder "
                          f"({variant.path!r}); refusing to open it")
    if not target.is_file():
        raise ConfigError(f"manifest {manifest_path}: variant '{variant.name}': {variant.path} does not exist")
    if verify:
        import hashlib
        h = hashlib.sha256()
        with open(target, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != variant.sha256:
            raise ConfigError(f"manifest {manifest_path}: {variant.path} is not the file the manifest describes "
                              f"(sha256 {h.hexdigest()[:12]}…, expected {variant.sha256[:12]}…); it changed after "
                              f"conversion: convert again")
    return target


def load_manifest(path: str | Path) -> Manifest:
    from .record import parse
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"manifest {path}: no such file") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"manifest {path}: not an edgekit manifest ({type(e).__name__}: {e})") from e
    try:  # validated against the same declaration that writes it
        return parse(Manifest, data, f"manifest {path}")
    except ConfigError as e:
        raise ConfigError(f"not an edgekit manifest: {e}") from None
