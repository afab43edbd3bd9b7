"""Latency-driven filter pruning (NetAdapt-style): remove filters where the board's op table says time really
drops, one step at a time, picking at each step the channel group whose cut costs the least accuracy.

Each step asks for a fixed share of the latency to go; for every prunable channel group the smallest cut (whole
tiles of `channel_multiple`) that saves that much is predicted from the table (compress/latency.py, no conversion),
the candidates are built, their BatchNorm statistics re-estimated (a cut shifts what downstream layers see; stale
statistics make a good cut look ruinous) and scored one-shot on the validation split; the most accurate is kept and
fine-tuned briefly.  Steps end at the target, when no cut saves time any more, or when the short-tuned accuracy
has fallen more than three times the recipe's budget (the last step within it is kept); a final fine-tune follows."""
from __future__ import annotations

import logging
import time

from ..data import Dataset
from ..errors import OptimizationError
from .steps import Filters
from .train import fine_tune, outputs_probabilities, recalibrate_batchnorm

log = logging.getLogger("edgekit.netadapt")
STEPS = 8  # the latency to remove is taken in this many equal steps
MAX_ROUNDS = 24
SHORT_SAMPLES = 2000  # each candidate's short fine-tune: one epoch on at most this many training samples
STOP_FACTOR = 3  # steps end when the best candidate, briefly tuned, is this many budgets below the reference


def table_for(cfg: Filters):
    from ..predict import OpTable
    from ..store import Store, store_path
    path = store_path(cfg.store)
    if not path.exists():
        raise OptimizationError(f"target_latency needs board {cfg.board}'s op table, and the store {path} does not "
                                f"exist: run `edgekit lut build --board {cfg.board} --store {path}` first")
    store = Store(path, create=False)
    table = OpTable.of(store, str(cfg.board), cfg.threads, "xnnpack")
    store.close()
    if not table.entries:
        raise OptimizationError(f"the store {path} has no per-op latencies for board {cfg.board} with "
                                f"{cfg.threads} thread(s): run `edgekit lut build --board {cfg.board}` first")
    return table


def latency_filters(model, cfg: Filters, fit: Dataset, val: Dataset, mode: str, io: str, reference: float,
                    max_drop: float, teacher=None, distill=None):
    from ..compress.filters import MIN_CHANNELS, plan, prune_filters
    from ..compress.flops import count
    from ..compress.latency import LatencyModel, channels, smaller_counts
    from ..compress.sensitivity import accuracy_of
    from ..convert.tflite import convert
    t0 = time.perf_counter()
    table = table_for(cfg)
    raw = convert(model, mode, io=io if mode == "int8" else "float32", calibration=fit if mode == "int8" else None)
    lat = LatencyModel(model, raw, table, str(cfg.board))
    base_ms = lat.ms()
    goal = float(cfg.target_latency or 1.0) * base_ms
    step = (base_ms - goal) / STEPS
    multiple = cfg.channel_multiple if isinstance(cfg.channel_multiple, int) else 1
    probabilities = outputs_probabilities(model)
    current, now_ms = model, base_ms
    short = fit.sample(min(len(fit), SHORT_SAMPLES), seed=2)
    trace: list[dict] = []
    stopped = "target reached"
    while now_ms > goal * 1.001:
        if len(trace) >= MAX_ROUNDS:
            stopped = f"{MAX_ROUNDS} steps"
            break
        want = max(goal, now_ms - step)
        counts = {root: n for root, (n, _) in plan(current, 0.0).items()}
        candidates = []
        for root, n in counts.items():
            best = None
            for k in smaller_counts(n, multiple, max(MIN_CHANNELS, min(multiple, n))):
                ms = lat.ms(channels(current, {root: k}))
                if ms < now_ms - 1e-9:
                    best = (root, k, ms)
                if ms <= want:
                    break
            if best:
                candidates.append(best)
        if not candidates:
            stopped = "no cut saves time any more"
            break
        reaching = [c for c in candidates if c[2] <= want]
        pool = reaching or [min(candidates, key=lambda c: c[2])]  # none reaches the step: the biggest saving
        scored = []
        for root, k, ms in pool:  # scored one-shot once BatchNorm statistics are re-estimated for the cut
            cand = prune_filters(current, 0.0, counts={**counts, root: k})
            recalibrate_batchnorm(cand, fit)
            scored.append((accuracy_of(cand, val), -ms, root, k, ms, cand))
        acc, _, root, k, ms, chosen = max(scored, key=lambda s: (s[0], s[1]))
        fine_tune(chosen, short, epochs=1, lr=5e-4, probabilities=probabilities, teacher=teacher, distill=distill)
        recalibrate_batchnorm(chosen, fit)
        tuned = accuracy_of(chosen, val)
        drop = 100.0 * (reference - tuned)
        trace.append({"group": root, "channels": [counts[root], k], "predicted_ms": round(ms, 5),
                      "one_shot_accuracy": round(acc, 4), "tuned_accuracy": round(tuned, 4),
                      "candidates": len(pool), "seconds": round(time.perf_counter() - t0, 1)})
        log.info("netadapt step %d: %s %d -> %d channels, predicted %.4g ms (goal %.4g), val %.4f",
                 len(trace), root, counts[root], k, ms, goal, tuned)
        if drop > STOP_FACTOR * max_drop and current is not model:
            trace[-1]["kept"] = False
            stopped = f"accuracy: the next step fell {drop:.1f} points (budget {max_drop})"
            break
        current, now_ms = chosen, ms
    if current is model:
        raise OptimizationError(f"latency-driven filter pruning found no cut on board {cfg.board} ({stopped})")
    fitted = fine_tune(current, fit, epochs=cfg.epochs, lr=1e-3, probabilities=probabilities, teacher=teacher,
                       distill=distill)
    recalibrate_batchnorm(current, fit)
    before, after = count(model, multiple), count(current, multiple)
    return current, {"board": cfg.board, "threads": cfg.threads, "target_latency": cfg.target_latency,
                     "predicted_ms_before": round(base_ms, 5), "predicted_ms_after": round(now_ms, 5),
                     "predicted_fraction": round(now_ms / base_ms, 4), "stopped": stopped,
                     "macs_before": before["macs"], "macs_after": after["macs"], "params_before": before["params"],
                     "params_after": after["params"], "channel_multiple": multiple, "steps": trace, "fit": fitted,
                     "seconds": round(time.perf_counter() - t0, 1)}
