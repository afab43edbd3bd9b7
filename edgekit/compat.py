"""Will this .tflite run on that device?  Runtime op versions, Edge TPU rules, quantization constraints."""
from __future__ import annotations

from packaging.version import InvalidVersion, Version

from dataclasses import dataclass, field

from .flatbuffer import ModelInfo
from .profiles import DeviceProfile, Runtime

# ai-edge-litert has its own version numbers; the TFLite runtime version it carries (what the
# converter's `min_runtime_version` metadata is compared with).  Older releases first.
_LITERT_TF_EQUIVALENT = (("1.0", "2.18.0"), ("1.2", "2.19.0"), ("1.4", "2.20.0"), ("2.0", "2.21.0"))

# (op, version) -> first TFLite runtime able to load it, for op versions recent converters emit.
# Used to name the culprit ops; the verdict itself comes from the model's min_runtime_version.
OP_VERSION_RUNTIME = {
    ("FULLY_CONNECTED", 12): "2.17.0", ("FULLY_CONNECTED", 9): "2.3.0", ("CONV_2D", 6): "2.9.0",
    ("CONV_2D", 5): "2.4.0", ("DEPTHWISE_CONV_2D", 6): "2.3.0", ("ADD", 4): "2.6.0", ("MUL", 5): "2.6.0",
    ("PAD", 4): "2.6.0", ("CAST", 4): "2.9.0", ("DEQUANTIZE", 5): "2.7.0", ("BATCH_MATMUL", 4): "2.5.0",
    ("STRIDED_SLICE", 6): "2.6.0", ("ARG_MAX", 3): "2.9.0", ("TILE", 3): "2.8.0",
}

# Operations the Edge TPU compiler can map (coral.ai "TensorFlow models on the Edge TPU").
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU",
    "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT",
    "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "DEQUANTIZE",
})
_INT_TYPES = {"int8", "uint8", "int32"}


def _v(text: str) -> Version:
    """PEP 440 order: 2.14.0rc1 < 2.14.0 < 2.14.1 (an unparsable version sorts first)."""
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def tflite_version_of(runtime: Runtime) -> str:
    """The TFLite runtime version a runtime package provides."""
    if runtime.name != "ai-edge-litert":
        return runtime.version
    found = _LITERT_TF_EQUIVALENT[0][1]
    for litert, tf_version in _LITERT_TF_EQUIVALENT:
        if _v(runtime.version) >= _v(litert):
            found = tf_version
    return found


def unloadable(model_bytes: bytes, runtime: Runtime) -> str | None:
    """Why `runtime` cannot load these flatbuffer bytes, or None."""
    from .flatbuffer import parse_model
    return runtime_problem(parse_model(model_bytes), runtime)


DENSE_PER_TENSOR = "per-tensor (per-channel needs runtime >= 2.17)"  # the record of a dynamic-range model so built


def runtime_problem(info: ModelInfo, runtime: Runtime) -> str | None:
    """Why `runtime` cannot load the model, or None."""
    have = tflite_version_of(runtime)
    need = info.min_runtime_version
    culprits = [f"{o['op']} v{o['version']}" for o in info.ops
                if _v(OP_VERSION_RUNTIME.get((o["op"], o["version"]), "0")) > _v(have)]
    if (need and _v(need) > _v(have)) or (not need and culprits):
        detail = f" ({', '.join(culprits)})" if culprits else ""
        need_text = f"runtime >= {need}" if need else "newer op versions"
        return f"{runtime.name} {runtime.version} cannot load this model: it needs {need_text}{detail}"
    return None


@dataclass
class EdgeTPUReport:
    """Our own pre-flight estimate of what the Edge TPU compiler would map."""
    mappable_ops: int
    cpu_ops: int
    unsupported_ops: list[str]
    first_split: str | None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"mappable_ops": self.mappable_ops, "cpu_ops": self.cpu_ops,
                "unsupported_ops": self.unsupported_ops, "first_split": self.first_split,
                "problems": self.problems}


