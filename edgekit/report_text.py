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
        rows.append([v.name, f"{v.accuracy:.4f}" if v.accuracy is not None else "-",
                     f"{v.bytes:,}", f"{v.gzip_bytes:,}", ratio, f"{v.sparsity:.1%}",
                     v.min_runtime_version or "?", "yes" if v.compatible else "NO",
                     "; ".join(v.problems)[:90]])
    return table(["variant", "accuracy", "bytes", "gzip", "vs fp32", "sparsity", "min rt", "fits", "problems"],
                 rows, "lrrrrrrll")
