"""`edgekit table --ops MODEL`: per op, its latency on each board configuration, its share, its Keras layer."""
from __future__ import annotations

import json
from statistics import median
from pathlib import Path

from .errors import ConfigError
from .flatbuffer import read_model
from .report_text import table


def ops_table(store, model: str | Path, board: str | None = None, fmt: str = "table") -> str:
    sha = read_model(model).sha256
    ops = store.ops_of(sha)
    if not ops:
        raise ConfigError(f"{model}: no per-op profile in {store.path} (run `edgekit profile --ops {model} ...`)")
    rows = store.rows(board=board, columns=("model_sha256", "board", "threads", "delegate", "p50_ms"))
    configs = sorted({(r["board"], r["threads"], r["delegate"]) for r in rows
                      if r["model_sha256"] in {o.model_sha256 for o in ops}})
    lat: dict[tuple, list[float]] = {}
    for r in rows:
        lat.setdefault((r["model_sha256"], r["board"], r["threads"], r["delegate"]), []).append(r["p50_ms"])
    whole = {c: lat.get((sha, *c)) for c in configs}
    cols = [f"{b} t{t}" + ("" if d == "xnnpack" else f" {d}") for b, t, d in configs]
    out_rows, data = [], []
    sums = {c: 0.0 for c in configs}
    for o in ops:
        cells = []
        for c in configs:
            v = lat.get((o.model_sha256, *c))
            ms = median(v) if v else None
            if ms is not None:
                sums[c] += ms
            cells.append(ms)
        out = [t for t in o.signature["outputs"] if t]
        shape = "x".join(map(str, out[0]["shape"])) if out else "-"
        data.append({"index": o.op_index, "op": o.op, "layer": o.layer, "output": shape, "why": o.why,
                     "p50_ms": dict(zip(cols, cells))})
        out_rows.append([str(o.op_index), o.op, o.layer or "-", shape] +
                        [f"{ms:.3g}" if ms is not None else ("n/a" if o.why else "-") for ms in cells])
    if fmt == "json":
        return json.dumps({"model": str(model), "ops": data, "sum_ms": dict(zip(cols, sums.values())),
                           "whole_ms": {col: (median(w) if w else None)
                                        for col, w in zip(cols, whole.values())}}, indent=2)
    first = sums[configs[0]] if configs else 0.0
    for row, d in zip(out_rows, data):  # the share of the ops' sum, in the first configuration
        ms = d["p50_ms"].get(cols[0]) if cols else None
        row.insert(4, f"{ms / first:.0%}" if first and ms is not None else "-")
    text = table(["#", "op", "layer", "output", "share"] + cols, out_rows, "rllll" + "r" * len(cols))
    foot = []
    for col, c in zip(cols, configs):
        w = whole[c]
        w_ms = median(w) if w else None
        foot.append(f"{col}: sum of ops {sums[c]:.3g} ms" + (f", whole model {w_ms:.3g} ms (per-model overhead "
                                                               f"{w_ms - sums[c]:+.3g} ms)" if w_ms else ""))
    return text + "\n\n" + "\n".join(foot) + "\n(cells: p50 ms of the op alone; share: of the sum of ops, first column)"
