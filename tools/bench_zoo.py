"""Models we did not design, through a device's default recipes: per model x recipe, ok / failed (why),
accuracy drop vs Keras, gzip ratio vs fp32, wall time.

    python tools/bench_zoo.py --models MobileNetV3Small,EfficientNetB0 --devices rpi4,coral-usb [--keras3]
        [--results zoo.jsonl --work zoo-work]

The whole grid (8 families x 2 Keras versions x 2 devices) takes many hours on a small machine: with `--results`,
each finished (model, Keras version, device) run appends its rows there and a rerun skips what is already in it,
so the grid fills up over several sittings (give the same `--work` folder to keep the same trained models); the
table printed covers every row in the file, followed by the issue's goals (no failed run; int8, plain or
selective, within 1.0 point; a model's Keras 3 twin within 0.5 point of it, variant by variant).

Models come from tools/zoo.py (keras.applications with weights=None at a small input, plus the odd-layers model),
trained briefly on sklearn's digits upscaled to RGB; nothing is downloaded.  With --keras3, the Keras 3 version
of an application is the trained tf_keras model's twin (weights copied, outputs checked equal), so both start
from the same reference."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo


def build(name: str, size: int, epochs: int, keras3: bool, folder: Path) -> Path:
    """The trained model's file in `folder` (kept there: a rerun reuses it).  The Keras 3 version of an
    application is the tf_keras model's twin (same weights, same outputs), so the two can be compared variant by
    variant; the odd-layers model is built and trained in each Keras separately (its hard-swish differs)."""
    path = folder / f"{name}-e{epochs}{'-k3' if keras3 else ''}.keras"
    if path.exists():
        return path
    if keras3 and name != "odd":
        import tf_keras
        plain = tf_keras.models.load_model(build(name, size, epochs, False, folder), compile=False)
        model = zoo.keras3_twin(plain, name, size)
    else:
        model = zoo.odd_layers(size, keras3=keras3) if name == "odd" else zoo.application(name, size, keras3=keras3)
        zoo.train(model, size, epochs=epochs, keras3=keras3, pixels=zoo.scale(name))
    model.save(path.with_suffix(".part.keras"))
    path.with_suffix(".part.keras").rename(path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="odd,MobileNetV3Small,EfficientNetB0")
    ap.add_argument("--devices", default="rpi4")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--keras3", action="store_true", help="also build each model with Keras 3")
    ap.add_argument("--recipes", default=None, help="comma-separated recipes (default: each device's defaults)")
    ap.add_argument("--plus", default="rpi4:int8-selective", help="recipes added to a device's defaults, as "
                    "DEVICE:RECIPE,... (default: int8-selective on rpi4, the fallback when plain int8 loses accuracy)")
    ap.add_argument("--verbose", action="store_true", help="print each step line on stderr")
    ap.add_argument("--work", type=Path, help="folder for the data, trained models and outputs (default: a new "
                    "temporary folder); with --results, give the same folder to resume with the same models")
    ap.add_argument("--results", type=Path, help="JSON lines file: rows are appended per finished run, and runs "
                    "already in it are skipped (resumable)")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgekit import convert_for_device
    from edgekit.errors import EdgekitError
    from edgekit.profiles import load_profile
    plus: dict[str, list[str]] = {}
    for item in filter(None, args.plus.split(",")):
        dev, _, recipe = item.partition(":")
        plus.setdefault(dev, []).append(recipe)

    def recipes(device: str) -> list[str] | None:
        if args.recipes:
            return args.recipes.split(",")
        return list(load_profile(device).default_recipes) + plus.get(device, []) if device in plus else None
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-zoo-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[list] = []
    refs: dict[tuple[str, str], float | None] = {}
    finished = set()
    if args.results and args.results.is_file():
        for line in args.results.read_text().splitlines():
            rec = json.loads(line)
            finished.add((rec["model"], rec["device"], rec.get("epochs")))
            rows.extend(rec["rows"])
            refs[rec["model"], rec["device"]] = rec.get("reference")
    for name in args.models.split(","):
        for k3 in ([False, True] if args.keras3 else [False]):
            size = 16 if name == "odd" else args.size
            tr, te = zoo.write_npz(work / f"d{size}-{zoo.scale(name):.0f}", size, zoo.scale(name))
            label = f"{name}{' (Keras 3)' if k3 else ''}"
            todo = [d for d in args.devices.split(",") if (label, d, args.epochs) not in finished]
            if not todo:
                continue
            path = build(name, size, args.epochs, k3, work)
            # searches are remembered across devices (edgekit's cache), but not from the tf_keras model for its
            # Keras 3 twin: each Keras version's TF-MOT path runs on its own
            os.environ["EDGEKIT_CACHE"] = str(work / ("cache-keras3" if k3 else "cache-tf_keras"))
            for device in todo:
                t0 = time.perf_counter()
                done = len(rows)
                try:
                    m = convert_for_device(path, device, recipes(device), train=tr,
                                           eval=te, out=work / f"{path.stem}-{device}", keep_going=True,
                                           overwrite=True,
                                           log=(lambda s: print(s, file=sys.stderr, flush=True)) if args.verbose
                                           else (lambda s: None))
                except Exception as e:  # a defect of ours is a row too, and the grid goes on
                    secs = time.perf_counter() - t0
                    if isinstance(e, EdgekitError):
                        what, text = "RUN FAILED", str(e)
                    else:
                        traceback.print_exc()
                        what, text = "RUN CRASHED", f"{type(e).__name__}: {e}"
                    rows.append([label, device, what, text[:80], "", "", f"{secs:.0f}", ""])
                    _record(args.results, label, device, args.epochs, None, secs, rows[done:])
                    continue
                secs = time.perf_counter() - t0
                refs[label, device] = m.reference_keras_accuracy
                fp32 = next((v for v in m.variants if v.quantization.get("mode") == "float32"), None)
                for v in m.variants:
                    ratio = f"{fp32.gzip_bytes / v.gzip_bytes:.1f}x" if fp32 else "-"
                    drop = "-" if v.accuracy_drop is None else f"{v.accuracy_drop:+.2f}"
                    flag = "ok" if v.within_budget is not False else "OVER"
                    peak = max((max(st.get("peak_rss_mb") or 0, st.get("child_peak_rss_mb") or 0) for st in v.steps),
                               default=0)
                    rows.append([label, device, v.name, flag, drop, ratio, f"{secs:.0f}", f"{peak:,.0f}"])
                for f in m.failed:
                    rows.append([label, device, f["recipe"], "FAILED: " + f["error"][:70], "", "", f"{secs:.0f}", ""])
                print(f"# {label} on {device}: reference {m.reference_keras_accuracy:.4f}, {secs:.0f} s", flush=True)
                for r in rows[done:]:  # as they come: a run cut short still leaves its finished models' rows
                    print("#   " + " | ".join(str(c) for c in r), flush=True)
                _record(args.results, label, device, args.epochs, m.reference_keras_accuracy, secs, rows[done:])
    head = ["model", "device", "recipe", "result", "drop pts", "gzip vs fp32", "run s", "peak MB"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print()
    for line in goals(rows, refs):
        print(line)
    return 0


def _record(results: Path | None, label: str, device: str, epochs: int, reference, secs: float, rows: list) -> None:
    if results:
        with results.open("a") as f:
            f.write(json.dumps({"model": label, "device": device, "epochs": epochs, "reference": reference,
                                "seconds": round(secs), "rows": rows}) + "\n")


INT8 = ("int8", "int8-selective", "int8-edgetpu")


def goals(rows: list[list], refs: dict) -> list[str]:
    """The issue's goals over the rows: runs and recipes failed, int8 (plain or selective) within 1.0 point,
    Keras 3 twin vs tf_keras within 0.5 point per variant."""
    out = []
    runs = {(r[0], r[1]) for r in rows}
    failed_runs = sorted({(r[0], r[1]) for r in rows if r[2] in ("RUN FAILED", "RUN CRASHED")})
    failed = [r for r in rows if str(r[3]).startswith("FAILED")]
    out.append(f"{'ok  ' if not failed_runs else 'MISS'} runs: {len(runs)}, failed {len(failed_runs)}"
               + "".join(f"; {m} on {d}" for m, d in failed_runs))
    unnamed = [r for r in failed if "layer" not in str(r[3])]
    out.append(f"{'ok  ' if not unnamed else 'MISS'} recipes failed alone: {len(failed)}, {len(unnamed)} without "
               "naming a layer" + "".join(f"; {r[0]} {r[1]} {r[2]}" for r in failed))
    for model, device in sorted(runs - set(failed_runs)):
        drops = {r[2]: float(r[4]) for r in rows if (r[0], r[1]) == (model, device) and r[2] in INT8
                 and r[4] not in ("", "-")}
        if drops:
            best = min(drops, key=lambda k: drops[k])
            out.append(f"{'ok  ' if drops[best] <= 1.0 else 'MISS'} int8 {model} on {device}: {best} "
                       f"{drops[best]:+.2f} pts (goal <= 1.0)")
    for model, device in sorted(runs):
        if model.endswith(" (Keras 3)") or (model + " (Keras 3)", device) not in runs:
            continue
        twin = model + " (Keras 3)"
        a = {r[2]: r[4] for r in rows if (r[0], r[1]) == (model, device) and r[4] not in ("", "-")}
        b = {r[2]: r[4] for r in rows if (r[0], r[1]) == (twin, device) and r[4] not in ("", "-")}
        gaps = {k: abs(float(a[k]) - float(b[k])) for k in a if k in b}
        if not gaps:
            continue
        worst = max(gaps, key=lambda k: gaps[k])
        same_ref = refs.get((model, device)) == refs.get((twin, device))
        out.append(f"{'ok  ' if gaps[worst] <= 0.5 else 'MISS'} Keras 3 vs tf_keras {model} on {device}: worst "
                   f"{worst} {gaps[worst]:.2f} pts apart over {len(gaps)} variants (goal <= 0.5)"
                   + ("" if same_ref else f"; references differ: {refs.get((model, device))} vs "
                      f"{refs.get((twin, device))}"))
    return out


if __name__ == "__main__":
    sys.exit(main())
