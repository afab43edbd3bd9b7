"""Plain-text tables for the terminal (no dependencies)."""
from __future__ import annotations


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    cells = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def fmt(row):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align))
    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def manifest_table(manifest) -> str:
    fp32 = next((v for v in manifest.variants if v.quantization.get("mode") == "float32"), None)
    rows = []
    for v in manifest.variants:
        ratio = f"{fp32.gzip_bytes / v.gzip_bytes:.1f}x" if fp32 else ""
        drop = "-" if v.accuracy_drop is None else f"{v.accuracy_drop:+.2f}" + ("" if v.within_budget else " OVER")
        notes = "; ".join(v.problems + v.warnings)
        rows.append([v.name, f"{v.accuracy:.4f}" if v.accuracy is not None else "-", drop,
                     f"{v.bytes:,}", f"{v.gzip_bytes:,}", ratio, f"{v.sparsity:.1%}",
                     v.min_runtime_version or "?", "yes" if v.compatible else "NO",
                     notes[:110] + ("…" if len(notes) > 110 else "")])
    return table(["variant", "accuracy", "drop pts", "bytes", "gzip", "vs fp32", "sparsity", "min rt", "fits",
                  "problems / warnings"], rows, "lrrrrrrrll")


def _tile(p) -> str:
    if p.channel_multiple != "auto":
        return str(p.channel_multiple)
    from .compress.kernels import host_channel_multiple
    return f"auto ({host_channel_multiple()})"


def devices_table(profiles) -> str:
    rows = [[p.name, p.arch, f"{p.runtime.name} {p.runtime.version}", ",".join(p.delegates),
             ",".join(map(str, p.threads)), ",".join(p.quant_modes), _tile(p), ",".join(p.default_recipes)]
            for p in profiles]
    return table(["device", "arch", "runtime", "delegates", "threads", "quantization", "ch tile", "default recipes"],
                 rows, "llllllll")


def recipes_table(recipes) -> str:
    rows = [[r.name, r.mode, r.io, "+".join(r.steps) or "-", r.qat_scheme or "-", ",".join(r.post) or "-",
             r.description] for r in recipes]
    return table(["recipe", "mode", "io", "optimize", "qat scheme", "post", "description"], rows, "lllllll")


def inspect_text(info, report: dict) -> str:
    """`report` is `compat.describe(...)`'s dict for the same model."""
    out = [f"{info.path}: {info.bytes:,} bytes ({info.gzip_bytes:,} gzip), sha256 {info.sha256[:16]}…, "
           f"min runtime {info.min_runtime_version or '?'}",
           f"weights: {len(info.weights)} tensors, sparsity {info.sparsity:.1%}, "
           f"max distinct values per channel {info.max_unique_per_channel}",
           table(["op", "version", "count"], [[o["op"], o["version"], o["count"]] for o in info.ops]), ""]
    rows = [[role, t.name, "x".join(map(str, t.shape)), t.dtype, t.scale, t.zero_point]
            for role, ts in (("input", info.inputs), ("output", info.outputs)) for t in ts]
    out.append(table(["io", "name", "shape", "dtype", "scale", "zero point"], rows, "llllrr"))
    dev = report.get("device")
    if dev:
        out.append(f"\n{dev['name']}: {'compatible' if dev['compatible'] else 'NOT compatible'}")
        out += [f"  problem: {p}" for p in dev["problems"]] + [f"  warning: {w}" for w in dev["warnings"]]
    return "\n".join(out)


def boards_table(boards) -> str:
    return table(["board", "host", "port", "user", "profile", "python"],
                 [[b.name, b.host or "(this machine)", b.port or "", b.user or "", b.profile, b.python]
                  for b in boards], "llrlll")


def boards_check_table(reports: list[dict]) -> str:
    rows = [[r["board"], "yes" if r["reachable"] else "NO", r.get("python") or "-", r.get("runtime") or "-",
             ",".join(r.get("delegates") or []) or "-", (r.get("cpu") or "-")[:30], r.get("memory_mb") or "-",
             r.get("throttling") or "-",
             "; ".join(([r["error"][:80]] if r.get("error") else []) + (["emulated"] if r.get("emulated") else [])
                       + list(r.get("warnings") or []))] for r in reports]
    return table(["board", "reachable", "python", "runtime", "delegates", "cpu", "mem MB", "thermal", "notes"],
                 rows, "lllllllll")


def decision_text(d) -> str:
    rows = []
    for c in d.candidates:
        ci = f"{c.ci_low_ms:.3g}-{c.ci_high_ms:.3g}" if c.ci_low_ms is not None else "-"
        mark = "*" if d.chosen is c else ("front" if c.on_front else "")
        rows.append([mark, c.label, c.board, f"{c.accuracy:.4f}" if c.accuracy is not None else "-",
                     f"{c.latency_ms:.3g}", ci, f"{c.bytes:,}", ",".join(c.failed) or "ok",
                     " ".join(w for w, on in (("straddles", c.straddles_budget), ("emulated", c.emulated),
                                                        ("predicted", c.predicted)) if on)])
    out = [table(["", "variant", "board", "accuracy", f"{d.percentile} ms", "95% CI", "bytes", "budget", ""],
                 rows, "lllrrrrll")]
    out += [f"note: {n}" for n in d.notes]
    head = f"chosen: {d.chosen.label} on {d.chosen.board}" if d.chosen else "no choice"
    return "\n".join(out) + f"\n\n{head} - {d.reason}"


def sensitivity_text(res: dict) -> str:
    rows = [[name, d["type"], f"{d['params']:,}"] + [f"{res['baseline'] - a:+.4f}" for a in d["accuracy"]]
            for name, d in res["layers"].items()]
    return (table(["layer", "type", "weights", *[f"drop @{s:g}" for s in res["sparsities"]]], rows,
                  "llr" + "r" * len(res["sparsities"]))
            + f"\n\nbaseline accuracy {res['baseline']:.4f} ({res['method']}, one-shot, no fine-tuning)"
            + (" - cached" if res.get("cached") else ""))
