"""`edgekit report`: a self-contained HTML page (images inlined, no network) plus Markdown, from the store and the
manifests it has seen."""
from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .errors import ConfigError
from .latency_table import build, format_cell, render
from .manifest import load_manifest

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1f2328;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.3em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #d0d7de;padding:.3em .6em;
text-align:right}th{background:#f6f8fa}td.l,th.l{text-align:left}.bad{color:#d1242f}.ok{color:#1a7f37}.over{color:#8c959f}
.choice{background:#ddf4ff;border-left:4px solid #0969da;padding:.6em 1em;margin:.8em 0}.note{color:#57606a}
img{max-width:100%;border:1px solid #d0d7de}code{background:#f6f8fa;padding:0 .2em}"""


def _table_html(headers: list[str], rows: list[list], left: int = 1, left_cols: tuple = ()) -> str:
    def cls(i):
        return "l" if i < left or i in left_cols else ""
    head = "".join(f'<th class="{cls(i)}">{html.escape(str(h))}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{cls(i)}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _md_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _board_section(store, board: str, rows: list[dict], out: Path):
    from .plot import pareto_plot
    from .select import select
    models, cols, cells = build(rows)
    flag = ' <span class="bad">!</span>'
    lat_rows = [[html.escape(m)] + [format_cell(cells.get((m, c)), flag) for c in cols] for m in models]
    emulated = any(r.get("emulated") for r in rows)
    mark = " (emulated: these latencies are the emulator's, not the hardware's)" if emulated else ""
    h = [f"<h2>Board {html.escape(board)}{html.escape(mark)}</h2>", _table_html(["model", *cols], lat_rows)]
    md = [f"## Board {board}{mark}", "", render(rows, "md"), ""]
    manifests = sorted({r["manifest_path"] for r in rows if r["manifest_path"]}) or [None]
    for mpath in manifests:
        scope = f" for {Path(mpath).parent.name}" if mpath else ""
        try:
            decision = select(store, board=board, manifests=[mpath] if mpath else None)
        except ConfigError as e:
            h.append(f'<p class="note">No selection{html.escape(scope)}: {html.escape(str(e))}</p>')
            md.append(f"No selection{scope}: {e}\n")
            continue
        png = out / f"pareto-{board}{'-' + Path(mpath).parent.name if mpath else ''}.png"
        pareto_plot(decision, png)
        b64 = base64.b64encode(png.read_bytes()).decode()
        c = decision.chosen
        choice = f"{c.variant} with {c.threads} thread{'s' if c.threads > 1 else ''} ({c.delegate})" if c else "none"
        h.append(f'<h3>Variants{html.escape(scope)}</h3><div class="choice"><b>Chosen: {html.escape(choice)}</b>'
                 f'<br>{html.escape(decision.reason)}</div>')
        h.append(f'<img alt="accuracy vs latency on {html.escape(board)}" src="data:image/png;base64,{b64}">')
        md += [f"### Variants{scope}", "", f"**Chosen: {choice}** - {decision.reason}", "",
               f"![accuracy vs latency]({png.name})", ""]
        for n in decision.notes:
            h.append(f'<p class="note">{html.escape(n)}</p>')
    fp = json.loads(rows[-1]["fingerprint"] or "{}") if rows else {}
    temps = fp.get("temperatures_c") or {}
    facts: list[list] = [["host", fp.get("hostname")], ["CPU", f"{fp.get('cpu_model')} ({fp.get('cpu_count')} cores)"],
             ["OS", fp.get("os")], ["emulation", fp.get("emulation") or ("none" if fp else None)],
             ["kernel", fp.get("kernel")], ["governor / clock", f"{fp.get('governor')} / {fp.get('cpu_freq_khz')} kHz"],
             ["runtime", f"{(fp.get('runtime') or {}).get('name')} {(fp.get('runtime') or {}).get('version')}"],
             ["Python / numpy", f"{fp.get('python')} / {fp.get('numpy')}"],
             ["temperature after", f"{max(temps.values()):.1f} C" if temps else "n/a"],
             ["throttled bits", fp.get("throttled_bits")], ["Jetson power mode", fp.get("jetson_power_mode")]]
    throttled = sum(1 for r in rows if r["throttled"])
    cooled = [r["cooled_s"] for r in rows if r.get("cooled_s")]
    note = (f"{throttled} of {len(rows)} measurements taken while hot or throttled (flagged !)" if throttled
            else "no measurement was taken while throttled")
    if cooled:
        note += f"; waited {sum(cooled):.0f} s in total for the board to cool"
    facts = [[k, "n/a" if v is None or "None" in str(v) else v] for k, v in facts]
    h += ["<h3>Fingerprint</h3>", _table_html(["", ""], [[html.escape(k), html.escape(str(v))] for k, v in facts], 2),
          f'<p class="note">{html.escape(note)}</p>']
    md += ["### Fingerprint", "", _md_table(["", ""], facts), "", note, ""]
    return "\n".join(h), "\n".join(md)


def _variants_section(manifest_paths: list[str]):
    h, md = ["<h2>Variants</h2>"], ["## Variants", ""]
    headers = ["variant", "device", "accuracy", "bytes", "gzip", "sparsity", "min runtime", "fits", "ops", "problems"]
    rows_h, rows_m = [], []
    for p in manifest_paths:
        try:
            m = load_manifest(p)
        except ConfigError:
            continue
        for v in m.variants:
            ops = ", ".join(f"{o['op']} v{o['version']}" for o in v.ops)
            acc = f"{v.accuracy:.4f}" if v.accuracy is not None else "-"
            fits = "yes" if v.compatible else "no"
            over = v.within_budget is False
            notes = "; ".join(v.problems + ([f"OVER BUDGET: {v.accuracy_drop:+.2f} pts (max {v.max_drop:g})"]
                                            if over else [])) or "-"
            row = [v.name, m.device, acc, f"{v.bytes:,}", f"{v.gzip_bytes:,}", f"{v.sparsity:.1%}",
                   v.min_runtime_version or "?", fits, ops, notes]
            rows_m.append(row)
            esc = [html.escape(str(c)) for c in row]
            esc[7] = f'<span class="{"ok" if v.compatible else "bad"}">{fits}</span>'
            if over:  # greyed: kept for reference, never chosen unless asked
                esc = [f'<span class="over">{c}</span>' for c in esc]
            rows_h.append(esc)
    h.append(_table_html(headers, rows_h, 2, left_cols=(8, 9)))
    md.append(_md_table(headers, rows_m))
    return "\n".join(h), "\n".join(md)


def write_report(store, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = store.rows()
    if not rows:
        raise ConfigError(f"the store {store.path} has no successful measurements yet")
    boards = sorted({r["board"] for r in rows})
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgekit report</title><style>{CSS}</style>"
         f"</head><body><h1>edgekit report</h1><p class='note'>{len(rows)} measurements on {len(boards)} boards, "
         f"store {html.escape(str(store.path))}, generated {when} by edgekit {__version__}. Cells: p50 (p90) ms; "
         f"! = measured while hot or throttled.</p>"]
    md = ["# edgekit report", "", f"{len(rows)} measurements on {len(boards)} boards, generated {when}.", ""]
    for b in boards:
        bh, bm = _board_section(store, b, [r for r in rows if r["board"] == b], out)
        h.append(bh)
        md.append(bm)
    vh, vm = _variants_section(sorted({r["manifest_path"] for r in rows if r["manifest_path"]}))
    h += [vh, "</body></html>"]
    md.append(vm)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text("\n".join(h))
    md_path.write_text("\n".join(md) + "\n")
    return html_path, md_path
