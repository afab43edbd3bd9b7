"""A board's kernel latency table: a grid of single-layer models (conv, depthwise, dense, pooling, add; int8 and
float) built with the real converter, cut into single-op models and profiled like any other op, so `predict` has
measured neighbours for channel counts and sizes no model of the user has yet (a pruned variant, a new width).

The grid is a record (`LutGrid`); the default covers 8..256 channels at 8..32 pixels.  The models are written once,
by content, to `edgekit-lut/` beside the store; profiling them is ordinary profiling (cached, resumable)."""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import ConfigError
from .record import parse, rule
from .store import Store

KernelOp = Literal["conv", "depthwise", "dense", "add", "maxpool", "avgpool", "gap"]


@dataclass(frozen=True)
class Kernel:
    """One family of kernels: `op` at every size x channel count (cin = cout; `predict` scales by MACs between)."""
    op: KernelOp
    kernel: int = rule(3, minimum=1, maximum=7)
    stride: int = rule(1, minimum=1, maximum=2)
    size: tuple[int, ...] = rule((8, 16, 32), minimum=1, maximum=224)  # input height = width
    channels: tuple[int, ...] = rule((8, 16, 32, 48, 64, 96, 128, 192, 256), minimum=1, maximum=4096)
    activation: Literal["relu", "relu6", "none"] = "relu"


@dataclass(frozen=True)
class LutGrid:
    kernels: tuple[Kernel, ...] = rule(check=lambda ks: None if ks else "needs at least one kernel")
    quantization: tuple[Literal["int8", "float32"], ...] = ("int8", "float32")


DEFAULT_GRID = {"kernels": [{"op": "conv", "kernel": 3}, {"op": "conv", "kernel": 3, "stride": 2},
                            {"op": "conv", "kernel": 1}, {"op": "depthwise", "kernel": 3},
                            {"op": "depthwise", "kernel": 3, "stride": 2}, {"op": "dense", "size": [1]},
                            {"op": "add", "channels": [8, 32, 128]}, {"op": "maxpool", "kernel": 2, "stride": 2,
                                                                        "channels": [8, 32, 128]},
                            {"op": "gap", "channels": [8, 32, 128, 256]}]}


def load_grid(path: str | Path | None) -> LutGrid:
    if path is None:
        return parse(LutGrid, DEFAULT_GRID, "default lut grid")
    from .schema import read_yaml
    return parse(LutGrid, read_yaml(path, f"lut grid file {path} does not exist"), Path(path).name)


_ACT = {0: "none", 1: "relu", 3: "relu6"}
_OPS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "depthwise", "FULLY_CONNECTED": "dense", "ADD": "add",
        "MEAN": "gap", "MAX_POOL_2D": "maxpool", "AVERAGE_POOL_2D": "avgpool"}


