"""What every export target needs: the model, its description, labels, and checks of the user's input."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..data import read_labels
from ..flatbuffer import ModelInfo, read_model


@dataclass
class ExportSource:
    path: Path
    info: ModelInfo
    name: str
    labels: list[str] | None
    device: str | None = None
    variant: str | None = None


def c_identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return ident if re.match(r"[A-Za-z_]", ident) else f"m_{ident}"


def load_labels(path: str | Path | None, info: ModelInfo) -> list[str] | None:
    if path is None:
        return None
    p = Path(path)
    labels = read_labels(p)
    n_out = info.outputs[0].shape[-1] if info.outputs and info.outputs[0].shape else None
    if n_out is not None and n_out > 0 and len(labels) != n_out:
        raise ConfigError(f"labels file {p} has {len(labels)} labels but the model has {n_out} outputs")
    return labels


def resolve_source(model: str | Path | None, manifest: str | Path | None, variant: str | None,
                   labels: str | Path | None, name: str | None, max_bytes: int | None) -> ExportSource:
    device, known = None, None
    if manifest is not None:
        from ..manifest import load_manifest, variant_file
        if not variant:
            raise ConfigError("--manifest needs --variant NAME")
        m = load_manifest(manifest)
        v = m.variant(variant)
        model, device, known = variant_file(manifest, v), m.device, m.labels
    if model is None:
        raise ConfigError("give a MODEL.tflite or --manifest manifest.json --variant NAME")
    info = read_model(model)
    if max_bytes is not None and info.bytes > max_bytes:
        raise ConfigError(f"model {Path(model).name} is {info.bytes:,} bytes, over the budget --max-bytes "
                          f"{max_bytes:,}")
    given = name
    name = name or (variant or Path(model).stem)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        if given:
            raise ConfigError(f"--name {name!r}: use letters, digits, '_', '-', '.'")
        where = f"variant name {name!r}" if variant else f"model file name {Path(model).name!r}"
        raise ConfigError(f"the {where} cannot name the exported files (use letters, digits, '_', '-', '.'): "
                          f"give --name NAME")
    return ExportSource(Path(model), info, name, load_labels(labels, info) if labels is not None else known,
                        device, variant)


def io_description(info: ModelInfo) -> dict:
    """Shapes, dtypes and how to (de)quantize, for app code."""
    def tensor(t, role):
        d = {"name": t.name, "shape": t.shape, "dtype": t.dtype}
        if t.scale is not None:
            d.update(scale=t.scale, zero_point=t.zero_point)
            d["how"] = ("q = round(x / scale) + zero_point, clamped to the dtype's range" if role == "input"
                        else "x = (q - zero_point) * scale")
        else:
            d["how"] = "float values as they are"
        return d
    return {"inputs": [tensor(t, "input") for t in info.inputs], "outputs": [tensor(t, "output") for t in info.outputs],
            "sha256": info.sha256, "bytes": info.bytes, "ops": info.ops,
            "min_runtime_version": info.min_runtime_version}


def require_integer(info: ModelInfo, target: str) -> None:
    floats = [t.name for t in info.inputs + info.outputs if t.dtype not in ("int8", "uint8", "int16")]
    weights = [w.name for w in info.weights if w.dtype not in ("int8", "uint8", "int32")]
    if floats or weights or info.tensor_dtypes.get("float32"):
        raise ConfigError(f"target {target} needs a full-integer (int8) model; this one has float tensors "
                          f"({(floats + weights)[0] if floats + weights else 'activations'}): convert it with an int8 "
                          f"recipe first")
