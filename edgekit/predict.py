"""Per-op latency tables and the latency predictor (no TensorFlow).

`record_ops` cuts a model into single-op models (edgekit/ops.py), writes them content-addressed beside the store and
records each op's signature in the store's `ops` table; profiling those files is ordinary profiling (batched,
cached, resumable).  `predict` sums, for a model never run on the board, the latency of each of its ops from the
board's table (by signature; an op whose signature was never measured is scaled from the closest measured op of the
same kind, and says so) plus the board's per-model overhead, fitted on the models measured both whole and op by op.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .flatbuffer import read_model
from .ops import OpModel, cut, sig_key_of
from .store import OpRow, Store


def ops_folder(store: Store) -> Path:
    return Path(store.path).resolve().parent / "edgekit-ops"


def record_ops(store: Store, model_path: str | Path) -> tuple[list[Path], list[OpModel]]:
    """Cut `model_path` into single-op models (written once, by content, as op-<sha256>.tflite) and record its ops;
    returns the files to profile and every op (with why an op cannot be timed alone)."""
    raw = Path(model_path).read_bytes()
    source = read_model(model_path).sha256
    folder = ops_folder(store)
    folder.mkdir(parents=True, exist_ok=True)
    ops = cut(raw)
    rows, files = [], []
    for o in ops:
        sha = None
        if o.model is not None:
            sha = hashlib.sha256(o.model).hexdigest()
            f = folder / f"op-{sha}.tflite"
            if not f.exists():
                tmp = f.with_suffix(".tmp")
                tmp.write_bytes(o.model)
                tmp.replace(f)
            if f not in files:
                files.append(f)
        rows.append(OpRow(source_sha256=source, op_index=o.index, sig_key=o.sig_key, op=o.op, version=o.version,
                          signature=o.signature, layer=o.layer, model_sha256=sha, why=o.why))
    store.add_ops(rows)
    return files, ops


def _cost(sig: dict) -> float:
    """A size measure to scale latencies between ops of one kind: MACs for conv / depthwise / fully connected,
    output elements for the rest."""
    outs = [t for t in sig["outputs"] if t]
    n_out = float(sum(np.prod(t["shape"]) if t["shape"] else 1 for t in outs)) or 1.0
    ins = [t for t in sig["inputs"] if t]
    if sig["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV") and len(ins) >= 2:
        w = ins[1]["shape"]
        per_out = float(np.prod(w[1:])) if sig["op"] != "DEPTHWISE_CONV_2D" else float(np.prod(w[1:3]))
        return n_out * max(per_out, 1.0)
    return n_out


def _kind(sig: dict, loose: bool = False) -> str:
    """Ops of one kind differ only in sizes: same op, version, dtypes, quantization and options but shapes.
    `loose`: the fused activation does not count (a ReLU6 conv scaled from ReLU ones: the activation is a clamp
    folded into the output loop, a small share of the op's time)."""
    options = {k: v for k, v in sig["options"].items() if not (loose and k == "fusedActivationFunction")}
    return json.dumps([sig["op"], sig["version"], [(t or {}).get("dtype") for t in sig["inputs"]],
                       [(t or {}).get("quant") for t in sig["inputs"]], options], sort_keys=True)


def _scaled(points: list[tuple[float, float]], cost: float) -> tuple[float, float]:
    """Latency at `cost` from measured (cost, ms) points of the same kind: linear between the two that bracket it
    (a fixed part and a part that grows with size), proportional to the nearest one outside their range.
    Returns (ms, the nearest measured ms)."""
    nearest = min(points, key=lambda cm: abs(np.log(cm[0] / cost)))
    below = [p for p in points if p[0] <= cost]
    above = [p for p in points if p[0] >= cost]
    if below and above and below[-1][0] != above[0][0]:
        (c0, m0), (c1, m1) = below[-1], above[0]
        return m0 + (m1 - m0) * (cost - c0) / (c1 - c0), nearest[1]
    return nearest[1] * cost / nearest[0], nearest[1]


def _kernel_scale(entries: dict, kernels: set[str]) -> float:
    grid: dict[str, list[tuple[float, float]]] = {}
    for k in kernels:
        grid.setdefault(_kind(entries[k]["signature"]), []).append((_cost(entries[k]["signature"]),
                                                                    entries[k]["p50_ms"]))
    ratios = []
    for k, e in entries.items():
        points = grid.get(_kind(e["signature"])) if k not in kernels else None
        if points and len(points) >= 2:
            ratios.append(e["p50_ms"] / _scaled(sorted(points), _cost(e["signature"]))[0])
    return float(np.median(ratios)) if len(ratios) >= 3 else 1.0


@dataclass
class OpTable:
    """A board's per-op latencies (one thread count and delegate), indexed for estimates."""
    entries: dict  # sig_key -> {"signature", "p50_ms", ...}
    by_kind: dict[str, list[tuple[float, float]]]

    kernel_scale: float = 1.0  # applied to kernel-grid ops (see `of`)

    @classmethod
    def of(cls, store: Store, board: str, threads: int = 1, delegate: str = "xnnpack") -> OpTable:
        """The table, with kernel-grid ops (`lut build`) put on the scale of ops cut from real models: measured in
        another run, as the first op of a tiny model, they came out ~14% faster than model ops of the same kind and
        size (tools/bench_predict.py --lut), while the whole-model calibration is fitted on the model ops.  The
        factor is the median ratio of model ops to the kernel grid interpolated at their size (1 without both)."""
        entries = store.op_latencies(board, threads, delegate)
        kernels = store.kernel_only_ops(board) & set(entries)
        scale = _kernel_scale(entries, kernels)
        if scale != 1.0:
            entries = {k: ({**e, "p50_ms": e["p50_ms"] * scale} if k in kernels else e) for k, e in entries.items()}
        by_kind: dict[str, list[tuple[float, float]]] = {}
        for e in entries.values():
            for loose in (False, True):
                by_kind.setdefault(("~" if loose else "") + _kind(e["signature"], loose), []).append(
                    (_cost(e["signature"]), e["p50_ms"]))
        return cls(entries, {k: sorted(v) for k, v in by_kind.items()}, scale)

    def estimate(self, signature: dict, sig_key: str | None = None) -> tuple[float, str, float | None]:
        """(ms, how, the nearest measured ms): measured by signature, scaled from ops of its kind, or missing."""
        key = sig_key or sig_key_of(signature)
        if key in self.entries:
            return self.entries[key]["p50_ms"], "measured", None
        near = self.by_kind.get(_kind(signature)) or self.by_kind.get("~" + _kind(signature, loose=True))
        if not near:
            return 0.0, "missing", None
        ms, base = _scaled(near, _cost(signature))
        return ms, "scaled", base


@dataclass
class OpEstimate:
    index: int
    op: str
    layer: str | None
    ms: float
    how: str  # "measured" (its signature is in the table), "scaled" (from the closest op of its kind), "missing"
    from_ms: float | None = None


@dataclass
class Prediction:
    model: str
    board: str
    threads: int
    delegate: str
    ms: float  # predicted p50: sum of ops + overhead
    ops_ms: float
    overhead_ms: float
    overhead_from: int  # models the overhead was fitted on
    measured_share: float  # of ops_ms
    scaled_share: float
    missing: list[str] = field(default_factory=list)
    ops: list[OpEstimate] = field(default_factory=list)
    kernel_scale: float = 1.0  # kernel-grid ops were multiplied by this to match ops cut from models

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self)