def ladder(top: int, tile: int) -> tuple[int, ...]:
    """Channel counts from one tile up to `top` (rounded up to the tile): 1, 2, 3, 4, 6, 8, 12, 16, ... tiles."""
    tiles, k = [], 1
    while k * tile < top:
        tiles.append(k)
        k = k + 1 if k < 4 else k + k // 2 if (k & (k - 1)) == 0 else k + k // 3
    return tuple(sorted({t * tile for t in tiles} | {-(-top // tile) * tile}))


def grid_like(model_bytes: bytes, tile: int = 8) -> LutGrid:
    """A grid covering the kernels of a model: each (op, kernel, stride, activation) it uses, at the input sizes it
    uses them, from one channel tile up to the most channels it has there (what its filter-pruned variants need)."""
    from .ops import cut
    fams: dict[tuple, tuple[set, int]] = {}
    quant = set()
    for o in cut(model_bytes):
        op = _OPS.get(o.op)
        ins = o.signature["inputs"]
        if op is None or not ins or not ins[0] or not ins[0]["shape"]:
            continue
        x = ins[0]["shape"]
        quant.add("int8" if ins[0]["dtype"] in ("INT8", "UINT8") else "float32")
        opts = o.signature["options"]
        w = ins[1]["shape"] if len(ins) > 1 and ins[1] and ins[1]["shape"] else None
        kernel = int(w[1]) if op in ("conv", "depthwise") and w and len(w) == 4 else int(opts.get("filterHeight", 1))
        stride = int(opts.get("strideH", 1))
        act = _ACT.get(int(opts.get("fusedActivationFunction", 0)), "none") if op in ("conv", "depthwise",
                                                                                     "dense") else "relu"
        top = max(int(x[-1]), int(w[0]) if op in ("conv", "dense") and w else 0)
        size = 1 if op == "dense" else int(x[1]) if len(x) == 4 else 1
        key = (op, kernel if op != "gap" else 3, min(stride, 2) if op != "gap" else 1, act)
        sizes, most = fams.get(key, (set(), 0))
        fams[key] = (sizes | {min(size, 224)}, max(most, top))
    if not fams:
        raise ConfigError("the model has no conv, depthwise, dense, add, pooling or mean op to build a table for")
    kernels = [Kernel(op=op, kernel=min(max(k, 1), 7), stride=s, size=tuple(sorted(sizes)),
                      channels=ladder(min(top, 4096), tile), activation=act)
               for (op, k, s, act), (sizes, top) in sorted(fams.items())]
    return LutGrid(kernels=tuple(kernels), quantization=tuple(sorted(quant)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class KernelModel:
    name: str
    quantization: str
    path: Path


def lut_folder(store: Store) -> Path:
    return Path(store.path).resolve().parent / "edgekit-lut"


def configs(grid: LutGrid) -> list[tuple[Kernel, int, int, str]]:
    """(kernel, size, channels, quantization) for every model the grid asks for, in order."""
    return [(k, s, c, q) for k in grid.kernels for s in k.size for c in k.channels for q in grid.quantization]


def _name(k: Kernel, size: int, ch: int, q: str) -> str:
    shape = f"{ch}" if k.op == "dense" else f"{size}x{size}x{ch}"
    window = f"{k.kernel}s{k.stride}" if k.op in ("conv", "depthwise", "maxpool", "avgpool") else ""
    act = f"-{k.activation}" if k.op in ("conv", "depthwise", "dense") and k.activation != "none" else ""
    return f"lut-{k.op}{window}{act}-{shape}-{q}"


def _keras_model(k: Kernel, size: int, ch: int):
    from ._tf import keras
    keras.utils.set_random_seed(size * 4099 + ch)  # the same grid builds the same bytes (the store's cache holds)
    act = None if k.activation == "none" else k.activation
    L = keras.layers
    if k.op == "dense":
        i = keras.Input((ch,))
        return keras.Model(i, L.Dense(ch, activation=act)(i))
    i = keras.Input((size, size, ch))
    if k.op == "conv":
        out = L.Conv2D(ch, k.kernel, strides=k.stride, padding="same", activation=act)(i)
    elif k.op == "depthwise":
        out = L.DepthwiseConv2D(k.kernel, strides=k.stride, padding="same", activation=act)(i)
    elif k.op == "add":
        out = L.Add()([i, L.Lambda(lambda t: t * 0.5)(i)])
    elif k.op == "maxpool":
        out = L.MaxPooling2D(k.kernel, strides=k.stride, padding="same")(i)
    elif k.op == "avgpool":
        out = L.AveragePooling2D(k.kernel, strides=k.stride, padding="same")(i)
    else:
        out = L.GlobalAveragePooling2D()(i)
    return keras.Model(i, out)


def build_models(grid: LutGrid, folder: Path, progress: bool = True) -> list[KernelModel]:
    """Convert every kernel of the grid (float32, or int8 with int8 I/O calibrated on random data) into `folder`;
    a model already there is not built again."""
    from .convert.tflite import convert
    from .data import Dataset
    folder.mkdir(parents=True, exist_ok=True)
    todo = configs(grid)
    out = []
    for n, (k, size, ch, q) in enumerate(todo, 1):
        name = _name(k, size, ch, q)
        key = hashlib.sha256(repr((k, size, ch, q)).encode()).hexdigest()[:12]
        path = folder / f"{name}-{key}.tflite"
        if not path.exists():
            model = _keras_model(k, size, ch)
            rng = np.random.default_rng(ch)
            calib = Dataset(rng.normal(size=(16, *model.inputs[0].shape[1:])).astype(np.float32), None, "random")
            raw = convert(model, q, io="int8" if q == "int8" else "float32",
                          calibration=calib if q == "int8" else None, static_batch=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(raw)
            tmp.replace(path)
        out.append(KernelModel(name, q, path))
        if progress and (n % 20 == 0 or n == len(todo)):
            print(f"edgekit: lut: {n}/{len(todo)} kernel models ready", file=sys.stderr, flush=True)
    return out


def op_files(store: Store, models: list[KernelModel]) -> tuple[list[Path], int]:
    """The single-op models to profile for these kernel models (their ops recorded in the store), and how many ops
    could not be cut."""
    from .predict import record_ops
    files: list[Path] = []
    uncut = 0
    for m in models:
        fs, ops = record_ops(store, m.path)
        uncut += sum(1 for o in ops if o.model is None)
        files += [f for f in fs if f not in files]
    if not files:
        raise ConfigError("the lut grid produced no op that can be timed alone")
    return files, uncut
