#!/usr/bin/env python3
"""Compression that keeps accuracy and pays on the board, for the digits CNN and a residual/depthwise/BN CNN.

    python tools/bench_compress.py [--only digits,residual,wide] [--runs 300] [--rounds 7]
    python tools/bench_compress.py --budget [--only digits,residual,mobilenetv2,odd,efficientnetb0] [--max-drop 1]

With --budget: per compressing recipe of the shipped defaults (strength `auto`, searched within the accuracy budget)
on models of four families, the chosen strength, gzip ratio vs fp32, drop on eval, within budget, trials and wall
time, then the goals (tools/bench_budget.py).

Models: the digits CNN (8x8), `residual` (BatchNorm + depthwise + residual blocks, width 32, 32x32 input) and `wide`
(the same blocks, width 128, 16x16 input). Per model: uniform vs sensitivity allocation vs sensitivity +
distillation at 80% and 90% sparsity (+16 clusters + PCQAT, int8): accuracy drop and gzip ratio against the float32
.tflite; and structured filter pruning to 50% of the MACs (int8, fine-tuned on the labels, and with distillation):
accuracy drop, MACs, and latency against the unpruned int8 model measured on the `local` board. Filter pruning keeps
channel counts at multiples of the `local` profile's int8 kernel tile (`channel_multiple: auto`, 64 on a CPU with
AMX); `digits` and `residual` have no channel group wider than 64 (only 16-64 channels), so on such a CPU they are
pruned at a tile of 8 instead (what an ARM board's kernels use) and the table shows what that buys here. For
`residual` and `wide` also latency-driven filter pruning (`target_latency: 0.6` on the `local` board, NetAdapt-
style), after building that board's op table (`lut build --like` the int8 model, plus the model's own ops; its cost
is printed). Goals: >= 8x gzip at <= 1.0 point drop; filter-pruned int8 >= 1.5x faster at <= 1.5 points drop;
latency-driven >= 1.5x at <= 1.0 point drop."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def recipes(tile, store: Path | None = None):
    from edgekit.optimize.steps import Cluster, Distill, Filters, Prune, Qat
    from edgekit.profiles import Recipe
    out = [Recipe("fp32", "reference", "float32", "float32"), Recipe("int8", "reference", "int8", "int8")]
    distill = Distill.of({"temperature": 4.0, "alpha": 0.3})
    for target in (0.8, 0.9):
        for label, alloc, dist in (("uniform", "uniform", None), ("sensitivity", "sensitivity", None),
                                   ("sens+distill", "sensitivity", distill)):
            out.append(Recipe(f"{label}-{int(target * 100)}", label, "int8", "int8",
                              prune=Prune.of({"target": target, "allocation": alloc, "schedule": "polynomial",
                                              "epochs": 4}),
                              cluster=Cluster.of({"clusters": 16, "init": "kmeans++", "epochs": 3}),
                              qat=Qat.of({"epochs": 3}),
                              distill=dist))
    for label, dist in (("filters-50", None), ("filters+distill-50", distill)):
        out.append(Recipe(label, "filters", "int8", "int8", distill=dist,
                          filters=Filters.of({"structure": "filters", "target_flops": 0.5, "epochs": 8,
                                              "channel_multiple": tile})))
    if store is not None:  # latency-driven: the `local` board's op table predicts each cut
        out.append(Recipe("filters-lat-60", "filters", "int8", "int8",
                          filters=Filters.of({"structure": "filters", "target_latency": 0.6, "board": "local",
                                              "store": str(store), "epochs": 8, "channel_multiple": tile})))
    return out


def op_table(reference: Path, store: Path, tile: int) -> str:
    """The `local` board's op table for latency-driven pruning: a kernel grid like the model (`lut build --like`)
    and the model's own ops; returns what it cost."""
    from edgekit.lut import build_models, grid_like, lut_folder, op_files
    from edgekit.predict import record_ops
    from edgekit.profiling.jobs import Settings, build_jobs, model_ref
    from edgekit.profiling.scheduler import Options, run_profile
    from edgekit.remote.inventory import local_board
    from edgekit.store import Store
    t0 = time.perf_counter()
    st = Store(store)
    models = build_models(grid_like(reference.read_bytes(), tile), lut_folder(st), progress=False)
    files, _ = op_files(st, models)
    own, _ = record_ops(st, reference)
    st.close()
    built = time.perf_counter() - t0
    run_profile(build_jobs([model_ref(f) for f in files + own + [reference]], [local_board()], [1], 3,
                           Settings(warmup=10, runs=50, min_seconds=0.05)), Options(store=str(store)))
    return (f"{len(models)} kernel models built in {built:.0f} s, {len(files) + len(own)} single-op models measured "
            f"in {time.perf_counter() - t0 - built:.0f} s")