def edgetpu_preflight(info: ModelInfo) -> EdgeTPUReport:
    problems = []
    float_tensors = {dt: n for dt, n in info.tensor_dtypes.items() if dt not in _INT_TYPES}
    if float_tensors:
        problems.append("Edge TPU needs every tensor int8/uint8; found " +
                        ", ".join(f"{n} {dt}" for dt, n in sorted(float_tensors.items())))
    if info.dynamic_inputs:
        problems.append("Edge TPU needs static shapes; an input has a dynamic dimension")
    if info.subgraphs > 1:
        problems.append("Edge TPU compiles only the first subgraph (model has control flow)")
    first_split, mapped, unsupported = None, 0, []
    for i, (op, integer) in enumerate(zip(info.op_sequence, info.op_integer_only)):
        ok = op in EDGETPU_OPS and integer
        if first_split is None and ok:
            mapped += 1
            continue
        if first_split is None:
            why = "not supported by the Edge TPU" if op not in EDGETPU_OPS else "has float tensors"
            first_split = f"{op} (op #{i}, {why})"
        if not ok and op not in unsupported:
            unsupported.append(op)
    if first_split:
        problems.append(f"the graph splits at {first_split}: it and every op after it run on the CPU")
    return EdgeTPUReport(mappable_ops=mapped, cpu_ops=len(info.op_sequence) - mapped,
                         unsupported_ops=unsupported, first_split=first_split, problems=problems)


def device_problems(info: ModelInfo, profile: DeviceProfile) -> tuple[list[str], list[str]]:
    """(problems that stop the model running as intended on the device, non-blocking warnings)."""
    problems, warnings = [], []
    primary = runtime_problem(info, profile.runtime)
    if primary:
        others = [r for r in profile.runtimes[1:] if runtime_problem(info, r) is None]
        hint = f"; it loads in {others[0].name} {others[0].version}" if others else ""
        problems.append(primary + hint)
    for r in profile.runtimes[1:]:
        p = runtime_problem(info, r)
        if p and not primary:
            warnings.append(p)
    for t in info.inputs + info.outputs:
        if t.dtype not in profile.io_dtypes:
            problems.append(f"tensor {t.name!r} is {t.dtype}; {profile.name} takes "
                            f"{'/'.join(profile.io_dtypes)} input and output")
    if profile.static_shapes and info.dynamic_inputs and not profile.edgetpu:
        problems.append(f"{profile.name} needs static input shapes")
    if profile.max_model_bytes and info.bytes > profile.max_model_bytes:
        problems.append(f"model is {info.bytes} bytes, over {profile.name}'s {profile.max_model_bytes}")
    if profile.param_cache_bytes and info.bytes > profile.param_cache_bytes:
        cache = profile.param_cache_bytes / 2**20
        warnings.append(f"model is {info.bytes / 2**20:.1f} MB, over {profile.name}'s {cache:g} MB on-chip "
                        f"parameter cache: the rest of its parameters are streamed from host memory on every "
                        f"inference (slower; profile it, or compress it below the cache)")
    if profile.edgetpu:
        problems += [p for p in edgetpu_preflight(info).problems if p not in problems]
    else:
        off = tile_waste(info, profile)
        if off:
            warnings.append(off)
    return problems, warnings


def tile_waste(info: ModelInfo, profile: DeviceProfile, least: float = 0.1) -> str | None:
    """A note when int8 layers wider than the device's kernel channel tile leave over `least` of their last tiles
    idle (they cost what the rounded-up width costs); filter pruning at the device's tile avoids that."""
    from .compress.kernels import resolve
    tile = resolve(profile.channel_multiple)
    if tile <= 1:
        return None
    fixed = {t.shape[-1] for t in info.outputs if t.shape}  # a classifier's width is the task's class count
    off = []
    for w in info.weights:
        if w.dtype == "int8" and w.channels > tile and w.channels % tile and w.channels not in fixed:
            padded = -(-w.channels // tile) * tile
            if (padded - w.channels) / padded > least:
                off.append((w, padded))
    if not off:
        return None
    w, padded = max(off, key=lambda p: p[1] - p[0].channels)
    return (f"{len(off)} int8 layer(s) are off {profile.name}'s {tile}-channel kernel tile (e.g. {w.op} "
            f"{w.name!r}: {w.channels} channels cost what {padded} do); filter pruning with channel_multiple: "
            f"device keeps widths on the tile")


def describe(info: ModelInfo, profile: DeviceProfile | None) -> dict:
    """What `edgekit inspect` reports: the model, and with a profile its fit (+ Edge TPU pre-flight)."""
    d = info.to_dict()
    d.pop("op_sequence")
    d.pop("op_integer_only")
    if profile is not None:
        problems, warnings = device_problems(info, profile)
        d["device"] = {"name": profile.name, "compatible": not problems, "problems": problems, "warnings": warnings}
        if profile.edgetpu:
            d["device"]["edgetpu_preflight"] = edgetpu_preflight(info).to_dict()
    return d
