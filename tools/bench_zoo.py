"""Models we did not design, through a device's default recipes: per model x recipe, ok / failed (why),
accuracy drop vs Keras, gzip ratio vs fp32, wall time.

    python tools/bench_zoo.py --models MobileNetV3Small,EfficientNetB0 --devices rpi4,coral-usb [--keras3]
        [--results zoo.jsonl]

The whole grid (8 families x 2 Keras versions x 2 devices) takes many hours on a small machine: with `--results`,
each finished (model, Keras version, device) run appends its rows there and a rerun skips what is already in it,
so the grid fills up over several sittings; the table printed covers every row in the file.

Models come from tools/zoo.py (keras.applications with weights=None at a small input, plus the odd-layers model),
trained briefly on sklearn's digits upscaled to RGB; nothing is downloaded."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo


def build(name: str, size: int, epochs: int, keras3: bool, folder: Path) -> Path:
    model = zoo.odd_layers(size, keras3=keras3) if name == "odd" else zoo.application(name, size, keras3=keras3)
    zoo.train(model, size, epochs=epochs, keras3=keras3, pixels=zoo.scale(name))
    path = folder / f"{name}{'-k3' if keras3 else ''}.keras"
    model.save(path)
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
    work = Path(tempfile.mkdtemp(prefix="bench-zoo-"))
    rows: list[list] = []
    finished = set()
    if args.results and args.results.is_file():
        for line in args.results.read_text().splitlines():
            rec = json.loads(line)
            finished.add((rec["model"], rec["device"], rec.get("epochs")))
            rows.extend(rec["rows"])
    for name in args.models.split(","):
        for k3 in ([False, True] if args.keras3 else [False]):
            size = 16 if name == "odd" else args.size
            tr, te = zoo.write_npz(work / f"d{size}-{zoo.scale(name):.0f}", size, zoo.scale(name))
            label = f"{name}{' (Keras 3)' if k3 else ''}"
            todo = [d for d in args.devices.split(",") if (label, d, args.epochs) not in finished]
            if not todo:
                continue
            path = build(name, size, args.epochs, k3, work)
            for device in todo:
                t0 = time.perf_counter()
                done = len(rows)
                try:
                    m = convert_for_device(path, device, recipes(device), train=tr,
                                           eval=te, out=work / f"{path.stem}-{device}", keep_going=True,
                                           log=(lambda s: print(s, file=sys.stderr, flush=True)) if args.verbose
                                           else (lambda s: None))
                except EdgekitError as e:
                    rows.append([label, device, "RUN FAILED", str(e)[:80], "", "", f"{time.perf_counter() - t0:.0f}",
                                 ""])
                    continue
                secs = time.perf_counter() - t0
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
                if args.results:
                    with args.results.open("a") as f:
                        f.write(json.dumps({"model": label, "device": device, "epochs": args.epochs,
                                            "reference": m.reference_keras_accuracy, "seconds": round(secs),
                                            "rows": rows[done:]}) + "\n")
    head = ["model", "device", "recipe", "result", "drop pts", "gzip vs fp32", "run s", "peak MB"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