def fit_overhead(store: Store, board: str, threads: int, delegate: str, table: dict,
                 exclude: str | None = None) -> tuple[float, float, int]:
    """How a whole model relates to the sum of its ops timed alone, on this configuration: whole = a + k * sum.
    Measured: each op alone runs ~10% slower than inside its model (its input arrives cold; the whole model keeps
    activations in cache), which a constant per model cannot express.  Fitted (least squares) on the models
    measured both whole and op by op, `exclude` left out, when there are 4 or more of different sizes; else the
    median ratio k = whole / sum with a = 0 (two noisy points make a line that extrapolates badly); (0, 1) with
    none.  Returns (a, k, models)."""
    per_model: dict[str, list[float]] = {}
    for r in store.rows(board=board, columns=("model_sha256", "threads", "delegate", "p50_ms")):
        if r["threads"] == threads and r["delegate"] == delegate and r["p50_ms"] is not None and \
                r["model_sha256"] != exclude:
            per_model.setdefault(r["model_sha256"], []).append(r["p50_ms"])
    pts = []
    for sha, p50s in per_model.items():  # one point per model: the median of its repeats
        ops = store.ops_of(sha)
        if ops and all(o.sig_key in table for o in ops):
            pts.append((sum(table[o.sig_key]["p50_ms"] for o in ops), float(np.median(p50s))))
    if not pts:
        return 0.0, 1.0, 0
    sums = np.array([p[0] for p in pts])
    whole = np.array([p[1] for p in pts])
    if len(pts) >= 4 and np.ptp(sums) > 0.5 * float(np.max(sums)):  # a line only from enough, spread models
        k, a = np.polyfit(sums, whole, 1)
        return float(a), float(k), len(pts)
    return 0.0, float(np.median(whole / sums)), len(pts)


def predict(store: Store, model_path: str | Path, board: str, threads: int = 1,
            delegate: str = "xnnpack", exclude_self: bool = False, table: OpTable | None = None) -> Prediction:
    """`exclude_self`: the model's own whole-model measurements do not enter the overhead fit (to test the
    predictor on a model whose ops are in the table).  `table`: this configuration's OpTable, when the caller
    predicts many models (read from the store otherwise)."""
    table = table or OpTable.of(store, board, threads, delegate)
    estimates, missing = [], []
    for o in cut(Path(model_path).read_bytes()):
        ms, how, base = table.estimate(o.signature, o.sig_key)
        estimates.append(OpEstimate(o.index, o.op, o.layer, ms, how, base))
        if how == "missing":
            missing.append(f"{o.index}:{o.op}")
    ops_ms = sum(e.ms for e in estimates)
    a, k, n = fit_overhead(store, board, threads, delegate, table.entries,
                           exclude=read_model(model_path).sha256 if exclude_self else None)
    overhead = a + (k - 1.0) * ops_ms  # whole = a + k * sum of ops
    measured = sum(e.ms for e in estimates if e.how == "measured")
    scaled = sum(e.ms for e in estimates if e.how == "scaled")
    return Prediction(model=str(model_path), board=board, threads=threads, delegate=delegate,
                      ms=max(0.0, ops_ms + overhead), ops_ms=ops_ms, overhead_ms=overhead, overhead_from=n,
                      measured_share=measured / ops_ms if ops_ms else 0.0,
                      scaled_share=scaled / ops_ms if ops_ms else 0.0, missing=missing, ops=estimates,
                      kernel_scale=table.kernel_scale)
