"""The accuracy budget on models of different families: per compressing recipe, the strength the search chose,
gzip ratio vs fp32, drop on eval, within budget or not, trials and wall time; then the goals.

    python tools/bench_budget.py [--only digits,residual,mobilenetv2,odd,efficientnetb0] [--max-drop 1.0] [--held-out]
    python tools/bench_compress.py --budget [same options]   (the same table)

digits: the bundled digits CNN (8x8); residual: Conv+BN, depthwise, residual Add (16x16 digits); mobilenetv2:
keras.applications MobileNetV2 alpha 0.35 (32x32 RGB digits, weights=None, trained here); efficientnetb0: the same
for keras.applications EfficientNetB0 (its Rescaling + Normalization input, swish, squeeze-excitation); odd:
Rescaling, SE Multiply, standalone BatchNormalization, hard-swish as TF ops (16x16 RGB).  Nothing is downloaded.

By default the models train on all of --train and the searches use the split edgekit carves from it (which the
models have seen: conservative).  --held-out: the models train on 80% and edgekit gets the other 20% as --val."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RECIPES = ["fp32", "int8", "pruned-int8", "clustered-int8", "pcqat-int8", "int8-selective"]
GOAL_RATIO = {"digits": 8.0}  # others: 6.0


def _data(name: str, work: Path):
    import zoo
    from edgekit.examples import write_digits_npz
    if name == "digits":
        return write_digits_npz(work / "digits")
    if name == "residual":
        from edgekit.examples import digits_arrays_upscaled
        xtr, ytr, xte, yte = digits_arrays_upscaled(16)
        (work / "r16").mkdir(parents=True, exist_ok=True)
        np.savez(work / "r16" / "train.npz", x=xtr, y=ytr)
        np.savez(work / "r16" / "test.npz", x=xte, y=yte)
        return work / "r16" / "train.npz", work / "r16" / "test.npz"
    return zoo.write_npz(work / f"rgb{_size(name)}", _size(name))


def _size(name: str) -> int:
    return {"mobilenetv2": 32, "efficientnetb0": 32, "odd": 16}.get(name, 16)


def _model(name: str, work: Path, train: Path) -> Path:
    """Each model trained on `train` (all of --train, or its fit part with --held-out), seeded: every run of the
    bench meets the same models (their accuracy moved 0.79-0.88 between unseeded runs, and each goal with it)."""
    import zoo
    from edgekit._tf import keras
    from edgekit.optimize.train import reseed
    reseed()
    d = np.load(train)
    x, y = d["x"], d["y"]
    if name == "digits":
        from edgekit.examples import build_digits_cnn
        m = build_digits_cnn()
        m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, y, epochs=30, batch_size=32, verbose=0)
    elif name == "residual":
        from edgekit.examples import build_residual_cnn
        m = build_residual_cnn((16, 16, 1))
        m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, y, epochs=15, batch_size=32, verbose=0)
    elif name == "mobilenetv2":
        m = zoo.train(zoo.application("MobileNetV2", 32), 32, epochs=15, data=(x, y))
    elif name == "efficientnetb0":
        m = zoo.train(zoo.application("EfficientNetB0", 32), 32, epochs=8, data=(x, y))
    else:
        m = zoo.train(zoo.odd_layers(16), 16, epochs=15, data=(x, y))
    path = work / f"{name}.keras"
    m.save(path)
    return path


def _held_out(train: Path) -> tuple[Path, Path]:
    """--held-out: the model trains on 80% of --train and the searches decide on the other 20% (--val), which the
    model never saw; the split is the one edgekit would carve itself."""
    from edgekit.data import load_data
    fit, val = load_data(train).split(0.2)
    paths = train.with_name("fit.npz"), train.with_name("val.npz")
    for d, p in zip((fit, val), paths):
        np.savez(p, x=d.x, y=d.y)
    return paths


def _strength(v) -> str:
    """The strengths the variant was built with; "(backed off)" when the flatbuffer check kept a weaker setting
    than the search's choice (that chain's steps ran at a given strength, without a search)."""
    out = []
    backed_off = any(s.get("flatbuffer_check", {}).get("kept") for s in v.steps)
    for s in v.steps:
        for key, fmt in (("target", "{:.0%} sparsity"), ("clusters", "{} clusters"),
                         ("target_flops", "{:.0%} MACs"), ("energy", "{:.0%} energy")):
            if s.get(key) is not None and ("search" in s or backed_off):
                out.append(fmt.format(s[key]))
        if s.get("step") == "selective":
            out.append({"int16": "16-bit activations", "float": "float activations"}[s["activations"]]
                       if s.get("activations") else
                       "float: " + (", ".join(s["kept_float"]) or "none"))
    return "; ".join(out) + (" (backed off)" if backed_off else "") if out else "-"


def _validation_verdict(v) -> dict | None:
    """The shipped flatbuffer on the validation split, as edgekit's flatbuffer check judged it (drop_points,
    noise_points, within_budget)."""
    for s in v.steps:
        check = s.get("flatbuffer_check")
        if check:
            return check["tries"][check["kept"]]
    return None


def _eval_noise(model_path: Path, test: Path, out: Path, manifest) -> dict[str, float]:
    """Per variant, the standard error (points) of its drop on eval: the paired difference of its answers and the
    Keras model's, sample by sample (edgekit's own verdict, as on validation).  A variant that changes many answers
    has a drop the eval set cannot resolve to a point either (MobileNetV2's fine-tunes change ~14% of them)."""
    from edgekit.compress.sensitivity import correct_of
    from edgekit.data import load_data
    from edgekit.modelio import load_keras_model
    from edgekit.optimize.search import verdict
    from edgekit.validate import correct
    data = load_data(test)
    reference = correct_of(load_keras_model(model_path), data)
    return {v.name: verdict(reference, correct((out / v.path).read_bytes(), data), v.max_drop or 1.0)["noise_points"]
            for v in manifest.variants}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="digits,residual,mobilenetv2,odd")
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--device", default="rpi4")
    ap.add_argument("--work", type=Path, help="keep the models and variants here (default: a new temporary folder)")
    ap.add_argument("--held-out", action="store_true", help="train each model on 80%% of --train and give edgekit "
                    "the other 20%% as --val (the searches then judge on data the model never saw)")
    args = ap.parse_args()
    from edgekit import convert_for_device
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-budget-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", file=sys.stderr)
    rows, goals = [], []
    judged: list[str] = []  # variants a search and the flatbuffer check judged within budget on validation
    noisy: list[str] = []  # ... of those, over the budget on eval
    for name in args.only.split(","):
        train, test = _data(name, work)
        val = None
        if args.held_out:
            train, val = _held_out(train)
        model = _model(name, work, train)
        t0 = time.perf_counter()
        times: dict[str, float] = {}
        last = [time.perf_counter()]

        def log(line: str, times=times, last=last):
            for r in RECIPES:
                if line.startswith(f"[{args.device}] {r}: validate"):
                    times[r] = time.perf_counter() - last[0]
                    last[0] = time.perf_counter()
        m = convert_for_device(model, args.device, RECIPES, train=train, eval=test, out=work / f"{name}-out",
                               keep_going=True, max_drop=args.max_drop, log=log,
                               val=val)
        fp32 = m.variant("fp32")
        within_ratios = []
        eval_noise = _eval_noise(model, test, work / f"{name}-out", m)
        for v in m.variants:
            ratio = fp32.gzip_bytes / v.gzip_bytes
            trials = sum(len(s["search"]["trials"]) for s in v.steps if "search" in s) + sum(
                len(s.get("trials", [])) for s in v.steps if s.get("step") == "selective")
            val = _validation_verdict(v)
            rows.append([name, v.name, _strength(v), f"{ratio:.1f}x",
                         "-" if val is None else f"{val['drop_points']:+.2f} (s.e. {val.get('noise_points', 0):.2f})",
                         f"{v.accuracy_drop:+.2f} (s.e. {eval_noise[v.name]:.2f})",
                         "yes" if v.within_budget else "OVER", str(trials),
                         f"{times.get(v.name, 0):.0f}"])
            if v.within_budget:
                within_ratios.append(ratio)
            if val is not None and val["within_budget"]:  # edgekit judged it within budget on validation
                judged.append(f"{name}/{v.name}")
                if v.accuracy_drop > args.max_drop:
                    noisy.append(f"{name}/{v.name} {v.accuracy_drop:+.2f}")
                if v.accuracy_drop > args.max_drop + 0.5:
                    goals.append(f"MISS {name}/{v.name}: within budget on validation, {v.accuracy_drop:+.2f} on eval "
                                 f"(s.e. {eval_noise[v.name]:.2f} there)")
        for f in m.failed:
            rows.append([name, f["recipe"], "FAILED", "", "", "", "", "", f["error"][:60]])
        goal = GOAL_RATIO.get(name, 6.0)
        best = max(within_ratios, default=0.0)
        goals.append(f"{'ok  ' if best >= goal else 'MISS'} {name}: best gzip within budget {best:.1f}x "
                     f"(goal >= {goal:g}x); reference {m.reference_keras_accuracy:.4f}; "
                     f"{time.perf_counter() - t0:.0f} s")
    head = ["model", "recipe", "chosen strength", "gzip vs fp32", "val drop", "eval drop (s.e.)", "budget", "trials",
            "s"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head, ["-" * w for w in widths]] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print()
    print("\n".join(goals))
    print(f"validation -> eval: {len(noisy)} of {len(judged)} variants judged within budget on validation (search "
          f"and flatbuffer check) were over it on eval" + (f": {', '.join(noisy)}" if noisy else ""))
    print(f"budget {args.max_drop:g} points vs the Keras model on eval; searches on "
          + ("--val, 20% of the digits training data held out from the models' training" if args.held_out else
             "a validation split carved from --train (seen by the models in training)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
