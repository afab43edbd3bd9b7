"""int8-selective: int8 that changes the float model's answers falls back step by step until it does not.

The ladder, each rung tried only while the best so far is over the budget, and only if the device runs its mode:
1. int8 with its 1, 2, then 4 layers of largest int8 error kept float (LiteRT's quantization debugger);
2. float activations with int8 weights (dynamic range: activations are quantized per inference from their own
   ranges, so data unlike the calibration samples is not clipped; the bench's odd model: int8 changed 15 of 397
   --eval answers, this 1) when no few layers are to blame (MobileNetV2: rounding adds up along 50 layers);
3. 16-bit activations (int16x8, weights still int8), for devices without dynamic-range kernels or when float
   activations are not enough.
A rung whose model the device's runtime cannot load is not taken; for float activations on a runtime before 2.17
(tflite-runtime 2.14) dense layers get one weight scale each (FULLY_CONNECTED v9 instead of v12) first.
Both fallbacks keep about int8's size.  On one CPU thread float activations cost far less speed than 16-bit ones
(tools/bench_selective.py, MobileNetV2 32x32, x86, two runs: int8 0.033-0.035 ms, float32 0.053-0.061, dynamic
range 0.062-0.119, int16x8 1.3-3.4 ms on LiteRT's reference kernels); with 2-4 threads on a loaded 2-core machine
dynamic range fell to 4-6 ms (its hybrid kernels' threads contend), so both variants say: profile on the board.

Judged by disagreement (samples whose top class changes against the float model), not by accuracy, with one
standard error on top (two changed answers of 280 do not show that int8 is within a 1-point budget): on a split
carved from --train that the model has learned, int8's accuracy drop is flattered (MobileNetV2: 0.4 points there,
1.5 on --eval) while the answers it changes still show (1.8% there, 3.5% on --eval); a changed answer bounds the
drop from above, and needs no labels.  The candidate that changes the fewest answers is kept."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .data import class_indices
from .errors import ConversionError

# what each fallback costs in speed, said on the variant (tools/bench_selective.py)
SPEED_NOTES = {
    "int16": ("16-bit activations (int16x8) run on LiteRT's reference kernels, not XNNPACK: expect it far slower "
              "than int8 and float on a CPU (int8's size, near-float accuracy); profile it before choosing it"),
    "float": ("float activations with int8 weights (dynamic range) run on hybrid kernels: expect it slower than "
              "int8 and than float on a CPU (about int8's size: layers under 1,024 weights stay float; near-float "
              "accuracy); profile it before choosing it"),
}
_RUNGS = (("float", "dynamic", "float activations (dynamic range, int8 weights)"),
          ("int16", "int16x8", "16-bit activations (int16x8)"))


def choose(recipe, converted, plain, model_bytes: bytes, calibration, decide, profile, records: list,
           log: Callable[[str], None], label: str) -> bytes:
    """The flatbuffer to ship for an int8-selective recipe; its trials go into `records` as a `selective` step."""
    import numpy as np

    from .compat import unloadable
    from .convert.tflite import convert_loadable, convert_selective
    from .optimize.search import Z, changed_within
    from .quant_error import worst_layers
    from .validate import predict
    if decide is None:
        log(f"{label}: selective: skipped (no data from --train or --calibration to decide on)")
        return model_bytes
    t0 = time.perf_counter()
    float_top = plain.predict(decide.x, batch_size=512, verbose=0).reshape(len(decide), -1).argmax(axis=1)
    labelled = decide.y is not None

    budget, n = recipe.max_drop, len(decide)  # a changed answer bounds the drop from above: no half-budget margin

    def judge(candidate: bytes) -> tuple[int, float | None]:
        """(answers changed against the float model, accuracy or None without labels) on `decide`."""
        top = predict(candidate, decide.x).reshape(n, -1).argmax(axis=1)
        acc = float(np.mean(top == class_indices(decide.labels))) if labelled else None
        return int(np.sum(top != float_top)), acc

    def pct(changed: int) -> float:  # disagreement in % of the samples
        return round(100.0 * changed / n, 2)

    def ok(changed: int) -> bool:  # the changed answers plus one standard error within the budget
        return changed_within(changed, n, budget)
    dis0, acc0 = judge(model_bytes)
    rec: dict[str, Any] = {"step": "selective", "decided_on": decide.source, "samples": n,
                           "judged_by": "disagreement with the float model (% of samples whose top class changes)",
                           "rule": f"changed answers + {Z:g} standard error <= budget",
                           "int8_disagreement": pct(dis0), "kept_float": [], "trials": []}
    if labelled:
        rec.update(reference_accuracy=round(float(np.mean(float_top == class_indices(decide.labels))), 4),
                   int8_accuracy=round(acc0 or 0.0, 4))
    best, best_dis, best_acc = model_bytes, dis0, acc0

    def consider(candidate: bytes, trial: dict[str, Any]) -> bool:
        """Judge a candidate; keep it if it changes fewer answers than the best so far.  True if it did."""
        nonlocal best, best_dis, best_acc
        dis, acc = judge(candidate)
        trial.update(disagreement=pct(dis), **({"accuracy": round(acc, 4)} if acc is not None else {}))
        rec["trials"].append(trial)
        if dis >= best_dis:
            return False
        best, best_dis, best_acc = candidate, dis, acc
        return True
    if not ok(dis0):
        worst = worst_layers(model_bytes, plain, calibration.x, top=4, input_too=False)  # layers to keep float
        for k in (1, 2, 4):
            if k > len(worst) or ok(best_dis):
                break
            keep = worst[:k]
            candidate = convert_selective(converted, calibration, [t for w in keep for t in w["tensors"]],
                                          profile.static_shapes)
            if consider(candidate, {"kept_float": [w["layer"] for w in keep]}):
                rec["kept_float"] = [w["layer"] for w in keep]
    for kind, mode, _text in _RUNGS:
        if ok(best_dis) or mode not in profile.quant_modes:
            continue
        trial: dict[str, Any] = {"activations": kind}
        try:
            candidate, dense = convert_loadable(converted, mode, "float32", calibration, profile.static_shapes,
                                                profile.runtime)
            if dense:  # one weight scale per dense layer: FULLY_CONNECTED v9, not v12
                trial["dense_weights"] = dense
            why = unloadable(candidate, profile.runtime)
        except ConversionError as e:
            why = str(e)[:200]
        if why:  # a rung the device's runtime cannot load is not taken
            rec["trials"].append({**trial, "error": why})
            continue
        if consider(candidate, trial):
            rec["kept_float"], rec["activations"] = [], kind
    rec.update(disagreement=pct(best_dis), seconds=round(time.perf_counter() - t0, 2), bytes=len(best))
    if best_acc is not None:
        rec["accuracy"] = round(best_acc, 4)
    records.append(rec)
    log(f"{label}: selective {rec['seconds']:5.1f} s  kept float: {_kept_text(rec)}; answers changed by int8 "
        f"{pct(dis0):.1f}% -> {pct(best_dis):.1f}% (budget {budget:g})" + (
            f"; accuracy {acc0:.4f} -> {best_acc:.4f}" if best_acc is not None and acc0 is not None else "") +
        f" on {n} samples")
    return best


def _kept_text(rec: dict) -> str:
    """What the step kept, for its log line."""
    names = {kind: text for kind, _mode, text in _RUNGS}
    if rec["kept_float"]:
        return ", ".join(rec["kept_float"])
    if not rec["trials"]:
        return "nothing (int8 is within budget)"
    if rec.get("activations"):
        return f"none; {names[rec['activations']]} instead"
    tried = "; ".join(", ".join(t["kept_float"]) if "kept_float" in t else names[t["activations"]]
                      for t in rec["trials"])
    return f"nothing helped (tried {tried})"
