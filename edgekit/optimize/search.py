"""Strength found, not fixed: the strongest setting of a step whose fine-tuned result stays within the accuracy
budget on a validation split carved from the training data (never --eval), by binary search with a trial cap.

A search's outcome is remembered in edgekit's cache under a key of everything that decides it (the step's input
model, the fit and validation data, the settings, the budget, the versions): converting the same model for a second
device, or again, runs the chosen setting once instead of every trial.  Fine-tuning is seeded, so that one run gives
the model the search kept."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from .. import cache
from ..errors import OptimizationError

REVISION = 4  # bump when what a step gives at a setting changes (BatchNormalization refresh, allocation, QAT of a
# conv before a ReLU): remembered searches from before are then searched again
MARGIN = 0.5  # a trial must stay within this share of the budget on validation: the rest absorbs the
#               validation -> eval noise (one sample of a 300-sample split is 0.33 points)
Z = 1.0  # ... and the drop plus this many standard errors must stay within the whole budget: a candidate that
#          changes many answers (a fine-tune of an under-trained model churns) can look +0.0 on 280 samples and
#          lose 1.8 points on --eval (MobileNetV2 clustered, #12's bench); one that changes few is judged as before
TRIALS = 4


def verdict(reference: np.ndarray, correct: np.ndarray, max_drop: float) -> dict:
    """A candidate against the original model, sample by sample on the validation split (`reference`, `correct`:
    per sample, is the top class right).  Its drop in points, the noise of that drop (the standard error of a paired
    difference: only the samples one model gets right and the other wrong carry it), and whether it is within the
    budget: the drop within MARGIN of the budget, and the drop plus Z standard errors within all of it."""
    n = max(len(reference), 1)
    lost, won = int(np.sum(reference & ~correct)), int(np.sum(~reference & correct))
    drop = 100.0 * (lost - won) / n
    noise = _noise(lost, won, n)
    ok = drop <= max_drop * MARGIN + 1e-9 and drop + Z * noise <= max_drop + 1e-9
    return {"validation_accuracy": round(float(np.mean(correct)), 4), "drop_points": round(drop, 2),
            "noise_points": round(noise, 2), "changed_answers": lost + won, "within_budget": ok}


def _noise(lost: int, won: int, n: int) -> float:
    """The standard error, in points, of a paired difference in which `lost` and `won` of `n` answers changed."""
    return 100.0 * math.sqrt(max(lost + won - (lost - won) ** 2 / n, 0.0)) / n


def changed_within(changed: int, n: int, max_drop: float) -> bool:
    """A quantized model judged by the answers it changes against the float one (`changed` of `n`; an upper bound
    on its drop, needing no labels): their share plus Z standard errors within the budget.  Two changed answers of
    280 (0.7%) is not enough evidence for a 1-point budget (the bench's odd model: 0.7% there, 1.5 points lost on
    --eval); none or one is."""
    n = max(n, 1)
    return 100.0 * changed / n + Z * _noise(changed, 0, n) <= max_drop + 1e-9


def verdict_text(v: dict, max_drop: float) -> str:
    """One verdict for a log line: '+0.4 pts (s.e. 0.9) on validation (budget 0.5, and 1 with one s.e.)'."""
    return (f"{v['drop_points']:+.1f} pts (s.e. {v['noise_points']:.1f}) on validation (budget {max_drop * MARGIN:g}, "
            f"and {max_drop:g} with {Z:g} s.e.)")


def rule(max_drop: float) -> dict:
    """What `verdict` holds a candidate to, for the records."""
    return {"validation_budget": max_drop * MARGIN, "noise_z": Z,
            "rule": f"drop <= {MARGIN:g} x budget, and drop + {Z:g} x its standard error <= budget"}


_PROGRESS: ContextVar[Callable[[str], None] | None] = ContextVar("edgekit_search_progress", default=None)


@contextmanager
def reporting(log: Callable[[str], None]) -> Iterator[None]:
    """Searches inside this block report each trial as it ends (a ResNet50V2 trial takes minutes)."""
    token = _PROGRESS.set(log)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _between(a, b):
    """The setting halfway between two neighbours of a search grid (None when there is none in between)."""
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        mid = (a + b) // 2
        return mid if mid not in (a, b) else None
    return round((float(a) + float(b)) / 2, 4)


@dataclass(frozen=True)
class Memo:
    """Where one search's outcome is remembered: `key` hashes the step's input model, data, settings and budget
    (the caller's part); the search adds its grid, trial cap and margin."""
    key: str

    def _full(self, settings: tuple, what: str) -> str:
        from .. import __version__
        h = cache.new_hash("search", __version__, REVISION, self.key, list(settings), what, TRIALS, MARGIN, Z)
        return h.hexdigest()

    def get(self, settings: tuple, what: str) -> dict | None:
        hit = cache.read("search", self._full(settings, what))
        return hit if hit and "setting" in hit and isinstance(hit.get("trace"), dict) else None

    def put(self, settings: tuple, what: str, setting, trace: dict) -> None:
        cache.write("search", self._full(settings, what), {"setting": setting, "trace": trace})


def strongest(settings: tuple, run: Callable, score: Callable, reference: np.ndarray, max_drop: float,
              what: str, memo: Memo | None = None) -> tuple[object, object, dict, dict]:
    """`settings` strongest first; `run(s)` -> (model, details); `score(model)` -> per validation sample, is the
    model right; `reference`: the same for the original model (a trial is judged by `verdict`).  A binary
    search over `settings`; a trial left over then tries halfway between the chosen setting and the stronger
    neighbour that failed (70% passed, 80% did not: 75%), so a coarse grid does not leave a step on the table.
    Returns (setting, model, details, trace).  When no setting tried is within budget, the most accurate trial is
    returned and the trace says so (the variant is then flagged).  With a `memo` holding this search's outcome,
    only the setting it chose is run (the trace is the remembered one, with `cached` saying what the run gave),
    unless that run is now over the budget: then the search runs again."""
    if memo is not None and (hit := memo.get(settings, what)) is not None:
        t0 = time.perf_counter()
        try:
            model, details = run(hit["setting"])
        except OptimizationError:
            pass  # searched again below
        else:
            v = verdict(reference, score(model), max_drop)
            # a remembered choice that no longer meets the budget (an entry from another build of edgekit whose
            # step does something else at that setting) is searched again, never shipped on the memory of it
            stale = hit["trace"].get("budget_met") and not v["within_budget"]
            if not stale:
                trace = {**hit["trace"], "cached": {"validation_accuracy": v["validation_accuracy"],
                                                    "seconds": round(time.perf_counter() - t0, 1)}}
                return hit["setting"], model, details, trace
    lo, hi = 0, len(settings) - 1
    trials: list[dict] = []
    best: tuple | None = None
    fallback: tuple | None = None
    errors: list[OptimizationError] = []

    def attempt(s, **mark) -> tuple[bool, tuple | None, float]:
        """One trial, recorded: (within budget, (setting, model, details) or None when it could not run, accuracy)."""
        t0 = time.perf_counter()
        try:
            model, details = run(s)
        except OptimizationError as e:  # e.g. filter pruning cannot reach that target at the tile: too strong
            errors.append(e)
            trials.append({what: s, "error": str(e)[:200], "within_budget": False, **mark,
                           "seconds": round(time.perf_counter() - t0, 1)})
            _report(f"could not run: {str(e)[:120]}")
            return False, None, 0.0
        v = verdict(reference, score(model), max_drop)
        trials.append({what: s, **v, **mark, "seconds": round(time.perf_counter() - t0, 1)})
        _report(f"{verdict_text(v, max_drop)}: {'within' if v['within_budget'] else 'over'}")
        return v["within_budget"], (s, model, details), v["validation_accuracy"]

    def _report(outcome: str) -> None:
        log = _PROGRESS.get()
        if log is not None:
            t = trials[-1]
            log(f"trial {len(trials)}/{TRIALS}: {what} {t[what]} -> {outcome} ({t['seconds']:.0f} s)")

    while lo <= hi and len(trials) < TRIALS:
        mid = (lo + hi) // 2
        ok, result, acc = attempt(settings[mid])
        if result is None:
            lo = mid + 1
            continue
        if ok:
            best = result
            hi = mid - 1
        else:
            lo = mid + 1
        if fallback is None or acc > fallback[3]:
            fallback = (*result, acc)
    if best is not None and len(trials) < TRIALS:  # a trial left: halfway to the next stronger setting, which failed
        at = settings.index(best[0])
        stronger = settings[at - 1] if at > 0 else None
        half = _between(stronger, best[0]) if any(t.get(what) == stronger for t in trials) else None
        if half is not None:
            ok, result, _acc = attempt(half, refined=True)
            if ok:
                best = result
    if best is None:
        if fallback is None:
            raise (errors[-1] if errors else OptimizationError(f"no setting of {what} could be tried"))
        best_or_fallback = fallback[:3]
    else:
        best_or_fallback = best
    s, model, details = best_or_fallback
    trace = {"max_drop": max_drop, **rule(max_drop),
             "validation_reference_accuracy": round(float(np.mean(reference)), 4), "trials": trials,
             "budget_met": best is not None,
             "trial_budget": TRIALS, "candidates": list(settings)}
    if memo is not None:
        memo.put(settings, what, s, trace)
    return s, model, details, trace
