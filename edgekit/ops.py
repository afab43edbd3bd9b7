"""Per-op models: each operator of a .tflite cut out into a model of its own, with the same tensors (shapes, dtypes,
quantization, constant data) and options, so any board's runtime can time it through the normal profiler.  Ops
are keyed by a signature (op, version, shapes, dtypes, quantization kind, options): two ops with the same
signature cost the same on a board, whatever their weights.  Flatbuffer surgery with the schema module LiteRT
ships (numpy + flatbuffers only: no TensorFlow)."""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np

from .errors import ModelFormatError

_NO_CUT = {"WHILE", "IF", "CALL_ONCE", "CUSTOM", "DELEGATE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"}


@dataclass
class OpModel:
    index: int  # position in the model's execution order (subgraph 0)
    op: str
    version: int
    signature: dict
    sig_key: str  # sha256 of the signature
    layer: str | None  # the Keras layer it came from, where the tensor names tell
    model: bytes | None  # the single-op .tflite; None when this op cannot be cut (why says so)
    why: str | None = None
    inputs: tuple[int, ...] = ()  # the op's input tensors in the original model (its single-op model's inputs
    outputs: tuple[int, ...] = ()  # are the non-constant ones, in this order)
    layers: tuple[str, ...] = ()  # every Keras layer its output and weight tensors' names mention (fused ops)


def _schema():
    from ai_edge_litert import schema_py_generated as fb
    return fb


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _options(obj) -> dict:
    """An options table (object API) as plain data, for the signature."""
    if obj is None:
        return {}
    out: dict[str, object] = {}
    for k, v in sorted(vars(obj).items()):
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, np.ndarray)):
            out[k] = [int(x) if isinstance(x, (int, np.integer)) else float(x) for x in list(v)]
    return out


def _quant_kind(t) -> str:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return "none"
    return "per-channel" if len(q.scale) > 1 else "per-tensor"


_LAYER = re.compile(r"(?:^|/)([A-Za-z_][\w.-]*)/(?:[^/;]+)(?:;|$)")


def layer_of(tensor_name: str) -> str | None:
    """Keras layer name from a converter tensor name like "model/conv2d_1/Relu;model/conv2d_1/BiasAdd"."""
    first = tensor_name.split(";")[0]
    parts = [p for p in first.split("/") if p]
    if len(parts) >= 3:
        return parts[1]
    if len(parts) == 2:
        return parts[0]
    return None


def sig_key_of(signature: dict) -> str:
    return hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()


def cut(model_bytes: bytes) -> list[OpModel]:
    """Every op of subgraph 0 as its own model (or the reason it cannot be one)."""
    fb = _schema()
    try:
        model = fb.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    except Exception as e:  # a flatbuffer that does not parse
        raise ModelFormatError(f"not a TFLite model ({type(e).__name__})") from e
    if not model.subgraphs:
        raise ModelFormatError("the model has no subgraph")
    builtin = _names(fb.BuiltinOperator)
    ttype = _names(fb.TensorType)
    sub = model.subgraphs[0]
    out = []
    for index, op in enumerate(sub.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        name = builtin.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
        ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]

        def desc(i, ins=ins):
            if i < 0:
                return None
            t = sub.tensors[i]
            data = model.buffers[t.buffer].data if t.buffer and model.buffers[t.buffer].data is not None else None
            return {"shape": [int(x) for x in (t.shape if t.shape is not None else [])],
                    "dtype": ttype.get(t.type, str(t.type)), "quant": _quant_kind(t),
                    "const": data is not None and len(data) > 0}
        in_desc = [desc(i) for i in ins]
        signature = {"op": name, "version": int(code.version), "inputs": in_desc,
                     "outputs": [desc(i) for i in outs], "options": _options(op.builtinOptions),
                     "options_type": int(op.builtinOptionsType)}
        sig_key = sig_key_of(signature)
        names = [sub.tensors[i].name.decode() if isinstance(sub.tensors[i].name, bytes) else str(sub.tensors[i].name)
                 for i in outs]
        layer = layer_of(names[0]) if names else None
        mentioned: list[str] = []
        for i in outs + [i for i, d in zip(ins, in_desc) if d and d["const"]]:
            raw = sub.tensors[i].name
            for part in (raw.decode() if isinstance(raw, bytes) else str(raw or "")).split(";"):
                got = layer_of(part)
                if got and got not in mentioned:
                    mentioned.append(got)
        if name in _NO_CUT or any(sub.tensors[i].isVariable for i in ins if i >= 0):
            out.append(OpModel(index, name, int(code.version), signature, sig_key, layer, None,
                               f"{name} cannot be timed alone (control flow, variables or a custom op)",
                               tuple(ins), tuple(outs), tuple(mentioned)))
            continue
        out.append(OpModel(index, name, int(code.version), signature, sig_key, layer,
                           _single(fb, model, sub, op, ins, outs), None, tuple(ins), tuple(outs),
                           tuple(mentioned)))
    return out


def _single(fb, model, sub, op, ins: list[int], outs: list[int]) -> bytes:
    """A model holding only `op`: its constant inputs keep their data, the others become the model's inputs."""
    new = fb.ModelT()
    new.version = model.version
    new.description = b"edgekit single-op model"
    new.operatorCodes = [copy.deepcopy(model.operatorCodes[op.opcodeIndex])]
    new.buffers = [fb.BufferT()]  # buffer 0: the empty one
    mapping: dict[int, int] = {}
    tensors: list = []
    inputs: list[int] = []
    for old in [i for i in ins if i >= 0] + outs:
        if old in mapping:
            continue
        t = copy.deepcopy(sub.tensors[old])
        buf = model.buffers[t.buffer] if t.buffer else None
        b = fb.BufferT()
        if buf is not None and buf.data is not None and len(buf.data) > 0 and old not in outs:
            b.data = np.asarray(buf.data, dtype=np.uint8)
        else:
            if old not in outs:
                inputs.append(len(tensors))
        new.buffers.append(b)
        t.buffer = len(new.buffers) - 1
        mapping[old] = len(tensors)
        tensors.append(t)
    g = fb.SubGraphT()
    g.tensors = tensors
    g.inputs = inputs
    g.outputs = [mapping[i] for i in outs]
    o = copy.deepcopy(op)
    o.opcodeIndex = 0
    o.inputs = [mapping[i] if i >= 0 else -1 for i in ins]
    o.outputs = [mapping[i] for i in outs]
    o.intermediates = None
    g.operators = [o]
    g.name = b"main"
    new.subgraphs = [g]
    import flatbuffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(new.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
