"""The latency table: rows are models, columns boards x threads, cells p50 (p90) in ms."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from statistics import median

from .report_text import table


def build(rows: list[dict]) -> tuple[list[str], list[str], dict]:
    """(model labels, column labels, {(model, column): cell dict}) from ok store rows."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["model_name"].startswith("op-"):  # single-op models: `edgekit table --ops MODEL` shows them
            continue
        where = Path(r["manifest_path"]).parent.name if r.get("manifest_path") else r["model_sha256"][:8]
        model = f"{r['model_name']} ({where})"
        col = f"{r['board']} t{r['threads']}" + ("" if r["delegate"] == "xnnpack" else f" {r['delegate']}") + (
            " (emulated)" if r.get("emulated") else "")
        groups.setdefault((model, col), []).append(r)
    cells = {}
    for key, rs in groups.items():
        exact = all(r["p50_ms"] is not None for r in rs)  # benchmark_model (Android) reports only a mean
        cells[key] = {"p50_ms": median(_or_mean(r, "p50_ms") for r in rs),
                      "p90_ms": median(_or_mean(r, "p90_ms") for r in rs), "exact": exact,
                      "runs": sum(r["n_runs"] or 0 for r in rs), "repeats": len(rs),
                      "throttled": any(r["throttled"] for r in rs)}
    models = sorted({k[0] for k in cells})
    cols = sorted({k[1] for k in cells})
    return models, cols, cells


def _or_mean(r: dict, col: str) -> float:
    return r[col] if r[col] is not None else r["mean_ms"]


def format_cell(cell: dict | None, flag: str = " !") -> str:
    """p50 (p90), `~mean` where only a mean exists, with `flag` appended when measured throttled."""
    if cell is None:
        return "-"
    flag = flag if cell["throttled"] else ""
    if not cell["exact"]:
        return f"~{cell['p50_ms']:.3g} (mean){flag}"
    return f"{cell['p50_ms']:.3g} ({cell['p90_ms']:.3g}){flag}"


def render(rows: list[dict], fmt: str = "table") -> str:
    models, cols, cells = build(rows)
    if fmt == "json":
        return json.dumps([{"model": m, "column": c, **cells[(m, c)]} for m in models for c in cols
                           if (m, c) in cells], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["model", "column", "p50_ms", "p90_ms", "runs", "repeats", "throttled"])
        for m in models:
            for c in cols:
                if (m, c) in cells:
                    x = cells[(m, c)]
                    w.writerow([m, c, f"{x['p50_ms']:.6f}", f"{x['p90_ms']:.6f}", x["runs"], x["repeats"],
                                int(x["throttled"])])
        return buf.getvalue().rstrip("\n")
    body = [[m] + [format_cell(cells.get((m, c))) for c in cols] for m in models]
    if fmt == "md":
        lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        note = "\n\ncells: p50 (p90) ms; `!` = measured while the board was hot or throttled; " \
            "(emulated) = measured under emulation, not the hardware's latency"
        return "\n".join(lines) + note
    if not body:
        return "no measurements yet"
    return table(["model", *cols], body) + "\n\ncells: p50 (p90) ms; ! = measured while hot or throttled" + (
        "; (emulated) = measured under emulation, not the hardware's latency" if any("(emulated)" in c for c in cols)
        else "")
