"""Read a .tflite flatbuffer without TensorFlow: ops and versions, tensors, weights, sparsity, metadata."""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelFormatError

_WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
_INTEGER = {"INT8", "UINT8", "INT32", "INT16", "INT64"}
_NP = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "UINT8": np.uint8,
       "INT64": np.int64, "INT16": np.int16, "INT8": np.int8, "FLOAT64": np.float64,
       "UINT32": np.uint32, "UINT16": np.uint16, "BOOL": np.bool_}


def _schema():
    from ai_edge_litert import schema_py_generated as schema_fb  # numpy + flatbuffers only
    return schema_fb


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class TensorInfo:
    name: str
    shape: list[int]
    dtype: str
    scale: float | list[float] | None = None
    zero_point: int | list[int] | None = None


@dataclass
class WeightInfo:
    """A constant weight tensor of a CONV/DEPTHWISE/FC op."""
    name: str
    op: str
    dtype: str
    size: int
    zeros: int
    max_unique_per_channel: int
    channels: int = 0  # output channels (depthwise: channels)

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0


@dataclass
class ModelInfo:
    path: str
    bytes: int
    gzip_bytes: int
    sha256: str
    ops: list[dict]  # [{"op": name, "version": v, "count": n}] in first-seen order
    op_sequence: list[str]  # subgraph 0 in execution order
    op_integer_only: list[bool]  # per op of op_sequence: every tensor it touches is integer
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    weights: list[WeightInfo]
    metadata: dict[str, str]
    min_runtime_version: str | None
    dynamic_inputs: bool
    tensor_dtypes: dict[str, int] = field(default_factory=dict)
    subgraphs: int = 1

    @property
    def sparsity(self) -> float:
        total = sum(w.size for w in self.weights)
        return sum(w.zeros for w in self.weights) / total if total else 0.0

    @property
    def max_unique_per_channel(self) -> int:
        return max((w.max_unique_per_channel for w in self.weights), default=0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sparsity"] = round(self.sparsity, 4)
        d["max_unique_weights_per_channel"] = self.max_unique_per_channel
        return d


def _quant(t) -> tuple:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None, None
    scale = [float(s) for s in q.scale]
    zp = [int(z) for z in (q.zeroPoint if q.zeroPoint is not None else [0] * len(scale))]
    if len(scale) == 1:
        return scale[0], zp[0]
    return scale, zp


def _buffer_array(model, raw: bytes, t, np_type) -> np.ndarray | None:
    buf = model.buffers[t.buffer] if 0 < t.buffer < len(model.buffers) else None
    if buf is None:
        return None
    if buf.data is not None and len(buf.data):
        data = np.asarray(buf.data, dtype=np.uint8).tobytes()
    elif getattr(buf, "offset", 0) and getattr(buf, "size", 0) > 1:
        data = raw[buf.offset: buf.offset + buf.size]
        if len(data) != buf.size:
            raise ModelFormatError("buffer runs past the end of the file (truncated?)")
    else:
        return None
    try:
        return np.frombuffer(data, dtype=np_type).reshape(list(t.shape))
    except ValueError as e:
        raise ModelFormatError(f"tensor {t.name!r} buffer does not match its shape ({e})") from e


def _weight_info(model, raw, t, op_name, type_names) -> WeightInfo | None:
    dtype = type_names.get(t.type, "?")
    np_type = _NP.get(dtype)
    if np_type is None or t.shape is None or len(t.shape) == 0:
        return None
    arr = _buffer_array(model, raw, t, np_type)
    if arr is None:
        return None
    _, zp = _quant(t)
    axis = t.quantization.quantizedDimension if (t.quantization is not None and isinstance(zp, list)) else 0
    if isinstance(zp, list):
        zshape = [1] * arr.ndim
        zshape[axis] = -1
        zeros = int(np.sum(arr == np.asarray(zp).reshape(zshape)))
    else:
        zeros = int(np.sum(arr == (zp or 0)))
    axis = axis if op_name != "DEPTHWISE_CONV_2D" else arr.ndim - 1
    moved = np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
    uniq = max(len(np.unique(row)) for row in moved) if moved.size else 0
    name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
    channels = int(arr.shape[-1] if op_name == "DEPTHWISE_CONV_2D" else arr.shape[0])
    return WeightInfo(name=name, op=op_name, dtype=dtype.lower(), size=int(arr.size), zeros=zeros,
                      max_unique_per_channel=int(uniq), channels=channels)


def read_model(path: str | Path) -> ModelInfo:
    """Parse a .tflite file; raise ModelFormatError for anything that is not a sound TFLite model."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise ModelFormatError(f"{path}: no such file") from e
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read ({e.strerror})") from e
    return parse_model(raw, str(path))


def parse_model(raw: bytes, name: str = "<bytes>") -> ModelInfo:
    schema_fb = _schema()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise ModelFormatError(f"{name}: not a TFLite flatbuffer (missing the 'TFL3' identifier)")
    try:
        model = schema_fb.ModelT.InitFromObj(schema_fb.Model.GetRootAs(raw, 0))
    except Exception as e:  # flatbuffers raises struct.error / IndexError / UnicodeDecodeError on damage
        raise ModelFormatError(f"{name}: corrupt or truncated TFLite file ({type(e).__name__}: {e})") from e
    if not model.subgraphs or model.operatorCodes is None:
        raise ModelFormatError(f"{name}: TFLite file has no subgraphs or operators")
    op_names = _enum_names(schema_fb.BuiltinOperator)
    type_names = _enum_names(schema_fb.TensorType)
    try:
        return _describe(model, raw, name, op_names, type_names)
    except ModelFormatError:
        raise
    except (IndexError, TypeError, AttributeError, ValueError) as e:
        raise ModelFormatError(f"{name}: corrupt TFLite file ({type(e).__name__}: {e})") from e


def _describe(model, raw, name, op_names, type_names) -> ModelInfo:
    codes = []
    for oc in model.operatorCodes:
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        op = op_names.get(code, f"BUILTIN_{code}")
        if op == "CUSTOM" and oc.customCode:
            op = f"CUSTOM:{oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode}"
        codes.append((op, int(oc.version or 1)))
    counts: dict[tuple, int] = {}
    sequence: list[str] = []
    integer_only: list[bool] = []
    weights: list[WeightInfo] = []
    dtype_counts: dict[str, int] = {}
    g0 = model.subgraphs[0]
    for gi, g in enumerate(model.subgraphs):
        producers = {}
        for op in g.operators or []:
            for o in (op.outputs if op.outputs is not None else []):
                producers[int(o)] = op
        for t in g.tensors or []:
            dt = type_names.get(t.type, "?").lower()
            dtype_counts[dt] = dtype_counts.get(dt, 0) + 1
        for op in g.operators or []:
            op_name, version = codes[op.opcodeIndex]
            counts[(op_name, version)] = counts.get((op_name, version), 0) + 1
            if gi == 0:
                sequence.append(op_name)
                touched = [int(i) for i in list(op.inputs if op.inputs is not None else []) +
                           list(op.outputs if op.outputs is not None else []) if i >= 0]
                integer_only.append(all(type_names.get(g.tensors[i].type, "?") in _INTEGER for i in touched))
            idx = _WEIGHT_OPS.get(op_name)
            if idx is None or op.inputs is None or len(op.inputs) <= idx or op.inputs[idx] < 0:
                continue
            t_index = int(op.inputs[idx])
            producer = producers.get(t_index)
            if producer is not None and codes[producer.opcodeIndex][0] == "DEQUANTIZE":
                t_index = int(producer.inputs[0])  # float16 / sparse weights feed through DEQUANTIZE
            w = _weight_info(model, raw, g.tensors[t_index], op_name, type_names)
            if w is not None:
                weights.append(w)

    def tensor(i: int) -> TensorInfo:
        t = g0.tensors[i]
        sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
        scale, zp = _quant(t)
        return TensorInfo(name=t.name.decode() if isinstance(t.name, bytes) else str(t.name),
                          shape=[int(s) for s in (sig if sig is not None else [])],
                          dtype=type_names.get(t.type, "?").lower(), scale=scale, zero_point=zp)

    inputs = [tensor(int(i)) for i in g0.inputs]
    outputs = [tensor(int(i)) for i in g0.outputs]
    metadata = {}
    for m in model.metadata or []:
        key = m.name.decode() if isinstance(m.name, bytes) else str(m.name)
        buf = model.buffers[m.buffer]
        data = bytes(np.asarray(buf.data, dtype=np.uint8)) if buf.data is not None else b""
        if key == "min_runtime_version":
            metadata[key] = data.split(b"\0", 1)[0].decode("ascii", "replace")
        else:
            metadata[key] = f"<{len(data)} bytes>"
    return ModelInfo(
        path=name, bytes=len(raw), gzip_bytes=len(gzip.compress(raw, 9)),
        sha256=hashlib.sha256(raw).hexdigest(),
        ops=[{"op": o, "version": v, "count": c} for (o, v), c in counts.items()],
        op_sequence=sequence, op_integer_only=integer_only, inputs=inputs, outputs=outputs, weights=weights,
        metadata=metadata,
        min_runtime_version=metadata.get("min_runtime_version"),
        dynamic_inputs=any(-1 in t.shape for t in inputs), tensor_dtypes=dtype_counts,
        subgraphs=len(model.subgraphs))