def train(model, x, y, epochs):
    from edgekit._tf import keras
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def run_model(name, model, arrays, epochs, work: Path, runs: int, rounds: int, tile, latency: bool):
    from edgekit.data import Dataset
    from edgekit.pipeline import convert_for_device
    from edgekit.profiling.jobs import Settings, build_jobs, model_ref
    from edgekit.profiling.scheduler import Options, run_profile
    from edgekit.remote.inventory import local_board
    x_tr, y_tr, x_te, y_te = arrays
    t0 = time.perf_counter()
    train(model, x_tr, y_tr, epochs)
    path = work / f"{name}.keras"
    model.save(path)
    print(f"[{name}] trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    store = None
    if latency:
        from edgekit.compress.kernels import resolve
        from edgekit.profiles import Recipe, load_profile
        ref = convert_for_device(path, "local", [Recipe("int8", "reference", "int8", "int8")],
                                 calibration=Dataset(x_tr, y_tr, "train"), out=work / f"{name}-ref", log=lambda s: None)
        store = work / f"{name}-ops.db"
        int_tile = resolve(load_profile("local").channel_multiple) if tile == "device" else int(tile)
        cost = op_table(work / f"{name}-ref" / ref.variant("int8").path, store, int_tile)
        print(f"[{name}] op table: {cost}", file=sys.stderr, flush=True)
    m = convert_for_device(path, "local", recipes(tile, store), train=Dataset(x_tr, y_tr, "train"),
                           eval=Dataset(x_te, y_te, "test"), out=work / name,
                           log=lambda s: print(s, file=sys.stderr, flush=True))
    ref = m.reference_keras_accuracy
    fp32 = m.variant("fp32")
    timed = ["int8", "filters-50"] + (["filters-lat-60"] if latency else [])
    refs = [model_ref(work / name / m.variant(v).path) for v in timed]
    lat = {}
    for delegate in ("xnnpack", "none"):  # XNNPACK (the default) and the built-in kernels
        samples: dict = {}
        for _ in range(rounds):  # interleaved rounds: this machine is shared and noisy; report the median
            rows = run_profile(build_jobs(refs, [local_board()], [1], 1, Settings(warmup=50, runs=runs,
                                                                                 delegate=delegate)),
                               Options(store=str(work / "bench.db"), force=True))
            for r in rows:
                samples.setdefault(r["variant"], []).append(r["p50_ms"])
        for variant, values in samples.items():
            lat[(variant, delegate)] = float(np.median(values))
    table = []
    for v in m.variants:
        if v.name == "fp32":
            continue
        drop = 100 * (ref - v.accuracy)
        ratio = fp32.gzip_bytes / v.gzip_bytes
        step = next((r for r in v.steps if r["step"] == "filters"), None)
        row = [name, v.name, f"{v.accuracy:.4f}", f"{drop:+.2f}", f"{ratio:.1f}x", f"{v.sparsity:.0%}",
               f"{v.macs:,}", str(step["channel_multiple"]) if step else "", "", "", ""]
        if (v.name, "xnnpack") in lat:
            row[8] = f"{lat[(v.name, 'xnnpack')]:.4f} / {lat[(v.name, 'none')]:.4f}"
        if v.name in ("filters-50", "filters-lat-60"):
            fast = {d: lat[("int8", d)] / lat[(v.name, d)] for d in ("xnnpack", "none")}
            row[9] = f"{fast['xnnpack']:.2f}x / {fast['none']:.2f}x"
            row[10] = "ok" if fast["xnnpack"] >= 1.5 and drop <= (1.5 if v.name == "filters-50" else 1.0) else "MISS"
            if step and "predicted_fraction" in step:
                row[9] += f" (predicted {1 / step['predicted_fraction']:.2f}x)"
        elif v.name != "int8" and not v.name.startswith("filters"):
            row[10] = "ok" if ratio >= 8 and drop <= 1.0 else "MISS"
        table.append(row)
    return ref, table


def main():
    if "--budget" in sys.argv[1:]:  # the accuracy-budget table over model families: tools/bench_budget.py
        sys.argv.remove("--budget")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_budget
        return bench_budget.main()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="digits,residual,wide", help="comma-separated: digits, residual, wide")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds (median reported)")
    ap.add_argument("--no-latency", action="store_true", help="leave out latency-driven filter pruning (it builds "
                    "the local board's op table first)")
    args = ap.parse_args()
    from edgekit.compress.kernels import host_channel_multiple
    from edgekit.examples import build_digits_cnn, build_residual_cnn, digits_arrays, digits_arrays_upscaled
    from edgekit.report_text import table
    narrow = "device" if host_channel_multiple() < 64 else 8  # no channel group of digits/residual exceeds 64
    models = {
        "digits": (build_digits_cnn, digits_arrays, 30, narrow, False),
        "residual": (lambda: build_residual_cnn((32, 32, 1), width=32), lambda: digits_arrays_upscaled(32), 15,
                     narrow, True),
        "wide": (lambda: build_residual_cnn((16, 16, 1), width=128), lambda: digits_arrays_upscaled(16), 15,
                 "device", True),
    }
    chosen = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in models]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r} (choose from {', '.join(models)})")
    work = Path(tempfile.mkdtemp(prefix="edgekit-bench-compress-"))
    rows, refs = [], {}
    for name in chosen:
        build, arrays, epochs, tile, latency = models[name]
        refs[name], r = run_model(name, build(), arrays(), epochs, work, args.runs, args.rounds, tile,
                                  latency and not args.no_latency)
        rows += r
    print(table(["model", "variant", "accuracy", "drop pts", "gzip vs fp32", "sparsity", "MACs", "tile",
                 "p50 ms xnnpack / builtin", "speed-up", "goal"], rows, "llrrrrrrrrl"))
    print(f"latency: median of {args.rounds} interleaved rounds of {args.runs} runs, 1 thread, local board; tile: "
          f"filter pruning's channel multiple (this CPU's int8 kernel tile: {host_channel_multiple()})")
    print("\nKeras accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in refs.items()))
    print("goals: pruned+clustered+PCQAT >= 8x gzip at <= 1.0 point drop; filters-50 >= 1.5x faster than int8 at "
          "<= 1.5 points drop; filters-lat-60 (latency-driven, NetAdapt-style) >= 1.5x at <= 1.0 point drop")


if __name__ == "__main__":
    main()
