"""A Keras model's latency on a board, predicted from the board's per-op table for any channel counts.

The model is converted once; each op of the .tflite is tied to the Keras layer its tensors are named after.  A
filter-pruned candidate differs only in channel counts, so its ops are the original ops with the channel
dimensions rewritten (a conv's input/output channels and its weight and bias shapes, a depthwise conv's channels,
the channels an add, pool or mean carries); each rewritten op is looked up in the table (measured when that exact
signature was, else scaled between the measured ops of its kind).  No conversion per candidate."""
from __future__ import annotations

import copy
from dataclasses import dataclass

from ..errors import OptimizationError
from ..layers import kind_of
from .filters import Flat, Segments, Spec, analyse

WEIGHTED = {"CONV_2D": "Conv2D", "FULLY_CONNECTED": "Dense", "DEPTHWISE_CONV_2D": "DepthwiseConv2D"}


def _count(spec: Spec, counts: dict, groups) -> int:
    if isinstance(spec, Flat):
        return spec.spatial * _count(spec.inner, counts, groups)
    assert isinstance(spec, Segments)
    return sum(counts.get(groups.find(g), n) for g, n in spec.runs)


def channels(model, counts: dict | None = None) -> dict[str, tuple[int, int]]:
    """{layer: (input channels, output channels)} of `model`, or of the model `prune_filters(model, counts=counts)`
    would build ({group root: channels kept}), without building it."""
    layers, groups, spec_of, input_spec = analyse(model)
    counts = counts or {}
    out = {}
    for layer in layers:
        ins = input_spec.get(layer.name) or []
        cin = _count(ins[0], counts, groups) if ins else 0
        out[layer.name] = (cin, _count(spec_of[layer.name], counts, groups))
    return out


def _set_last(t: dict | None, old: int, new: int) -> None:
    if t and t["shape"] and t["shape"][-1] == old:
        t["shape"][-1] = new


def rewrite(sig: dict, base: tuple[int, int], now: tuple[int, int]) -> dict:
    """The op's signature with the anchor layer's channels changed from `base` to `now` (input, output)."""
    if base == now:
        return sig
    s = copy.deepcopy(sig)
    (cin0, cout0), (cin, cout) = base, now
    ins, outs = s["inputs"], s["outputs"]
    if s["op"] in ("CONV_2D", "FULLY_CONNECTED"):
        _set_last(ins[0], cin0, cin)
        if len(ins) > 1 and ins[1]:
            w = ins[1]["shape"]
            if w and w[0] == cout0 and w[-1] == cin0:
                w[0], w[-1] = cout, cin
        if len(ins) > 2 and ins[2] and ins[2]["shape"] == [cout0]:
            ins[2]["shape"] = [cout]
        for t in outs:
            _set_last(t, cout0, cout)
        return s
    for t in ins + outs:  # depthwise, add, pooling, mean, activations: the channels they carry
        _set_last(t, cout0, cout)
    return s


@dataclass
class _Op:
    signature: dict
    sig_key: str
    anchor: str | None  # the Keras layer whose channels this op's shapes follow


class LatencyModel:
    """Predicted p50 (ms) of a model and its filter-pruned candidates on one board configuration."""

    def __init__(self, model, tflite: bytes, table, board: str):
        from ..ops import cut
        self.table = table
        self.base = channels(model)
        kinds = {layer.name: kind_of(layer) for layer in model.layers}
        self.ops = []
        missing = set()
        for o in cut(tflite):
            want = WEIGHTED.get(o.op)
            known = [n for n in o.layers if n in kinds]
            anchor = next((n for n in known if kinds[n] == want), None) if want else (known[0] if known else None)
            self.ops.append(_Op(o.signature, o.sig_key, anchor))
            if table.estimate(o.signature, o.sig_key)[1] == "missing":
                missing.add(o.op)
        if missing:
            raise OptimizationError(
                f"board {board}'s op table has no {', '.join(sorted(missing))} of this model's kind (dtype, "
                f"quantization, options): run `edgekit lut build --board {board}` or `edgekit profile --ops "
                f"MODEL.tflite --board {board}` on a model like it first")

    def ms(self, now: dict[str, tuple[int, int]] | None = None) -> float:
        """Sum of the ops' latencies with the layers' channels `now` ({layer: (in, out)}; default: as converted)."""
        total = 0.0
        for op in self.ops:
            sig = op.signature
            if now is not None and op.anchor in now and op.anchor in self.base:
                sig = rewrite(sig, self.base[op.anchor], now[op.anchor])
            total += self.table.estimate(sig, op.sig_key if sig is op.signature else None)[0]
        return float(total)


def smaller_counts(n: int, multiple: int, minimum: int) -> list[int]:
    """Channel counts below `n` a group may keep, largest first: multiples of `multiple` (channels inside one tile
    save no time), at least `minimum`."""
    step = max(1, multiple)
    start = (n - 1) // step * step
    return [k for k in range(start, minimum - 1, -step) if k >= max(minimum, 1)]
