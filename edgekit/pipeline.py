"""`convert_for_device`: Keras model -> every useful TFLite variant for a device, validated, in one folder."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__, outdir, selective
from .compat import device_problems, edgetpu_preflight
from .data import (CALIBRATION_SAMPLES, Dataset, check_calibration, check_disjoint, check_fits, check_labels,
                   load_data, read_labels)
from .errors import ConfigError, ConversionError, DataError, OptimizationError, ResourceLimitError
from .flatbuffer import parse_model
from .manifest import Manifest, Variant
from .memory import peak_mb, reset_peak
from .profiles import DeviceProfile, Recipe, check_recipe_fits, load_profile, load_recipe

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    """The default progress log: INFO lines of logging.getLogger("edgekit.pipeline") (the CLI prints them)."""
    logging.getLogger("edgekit.pipeline").info(msg)


def _load_inputs(model, train, calibration, eval_data, val=None):
    from . import keras3
    from .modelio import check_is_tf_keras, keras_version_of, load_keras_model
    source = {"path": None}
    if isinstance(model, (str, Path)):
        path = Path(model)
        version = keras_version_of(path) if path.exists() else None
        if version and version.split(".")[0] == "3":
            model = keras3.load(path)
        else:
            model = load_keras_model(path)
        source = {"path": str(path), "sha256": _source_sha(path)}
    if keras3.is_keras3_model(model):
        source["keras"] = 3
    else:
        check_is_tf_keras(model)
    shape = tuple(model.inputs[0].shape)
    out_shape = tuple(model.outputs[0].shape)

    def get(d):
        return d if d is None or isinstance(d, Dataset) else load_data(d, shape)
    train, calibration, eval_data, val = get(train), get(calibration), get(eval_data), get(val)
    if val is not None and train is None:
        raise DataError("--val (held-out data for the strength searches) needs --train")
    for d, role in ((train, "training"), (eval_data, "eval"), (val, "validation")):
        if d is not None:
            check_fits(d, shape, role)
            check_labels(d, out_shape, role)
    if val is not None:
        check_disjoint(val, train)
    if calibration is not None:
        check_calibration(calibration, shape)
    source.update(name=getattr(model, "name", "model"), params=int(model.count_params()),
                  input_shape=[d for d in shape], output_shape=[d for d in out_shape])
    return model, source, train, calibration, eval_data, val


def _tfmot_model(model, source: dict, chosen: list[Recipe], sample, log: Log):
    """The tf_keras model TF-MOT recipes work on: the model itself, or a checked rebuild of a Keras 3 model.
    Returns (model or None, why not)."""
    if source.get("keras") != 3:
        return model, None
    if not any(r.steps for r in chosen):
        return None, None
    from . import keras3
    t0 = time.perf_counter()
    try:
        twin = keras3.to_tf_keras(model, None if sample is None else sample.x[:64])
    except OptimizationError as e:
        log(f"Keras 3 model: TF-MOT recipes unavailable: {e}")
        return None, f"this Keras 3 model cannot be rebuilt in tf_keras for TF-MOT: {e}"
    log(f"Keras 3 model: rebuilt in tf_keras for the TF-MOT recipes in {time.perf_counter() - t0:.1f} s "
        f"(outputs equal within {keras3.TOLERANCE:g})")
    return twin, None


def _labels(given, source: dict, train: Dataset | None, eval_data: Dataset | None) -> list[str] | None:
    """Class names for the manifest: `given` (file or list) or the data's; their count must match the outputs."""
    where = "labels"
    if isinstance(given, (str, Path)):
        given, where = read_labels(given), f"labels file {given}"
    if given is None:
        found = next((d for d in (train, eval_data) if d is not None and d.classes), None)
        if found is None:
            return None
        given, where = list(found.classes or ()), f"class names of {found.source}"
    n_out = (source.get("output_shape") or [None])[-1]
    if n_out and len(given) != n_out:
        raise ConfigError(f"{where}: {len(given)} labels but the model has {n_out} outputs")
    return [str(x) for x in given]


def _preflight(model, recipes: list[Recipe], train, calibration, unavailable: str | None = None) -> dict[str, str]:
    """Everything that can fail before training, in seconds.  Data problems stop the run; a recipe whose steps
    cannot handle this model is returned (name -> reason) to fail alone while the others are built."""
    from .optimize.steps import STEPS
    need_train = [r.name for r in recipes if r.steps]
    if need_train and train is None:
        raise DataError(f"recipes {', '.join(need_train)} fine-tune the model: give --train DATA")
    need_cal = [r.name for r in recipes if r.mode in ("int8", "int16x8")]
    if need_cal and calibration is None and train is None:
        raise DataError(f"recipes {', '.join(need_cal)} need a representative dataset: give --calibration or --train")
    impossible: dict[str, str] = {}
    verdicts: dict[tuple, str | None] = {}
    for r in recipes:
        for n, step in enumerate(r.steps):
            if n and STEPS[r.steps[n - 1]].changes_architecture:
                break  # the later steps see another model: they are checked when they run
            kind, cfg = STEPS[step], getattr(r, step)
            key = (step, json.dumps(cfg.given, sort_keys=True), r.prune is not None, r.cluster is not None)
            if kind.preflight is None:
                continue
            if key not in verdicts:
                try:
                    if model is None:
                        raise OptimizationError(unavailable or "TF-MOT recipes need a tf_keras model")
                    kind.preflight(model, cfg, r)
                    verdicts[key] = None
                except (OptimizationError, ResourceLimitError) as e:
                    verdicts[key] = f"step {step}: {e}"
            if verdicts[key] and r.name not in impossible:
                impossible[r.name] = f"recipe '{r.name}', {verdicts[key]}"
    return impossible


class _Optimizer:
    """Runs optimization chains, reusing a shared prefix (same prune settings -> one fine-tune)."""

    def __init__(self, model, train: Dataset, eval_data: Dataset | None, log: Log, reference_accuracy=None,
                 val: Dataset | None = None, use_cache: bool = True):
        self.model, self.train, self.eval, self.log = model, train, eval_data, log
        self.use_cache = use_cache  # searches remembered across runs (optimize/search.Memo)
        # decisions (sensitivity, strength searches) use --val, or a split carved from --train; never --eval
        self.carved = val is None
        self.fit, self.val = train.split(0.2) if val is None else (train, val)
        self.val_reference: float | None = None  # the original model's accuracy on self.val
        self.val_correct: Any = None  # per sample of self.val: is the original model right (numpy bools)
        self.seen_gap: float | None = None  # points the original scores higher on a carved split than on --eval
        self.searched = False  # an `auto` strength was searched on self.val
        self.label = ""
        self.reference_accuracy = reference_accuracy
        self.cache: dict[str, tuple] = {}  # chain key -> (model, details, accuracy before, after): steps reused
        self.needed: set[str] | None = None  # chain keys of the recipes still to build (None: keep every model)

    def chain_keys(self, recipe: Recipe) -> list[str]:
        """The cache key of each step of `recipe`'s chain: the recipe's settings up to and including that step (a
        searched step also by its budget), so recipes that start alike share their first steps."""
        from .optimize.steps import STEPS
        key, keys = json.dumps(recipe.given("distill"), sort_keys=True), []
        for step in recipe.steps:
            cfg = getattr(recipe, step)
            key += f"|{step}:{json.dumps(cfg.given, sort_keys=True)}"
            if STEPS[step].searched(cfg):
                key += f"@{recipe.max_drop}"
            keys.append(key)
        return keys

    def plan(self, recipes: Sequence[Recipe]) -> None:
        """`recipes` are the ones still to build: the models of chain steps none of them uses are released."""
        self.needed = {k for r in recipes for k in self.chain_keys(r)}
        self.release()

    def release(self) -> None:
        """Drop the cached models no recipe still to build uses: recipes done, back-off chains that lost (kept,
        NASNetMobile's peak grew 8.0 -> 9.9 -> 11.7 GB over three chains of one recipe)."""
        if self.needed is None:
            return
        gone = [k for k in self.cache if k not in self.needed]
        for k in gone:
            del self.cache[k]
        if gone:
            import gc
            gc.collect()

    def reference_on_val(self) -> float:
        """The original model's accuracy on the validation split (measured once)."""
        if self.val_reference is None:
            from .compress.sensitivity import correct_of
            self.val_correct = correct_of(self.model, self.val)
            self.val_reference = float(self.val_correct.mean())
        return self.val_reference

    def validation_record(self) -> dict | None:
        """What the strength searches were decided on (None when no recipe searched)."""
        if self.val_reference is None:
            return None
        rec = {"source": self.val.source, "samples": len(self.val), "carved_from_train": self.carved,
               "reference_accuracy": round(self.val_reference, 4)}
        if self.seen_gap is not None:
            rec["seen_by_model_gap_points"] = round(self.seen_gap, 2)
        return rec

    def _apply(self, step: str, current, recipe: Recipe):
        """One step of the recipe, as the step registry says; `auto` settings are searched within the budget."""
        from .optimize.steps import STEPS
        kind, cfg = STEPS[step], getattr(recipe, step)
        kw = {"teacher": self.model if recipe.distill else None, "distill": recipe.distill}
        if kind.searched(cfg) and kind.apply_auto is not None:
            from .optimize.search import TRIALS, reporting
            self.reference_on_val()
            self.searched = True
            self.log(f"{self.label}: {step:<8} searching the strongest setting within {recipe.max_drop:g} points "
                     f"(at most {TRIALS} trials on {len(self.val)} validation samples from "
                     f"{'--train' if self.carved else '--val'})")
            with reporting(lambda line: self.log(f"{self.label}: {step:<8} {line}")):
                return kind.apply_auto(self, current, cfg, recipe, memo=self._memo(step, current, cfg, recipe),
                                       **kw)
        return kind.apply(self, current, cfg, recipe, **kw)

    def _memo(self, step: str, current, cfg, recipe: Recipe):
        """The cache key of one search: everything that decides its outcome (the versions are added by Memo)."""
        if not self.use_cache:
            return None
        from . import cache
        from ._tf import tf, tfmot
        from .optimize.search import Memo
        h = cache.new_hash(step, cfg.given, recipe.max_drop, recipe.given("distill"), recipe.prune is not None,
                           self.val_reference, tf.__version__, getattr(tfmot, "__version__", ""))
        cache.model_digest(h, current)
        if recipe.distill:
            cache.model_digest(h, self.model)  # the teacher
        cache.data_digest(h, self.fit)
        cache.data_digest(h, self.val)
        return Memo(h.hexdigest())

    def _guarded(self, step: str, current, recipe: Recipe):
        """TensorFlow's own failures inside a step become one clear line naming the recipe and step."""
        from ._tf import tf
        try:
            return self._apply(step, current, recipe)
        except OptimizationError as e:  # ours: say which recipe and step
            raise OptimizationError(f"recipe '{recipe.name}', step {step}: {e}") from e
        except (tf.errors.OpError, ValueError, RuntimeError, TypeError) as e:
            text = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise OptimizationError(f"recipe '{recipe.name}', step {step}: {text[:300]}") from e

    def run(self, recipe: Recipe, label: str) -> tuple[object, object, list[dict]]:
        """Returns (model to convert, plain Keras model before QAT, step records).

        The steps are searched one at a time, so QAT after them can still fall apart (EfficientNet under PCQAT
        went from 0.96 to 0.13).  A QAT chain is checked as a whole on the validation split: over budget, when the
        model before QAT is within it, QAT is what broke it and that model is converted post-training instead
        (`qat_dropped` in the qat record); otherwise the last searched step is backed off one setting at a time (at
        most BACKOFFS more chains) and the most accurate chain is kept (`chain_backoff`)."""
        from .optimize.search import verdict, verdict_text
        result = self._chain(recipe, label)
        if not recipe.qat:
            return result
        from .compress.sensitivity import correct_of
        self.reference_on_val()
        tried = recipe
        tries: list[dict[str, Any]] = []
        best: tuple[float, tuple[object, object, list[dict]]] | None = None
        best_try = 0
        while True:
            v = verdict(self.val_correct, correct_of(result[0], self.val), recipe.max_drop)
            acc, drop = v["validation_accuracy"], v["drop_points"]
            tries.append({"settings": _chosen(result[2]), **v})
            if best is None or acc > best[0]:
                best, best_try = (acc, result), len(tries) - 1
            if v["within_budget"]:
                break
            before = verdict(self.val_correct, correct_of(result[1], self.val), recipe.max_drop)
            if before["within_budget"]:  # QAT itself broke a chain that was within budget: convert post-training
                qat_rec = next(r for r in result[2] if r["step"] == "qat")
                qat_rec["qat_dropped"] = {"validation_drop_points": drop,
                                          "before_qat_drop_points": before["drop_points"]}
                if len(tries) > 1:
                    qat_rec["chain_backoff"] = tries
                self.log(f"{label}: chain    QAT fell {verdict_text(v, recipe.max_drop)}, the model before it "
                         f"{before['drop_points']:+.1f}: that model is converted post-training instead")
                return result[1], result[1], result[2]
            weaker = _one_notch_weaker(recipe, tried, result[2]) if len(tries) <= BACKOFFS else None
            if weaker is None:
                break
            step, value, tried = weaker
            self.log(f"{label}: chain    {verdict_text(v, recipe.max_drop)} after QAT: trying "
                     f"{step} {_show(step, value)}")
            del result  # the best chain is held in `best`; a losing one is released before the next is built
            self.release()
            result = self._chain(tried, label)
        assert best is not None
        result = best[1]
        if len(tries) > 1:
            qat_rec = next(r for r in result[2] if r["step"] == "qat")
            qat_rec["chain_backoff"] = tries
            kept = tries[best_try]
            self.log(f"{label}: chain    kept {_settings_text(kept['settings'])} ({kept['drop_points']:+.1f} pts on "
                     f"validation)")
        return result

    def _chain(self, recipe: Recipe, label: str) -> tuple[object, object, list[dict]]:
        from .optimize.train import kernel_stats
        self.label = label
        current, records = self.model, []
        plain, last_accuracy = current, self.reference_accuracy
        for step, key in zip(recipe.steps, self.chain_keys(recipe)):
            cfg = getattr(recipe, step)
            t0 = time.perf_counter()
            reused = key in self.cache
            reset_peak()
            if not reused:
                before = last_accuracy
                result, details = self._guarded(step, current, recipe)
                after = _keras_accuracy(result, self.eval)
                self.cache[key] = (result, details, before, after)
            current, details, before, after = self.cache[key]
            last_accuracy = after
            secs = time.perf_counter() - t0
            rec = {"step": step, "settings": cfg.given, "seconds": round(secs, 2), "reused": reused,
                   "accuracy_before": before, "accuracy_after": after, **details}
            if step in CHAIN and _strength(step) not in rec:  # the strength it ran with, searched or given (a
                rec[_strength(step)] = cfg.given.get(_strength(step))  # back-off's chain gives it)
            if not reused:
                rec["peak_rss_mb"] = peak_mb()
            if recipe.distill:
                rec["distill"] = recipe.given("distill")
            text = f"{label}: {step:<8} {secs:6.1f} s"
            if step != "qat":
                plain = current
                sp, uniq = kernel_stats(current)
                rec.update(keras_sparsity=round(sp, 4), keras_max_unique_per_channel=uniq)
                text += f"  sparsity {sp:.1%}  max values/channel {uniq}"
            else:
                rec["scheme"] = recipe.qat_scheme
                text += f"  scheme {recipe.qat_scheme}"
            if "search" in details:
                what = {"prune": "target", "cluster": "clusters", "filters": "target_flops"}.get(step, "energy")

                def show(v, what=what):
                    return str(v) if what == "clusters" else f"{v:.0%}"
                tried = ", ".join(f"{show(t[what])}: " + (f"{t['drop_points']:+.1f}" if "drop_points" in t else "n/a")
                                  for t in details["search"]["trials"])
                text += f"  chose {show(details[what])} (tried {tried} pts on validation)"
                if not details["search"]["budget_met"]:
                    text += " OVER BUDGET at every setting tried"
                if "cached" in details["search"]:
                    text += " - search remembered from an earlier run, only its choice was run"
            if "macs_after" in details:
                text += f"  MACs {details['macs_before']:,} -> {details['macs_after']:,}"
            if after is not None:
                text += f"  accuracy {after:.4f}"
            if rec.get("peak_rss_mb"):
                text += f"  peak {rec['peak_rss_mb']:,.0f} MB"
            records.append(rec)
            self.log(text + ("  (reused)" if reused else ""))
        return current, plain, records


BACKOFFS = 2  # chains re-run with a weaker setting when the finished chain is over budget
CHAIN = ("prune", "cluster")  # the TF-MOT chain's searched steps (their setting: the step registry's `strength`)


def _strength(step: str) -> str:
    from .optimize.steps import STEPS
    return str(STEPS[step].strength)


def _auto_settings(step: str) -> tuple:
    from .optimize.cluster import AUTO_CLUSTERS
    from .optimize.prune import AUTO_TARGETS
    return {"prune": AUTO_TARGETS, "cluster": AUTO_CLUSTERS}[step]


def _searched_steps(recipe: Recipe) -> list[str]:
    from .optimize.steps import STEPS
    return [s for s in recipe.steps if s in CHAIN and STEPS[s].searched(getattr(recipe, s))]


def _chosen(records: list[dict]) -> dict:
    """The strength each prune / cluster step of a chain ran with."""
    return {r["step"]: r.get(_strength(r["step"]), (r.get("settings") or {}).get(_strength(r["step"])))
            for r in records if r["step"] in CHAIN}


def _show(step: str, value) -> str:
    return f"{value:.0%}" if step == "prune" and isinstance(value, float) else str(value)


def _settings_text(settings: dict) -> str:
    return ", ".join(f"{k} {_show(k, v)}" for k, v in settings.items())


def _one_notch_weaker(recipe: Recipe, tried: Recipe, records: list[dict]) -> tuple[str, object, Recipe] | None:
    """(step, setting, `tried` with that step at that setting): one notch weaker than the chain in `records` ran,
    among the steps `recipe` (as the user gave it) leaves `auto`."""
    weaker = _weaker(_searched_steps(recipe), records)
    if weaker is None:
        return None
    step, value = weaker
    return step, value, dataclasses.replace(tried, **{step: getattr(tried, step).with_(**{_strength(step): value})})


def _weaker(searched: list[str], records: list[dict]) -> tuple[str, object] | None:
    """(step, setting) one notch weaker than what the chain ran with, among the steps the recipe left `auto` (a
    strength the user fixed stays): the last one first."""
    chosen = _chosen(records)
    for step in reversed(searched):
        settings = _auto_settings(step)  # strongest first: sparsities falling, cluster counts rising
        at = chosen.get(step)
        if at is None:
            continue
        falling = settings[0] > settings[-1]
        weaker = [s for s in settings if (s < at if falling else s > at)]  # a refined setting sits between two
        if weaker:
            return step, weaker[0]
    return None


CHANCE_MARGIN = 0.05  # a reference within 5 points of the majority class has learned (almost) nothing


def majority_baseline(data: Dataset | None) -> float | None:
    """The accuracy of always answering the most common class of `data` (None without labels)."""
    if data is None or data.y is None or len(data) == 0:
        return None
    import numpy as np
    from .data import class_indices
    _, counts = np.unique(class_indices(data.y), return_counts=True)
    return float(counts.max() / counts.sum())


def _keras_accuracy(model, data: Dataset | None) -> float | None:
    if data is None:
        return None
    from .data import class_indices
    pred = model.predict(data.x, batch_size=256, verbose=0)
    return float((pred.reshape(pred.shape[0], -1).argmax(axis=1) == class_indices(data.labels)).mean())


def _survival(recipe: Recipe, records: list[dict], info) -> dict:
    """Did the sparsity / clusters made in Keras survive into the flatbuffer?"""
    result = {}
    keras_step = next((r for r in reversed(records) if "keras_sparsity" in r), None)
    if recipe.prune and keras_step:
        want = keras_step["keras_sparsity"]
        result["sparsity"] = {"keras": want, "tflite": round(info.sparsity, 4),
                              "ok": info.sparsity >= want - 0.02}
    if recipe.cluster:
        step: dict = next((r for r in reversed(records) if r.get("step") == "cluster"), {})
        # the count the step used (searched, fixed by the user, or set by a chain back-off), else the recipe's
        n = next((c for c in (step.get("clusters"), recipe.cluster.clusters) if isinstance(c, int)), None)
        # what the Keras model had after clustering: layers clustering leaves alone (a 5x5 depthwise kernel has 25
        # values per channel) are not a loss in conversion
        had = step.get("keras_max_unique_per_channel")
        # (+1 with pruning: int8 rounding can split zero from a near-zero centroid)
        limit = max(n or 0, had or 0) + (1 if recipe.prune else 0)
        result["clusters"] = {"clusters": n, "keras_max_unique_per_channel": had,
                              "tflite_max_unique_per_channel": info.max_unique_per_channel,
                              "ok": info.max_unique_per_channel <= limit}
    return result


def _resource_failure(e: Exception) -> bool:
    """Out of memory (Python's or TensorFlow's): the machine's limit, not the user's input."""
    if isinstance(e, MemoryError):
        return True
    return type(e).__name__ in ("ResourceExhaustedError",) or "out of memory" in str(e).lower()


def _one_line(e: Exception) -> str:
    text = (str(e).strip().splitlines() or [""])[0][:300]
    kind = "out of memory" if isinstance(e, MemoryError) else type(e).__name__
    return f"{kind}: {text}" if text else kind


def _shortfalls(records: list[dict]) -> list[str]:
    """Asked for more sparsity than the model gave (e.g. most weights sit in layers TF-MOT leaves alone)."""
    out = []
    for rec in records:
        if rec.get("qat_dropped"):
            d = rec["qat_dropped"]
            out.append(f"QAT fell {d['validation_drop_points']:+.1f} points on the validation split (the model before "
                       f"it {d['before_qat_drop_points']:+.1f}): converted post-training from the model before QAT")
        if rec.get("flatbuffer_check"):
            out += _unresolved(rec["flatbuffer_check"])
        if rec.get("step") != "prune" or rec.get("structure") == "2:4":
            continue
        asked = rec.get("target", (rec.get("settings") or {}).get("target"))
        got = rec.get("keras_sparsity")
        if isinstance(asked, (int, float)) and got is not None and got < asked - 0.05:
            out.append(f"asked {asked:.0%} sparsity, got {got:.1%}{_why_dense(rec)}")
    return out


def _unresolved(check: dict) -> list[str]:
    """A variant judged within budget on its drop while the validation split is too small to resolve the budget
    for it: its fine-tunes changed so many answers that one standard error exceeds the whole budget (MobileNetV2
    trained to 0.88: 47 of 280 answers changed, s.e. 2.4 points, for a 1-point budget)."""
    kept = check["tries"][check["kept"]]
    noise, budget = kept.get("noise_points"), check.get("max_drop")
    if not kept.get("within_budget") or noise is None or budget is None or noise <= budget:
        return []
    return [f"the validation split ({check.get('samples', '?')} samples) cannot resolve the {budget:g}-point budget "
            f"for this variant: it changes {kept['changed_answers']} answers of the original model (standard error "
            f"{noise:.1f} points), so its {kept['drop_points']:+.1f} there is uncertain; give more held-out data "
            f"with --val"]


_DENSE_CAUSES = {  # cause (optimize/prune.where_dense) -> how the warning says it
    "not_prunable": "{n} {kinds} layer{s} TF-MOT does not prune",
    "small": "{n} small layer{s} the allocation leaves dense (the smallest, under 2% of the weights together)",
    "sensitive": "{n} sensitive layer{s} the allocation holds at {lo:.0%}-{hi:.0%}",
    "cap": "{n} layer{s} at the allocation's cap of {hi:.0%}",
    "target": "{n} layer{s} pruned to {hi:.0%}",
}


def _why_dense(rec: dict) -> str:
    """Where the weights still non-zero sit, largest share first (the prune step's `dense_weights`)."""
    groups = rec.get("dense_weights")
    if not groups:
        left = [k for k, v in (rec.get("layers_left") or {}).items() if "no weights" not in v]
        return f"; left as they are: {', '.join(left[:4])}" if left else ""
    parts = []
    for cause, g in sorted(groups.items(), key=lambda kv: -kv[1]["nonzero_share"]):
        n = g["layers"]
        text = _DENSE_CAUSES.get(cause, cause + " ({n})").format(
            n=n, s="" if n == 1 else "s", kinds="/".join(g["kinds"]), lo=g["sparsity"][0], hi=g["sparsity"][1])
        parts.append(f"{g['nonzero_share']:.1%} in {text}")
    return "; still non-zero, as shares of all kernel weights: " + ", ".join(parts)


def _build_variant(recipe: Recipe, profile: DeviceProfile, model_bytes: bytes, work: Path, keras_acc,
                   eval_data, records, log: Log, label: str, counts: dict, reference: float | None,
                   explain=None) -> Variant:
    from .convert import edgetpu
    from .validate import accuracy
    path = work / f"{recipe.name}.tflite"
    path.write_bytes(model_bytes)
    info = parse_model(model_bytes, path.name)
    problems, warnings = device_problems(info, profile)
    survival = _survival(recipe, records, info)
    for what, check in survival.items():
        if not check["ok"]:
            warnings.append(f"{what} did not survive conversion: {check}")
    warnings += _shortfalls(records)
    for text in problems:  # no silent shortfall: on stderr too, not only in the manifest
        log(f"{label}: PROBLEM  {text}")
    for text in warnings:
        log(f"{label}: WARNING  {text}")
    tpu = None
    if "edgetpu_compile" in recipe.post:
        pre = edgetpu_preflight(info).to_dict()
        if edgetpu.compiler_path():
            t0 = time.perf_counter()
            res = edgetpu.compile_model(path, work)
            tpu = {"compiled": True, **res.to_dict(), "preflight": pre}
            log(f"{label}: edgetpu  {time.perf_counter() - t0:6.1f} s  {res.tpu_ops} ops on TPU, "
                f"{res.cpu_ops} on CPU -> {res.path.name}")
        else:
            tpu = {"compiled": False, "reason": "edgetpu_compiler not on PATH", "preflight": pre}
            log(f"{label}: edgetpu  skipped: edgetpu_compiler is not installed; kept the int8 model and our "
                f"pre-flight ({pre['mappable_ops']} of {pre['mappable_ops'] + pre['cpu_ops']} ops mappable)")
    t0 = time.perf_counter()
    acc = accuracy(model_bytes, eval_data) if eval_data is not None else None
    drop = within = None
    quant_notes: dict = {}
    sel = next((r for r in records if r.get("step") == "selective"), None)
    if sel is not None:
        quant_notes["kept_float"] = sel["kept_float"]
        if sel.get("activations"):
            quant_notes["activations"] = sel["activations"]
            msg = selective.SPEED_NOTES[sel["activations"]]
            warnings.append(msg)
            log(f"{label}: WARNING  {msg}")
    if acc is not None:
        log(f"{label}: validate {time.perf_counter() - t0:6.1f} s  accuracy {acc:.4f} in LiteRT")
    if acc is not None and reference is not None:
        drop = round(100.0 * (reference - acc), 2)
        within = drop <= recipe.max_drop + 1e-9
        if not within:
            msg = (f"over the accuracy budget: {drop:.1f} points below the Keras model (budget {recipe.max_drop:g}); "
                   f"select and sweep leave it out unless --include-over-budget")
            if recipe.mode in ("float32", "float16") and not recipe.steps:  # rounding cannot explain it
                msg = (f"the {recipe.mode} flatbuffer does not reproduce the Keras model ({drop:.1f} points below "
                       f"it), far more than float rounding explains: " + (
                           "values beyond float16's range (65504) or a conversion defect" if recipe.mode == "float16"
                           else "a conversion defect") + "; select and sweep leave it out")
            warnings.append(msg)
            log(f"{label}: WARNING  {msg}")
            if explain is not None and recipe.mode in ("int8", "int16x8"):
                from .quant_error import error_note
                kept_float = next((r.get("kept_float") or [] for r in records if r.get("step") == "selective"), [])
                quant_notes["largest_errors"] = explain(model_bytes, kept_float)
                hint = ("" if recipe.selective or recipe.qat else
                        "; quantization-aware training (the pcqat-int8-edgetpu recipe) trains the model for "
                        "int8, as the Edge TPU needs every layer int8" if profile.edgetpu else
                        "; the int8-selective recipe keeps such layers float")
                # a QAT variant is compared with the model before QAT, whose fine-tune moved the weights too:
                # MobileNetV2's pcqat-int8 named a depthwise conv 0.78 off where post-training int8 showed 0.16
                trained = any(r.get("step") == "qat" and not r.get("qat_dropped") for r in records)
                if trained:
                    hint = "; QAT's fine-tune moved the weights too, so part of each error is training, not rounding"
                note = error_note(recipe.mode, quant_notes["largest_errors"], kept_float, hint, reference=(
                    "the float model before quantization-aware training" if trained else "the float model"))
                if note:
                    warnings.append(note)
                    log(f"{label}: WARNING  {note}")
    return Variant(
        name=recipe.name, recipe=recipe.name, path=path.name, sha256=info.sha256, bytes=info.bytes,
        gzip_bytes=info.gzip_bytes, sparsity=round(info.sparsity, 4),
        max_unique_weights_per_channel=info.max_unique_per_channel, accuracy=acc, keras_accuracy=keras_acc,
        inputs=[dataclasses.asdict(t) for t in info.inputs], outputs=[dataclasses.asdict(t) for t in info.outputs],
        ops=info.ops,
        min_runtime_version=info.min_runtime_version, compatible=not problems, problems=problems,
        warnings=warnings, quantization={"mode": recipe.mode, "io": recipe.io, **quant_notes},
        optimizations={s: getattr(recipe, s) for s in recipe.steps} | (
            {"qat_scheme": recipe.qat_scheme} if recipe.qat else {}),
        survival=survival, edgetpu=tpu, steps=records, recipe_config=recipe.config(), macs=counts.get("macs"),
        params=counts.get("params"), max_drop=recipe.max_drop, accuracy_drop=drop, within_budget=within)


def convert_for_device(model, device: str | DeviceProfile, recipes: Sequence[str | Recipe] | None = None, *,
                       train=None,
                       calibration=None, eval=None, out: str | Path = "edgekit-out", log: Log = _stderr,
                       reuse: bool = False, labels=None, keep_going: bool = False,
                       overwrite: bool = False, max_drop: float | None = None, val=None,
                       cache: bool = True) -> Manifest:
    """Build, validate and describe every variant of `model` for `device`; returns the manifest.

    `model` is a path (.keras / .h5 / SavedModel folder) or a tf_keras model (never modified).
    `train` / `calibration` / `eval` / `val` are paths (.npz with `x`, `y`; image folders) or `Dataset`s.  `val`
    is held-out data for the strength searches (data the model did not train on); without it they use a split
    carved from `train`, which a model trained on `train` has seen (so the searches err on the safe side).
    `recipes` are names, .yaml paths or `Recipe` objects.  With `reuse`, variants already in `out` from the same
    source model file and recipe settings are kept instead of being built again.  `labels` (a file with one class
    name per line, or a list) go into the manifest for exports; by default the data's class names, if it has any.
    With `keep_going`, a recipe whose optimization or conversion fails is listed in the manifest's `failed` and
    the others are still built (without it, the first failure stops the run and nothing is written).
    `out` must be a folder of its own: one holding files edgekit did not write is refused unless `overwrite`,
    and then only edgekit's own files (listed in its manifest) are replaced.
    """
    profile = device if isinstance(device, DeviceProfile) else load_profile(device)
    out = outdir.check_out(out, overwrite)
    chosen = _plan(profile, recipes, max_drop)
    t_start = time.perf_counter()
    # 1. inputs, and everything that can fail before training (data problems stop here; a recipe this model
    #    cannot take fails alone)
    model, source, train, calibration, eval_data, val = _load_inputs(model, train, calibration, eval, val)
    if calibration is None and train is not None:
        calibration = train.sample(CALIBRATION_SAMPLES)
    labels = _labels(labels, source, train, eval_data)
    tfmot_model, unavailable = _tfmot_model(model, source, chosen, calibration or train, log)
    impossible = _preflight(tfmot_model, chosen, train, calibration, unavailable)
    if impossible and len(impossible) == len(chosen):
        raise OptimizationError(next(iter(impossible.values())))
    # 2. build every variant into a staging folder; 3. the manifest; 4. the staging folder becomes `out`
    work = outdir.staging(out)
    try:
        log(f"[{profile.name}] {len(chosen)} variants: {', '.join(r.name for r in chosen)}")
        ref_acc = _keras_accuracy(model, eval_data)
        baseline = majority_baseline(eval_data)
        at_chance = ref_acc is not None and baseline is not None and ref_acc <= baseline + CHANCE_MARGIN
        if ref_acc is not None and eval_data is not None:
            log(f"[{profile.name}] keras    reference accuracy {ref_acc:.4f} on {len(eval_data)} samples")
            if at_chance:
                log(f"edgekit: warning: the model scores {ref_acc:.4f} on {eval_data.source}, no better than always "
                    f"answering its most common class ({baseline:.4f}): is it trained? Accuracy drops and budgets "
                    f"mean nothing against this reference")
        optimizer = _Optimizer(tfmot_model, train, eval_data, log, ref_acc, val, use_cache=cache) \
            if train is not None and tfmot_model is not None else None
        failed: list[dict] = [{"recipe": name, "error": why, "stage": "preflight"}
                              for name, why in impossible.items()]
        for name, why in impossible.items():
            log(f"[{profile.name}] {name}: FAILED  {why}")
        previous = _previous_runs(out, source, reuse, log, profile.name)
        variants: list[Variant] = []

        def manifest_now() -> Manifest:
            m = Manifest(
                device=profile.name, device_profile=profile.to_dict(), source_model=source,
                reference_keras_accuracy=ref_acc,
                eval_data=None if eval_data is None else {
                    "source": eval_data.source, "samples": len(eval_data), "majority_baseline": baseline,
                    "reference_at_chance": at_chance},
                variants=variants, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                edgekit_version=__version__, labels=labels, failed=failed)
            m.files = sorted({*outdir.written(work), "manifest.json"} - {"manifest.json.tmp"})
            m.validation_data = None if optimizer is None else optimizer.validation_record()
            return m
        todo = [r for r in chosen if r.name not in impossible]
        for at, recipe in enumerate(todo):
            label = f"[{profile.name}] {recipe.name}"
            if optimizer is not None:
                optimizer.plan(todo[at:])
            kept = _reuse(recipe, previous, work)
            if kept is not None:
                variants.append(kept)
                log(f"{label}: reused  {kept.bytes:,} bytes from the previous run (same source model and recipe)")
                continue
            try:
                variants.append(_build_one(recipe, profile, model, optimizer, ref_acc, calibration, eval_data,
                                           work, log, label))
            except Exception as e:
                failure = _recipe_failure(recipe, e, keep_going)  # re-raises what must stop the run
                failed.append(failure)
                log(f"{label}: FAILED  {failure['error']}" + (" (the other variants are kept)"
                                                              if failure.get("stage") == "resources" else ""))
            if variants:  # after every variant: a run killed from outside (e.g. out of memory) loses nothing
                manifest_now().write(work / "manifest.json")
        if failed and not variants:
            raise OptimizationError(f"every recipe failed; first: {failed[0]['recipe']}: {failed[0]['error']}")
        if optimizer is not None:
            _memorized_split_hint(optimizer, chosen, ref_acc, eval_data, log)
        manifest = manifest_now()
        manifest.write(work / "manifest.json")
        outdir.install(work, out)
        outdir.discard(outdir.interrupted(out))  # its variants were reused or are superseded by this run
        log(f"[{profile.name}] done in {time.perf_counter() - t_start:.1f} s -> {out}/manifest.json")
        return manifest
    except BaseException:
        stopped = outdir.keep_interrupted(work, out)
        if stopped is not None:
            log(f"[{profile.name}] the run did not end: its finished variants are kept in {stopped}; run the same "
                f"command with --resume to build only the rest")
        raise


def _memorized_split_hint(optimizer: _Optimizer, chosen: list[Recipe], ref_acc, eval_data, log: Log) -> None:
    """A split carved from --train that the model trained on flatters the original model (it scores higher there
    than on --eval), so every candidate looks worse than it is and the searches stop early, while int8-selective
    sees fewer of int8's changed answers there than unseen data shows (the zoo's MobileNetV2: 1.8% against 3.5%),
    and keeps too little float.  Say so when the gap exceeds the share of the budget a decision may spend; --eval
    only reports here, it decides nothing."""
    from .optimize.search import MARGIN
    selecting = any(r.selective for r in chosen)
    if not optimizer.carved or ref_acc is None or eval_data is None or not (optimizer.searched or selecting):
        return
    gap = optimizer.seen_gap = 100.0 * (optimizer.reference_on_val() - ref_acc)
    allowed = min((r.max_drop for r in chosen if r.steps or r.selective), default=None)
    if allowed is None or gap <= allowed * MARGIN:
        return
    what = ([f"the strength searches judged every candidate {gap:.1f} points too harshly and chose weaker settings"]
            if optimizer.searched else []) + (
        ["int8-selective saw fewer of int8's changed answers there than unseen data would show, and may have kept "
         "too little in float"] if selecting else [])
    log(f"edgekit: warning: the model scores {optimizer.val_reference:.4f} on the validation split carved from "
        f"--train but {ref_acc:.4f} on --eval: it has seen that split, so {'; and '.join(what)}; give --val DATA "
        f"(held out from training) for decisions that hold on unseen data")


def _plan(profile: DeviceProfile, recipes, max_drop: float | None) -> list[Recipe]:
    """The recipes to build (the device's defaults unless named), checked against the device, with the device's
    channel tile and the user's accuracy budget applied."""
    chosen = [r if isinstance(r, Recipe) else load_recipe(r) for r in (recipes or profile.default_recipes)]
    for r in chosen:
        check_recipe_fits(r, profile)
    chosen = [_with_channel_multiple(r, profile) for r in chosen]
    if max_drop is not None:  # the user's accuracy budget overrides the recipes'
        if not 0 <= max_drop <= 100:
            raise ConfigError(f"--max-drop must be between 0 and 100 points, got {max_drop:g}")
        chosen = [dataclasses.replace(r, max_drop=float(max_drop)) for r in chosen]
    if len({r.name for r in chosen}) != len(chosen):
        raise ConfigError("a recipe is named twice")
    return chosen


def previous_variant(recipe: Recipe, previous: dict) -> tuple[Variant, Path] | None:
    """The (variant, file) of `previous` (see `_reusable`) built with this recipe's name and settings."""
    hit = previous.get(json.dumps(recipe.config(), sort_keys=True))
    return hit if hit is not None and hit[0].name == recipe.name else None


def variant_files(model_file: Path) -> list[Path]:
    """A variant's files: the model and any Edge TPU compiler output beside it."""
    return [model_file, *model_file.parent.glob(f"{model_file.stem}_edgetpu*")]


def _reuse(recipe: Recipe, previous: dict, work: Path) -> Variant | None:
    """The variant a previous run built from the same source model and recipe settings, copied into `work`."""
    hit = previous_variant(recipe, previous)
    if hit is None:
        return None
    for f in variant_files(hit[1]):
        shutil.copy2(f, work / f.name)
    return hit[0]


def _recipe_failure(recipe: Recipe, e: Exception, keep_going: bool) -> dict:
    """How a recipe's failure is listed in the manifest, or the exception again when it must stop the run:
    optimization / conversion errors without `keep_going`, and anything that is not ours or the machine's."""
    if isinstance(e, ResourceLimitError):  # a limit of this machine, not the user's input: fails alone
        return {"recipe": recipe.name, "error": f"recipe '{recipe.name}': {e}", "stage": "resources"}
    if isinstance(e, (OptimizationError, ConversionError)):
        if not keep_going:
            raise e
        return {"recipe": recipe.name, "error": str(e)}
    if _resource_failure(e):  # out of memory: this recipe alone fails, the others are kept
        return {"recipe": recipe.name, "error": f"recipe '{recipe.name}': {_one_line(e)}", "stage": "resources"}
    raise e


def _build_one(recipe: Recipe, profile: DeviceProfile, model, optimizer, ref_acc, calibration, eval_data, work: Path,
               log: Log, label: str) -> Variant:
    """Optimize (reusing shared steps), convert, check the flatbuffer against the budget, and validate one recipe."""
    from .compress.flops import count

    def build(r: Recipe) -> tuple:
        return _optimize_and_convert(r, profile, model, optimizer, calibration, log, label)
    built = build(recipe)
    if optimizer is not None and _searched_steps(recipe):
        built = _checked_on_flatbuffer(recipe, built, optimizer, build, log, label)
    converted, plain, records, model_bytes = built
    steps = [r for r in records if r["step"] != "convert"]
    keras_acc = steps[-1]["accuracy_after"] if steps else ref_acc  # measured by the last step
    if steps and steps[-1].get("qat_dropped"):  # converted from the model before QAT
        keras_acc = steps[-1]["accuracy_before"]
    if recipe.selective:
        decide = optimizer.val if optimizer is not None else calibration
        model_bytes = selective.choose(recipe, converted, plain, model_bytes, calibration, decide, profile, records,
                                       log, label)
    try:
        counts = count(plain)
    except Exception:
        counts = {}
    def explain(model_bytes: bytes, kept_float: list[str]) -> list[dict]:
        from .quant_error import worst_layers
        try:
            return worst_layers(model_bytes, plain, calibration.x, skip=kept_float) if calibration is not None else []
        except Exception:
            return []
    return _build_variant(recipe, profile, model_bytes, work, keras_acc, eval_data, records, log, label, counts,
                          ref_acc, explain)


def _optimize_and_convert(recipe: Recipe, profile: DeviceProfile, model, optimizer, calibration, log: Log,
                          label: str) -> tuple:
    """(model converted, plain Keras model before QAT, step records ending with `convert`, flatbuffer bytes)."""
    from .convert.tflite import convert_loadable
    converted, plain, records = (optimizer.run(recipe, label) if recipe.steps else (model, model, []))
    reset_peak()
    t0 = time.perf_counter()
    stats: dict = {}
    rebuild = (plain, recipe.qat_scheme) if recipe.qat and converted is not plain else None
    # a dynamic-range model the device's runtime cannot load is built with per-tensor dense weights when that
    # helps (if not, the variant is flagged as before)
    model_bytes, dense = convert_loadable(converted, recipe.mode, recipe.io, calibration, profile.static_shapes,
                                          profile.runtime, stats, rebuild)
    if dense:
        stats["dense_weights"] = dense
    secs = time.perf_counter() - t0
    logging.getLogger("edgekit.convert").debug("%s: converted (%s, io %s, %s calibration samples): %d bytes in "
                                               "%.1f s", recipe.name, recipe.mode, recipe.io,
                                               len(calibration) if calibration is not None else 0, len(model_bytes),
                                               secs)
    peak = peak_mb()
    records = [*records, {"step": "convert", "mode": recipe.mode, "seconds": round(secs, 2),
                          "bytes": len(model_bytes), "peak_rss_mb": peak, **stats}]
    log(f"{label}: convert  {secs:6.1f} s  {len(model_bytes):,} bytes ({recipe.mode}, io {recipe.io}"
        + (f"; dense weights {stats['dense_weights']}" if stats.get("dense_weights") else "") + ")"
        + (f"  peak {peak:,.0f} MB" if peak else "")
        + (f" (in a child process: {stats['child_peak_rss_mb']:,.0f} MB)" if stats.get("isolated") else ""))
    return converted, plain, records, model_bytes


def _checked_on_flatbuffer(recipe: Recipe, built: tuple, optimizer: _Optimizer, build: Callable, log: Log,
                           label: str) -> tuple:
    """The strength searches judge the Keras model, but what ships is the flatbuffer, and int8 can cost another
    point on top (MobileNetV2: 8 clusters passed in Keras on validation, and the int8 model lost 1.8 points on
    --eval).  So the converted variant is judged on the same validation split and share of the budget: over it, the
    last searched step is backed off one notch and the chain converted again (at most BACKOFFS times, and no more
    once a weaker setting does not help: then int8 itself is what loses), and the most accurate flatbuffer is
    kept.  `flatbuffer_check` in the convert record says what was tried."""
    from .optimize.search import rule, verdict, verdict_text
    from .validate import correct
    val = optimizer.val
    if val.y is None:
        return built
    optimizer.reference_on_val()
    tried = recipe
    tries: list[dict[str, Any]] = []
    best: tuple[float, tuple, int] | None = None
    while True:
        v = verdict(optimizer.val_correct, correct(built[3], val), recipe.max_drop)
        acc, drop = v["validation_accuracy"], v["drop_points"]
        tries.append({"settings": _chosen(built[2]), **v})
        if best is None or acc > best[0]:
            best = (acc, built, len(tries) - 1)
        if v["within_budget"]:
            break
        if len(tries) > 1 and acc <= tries[-2]["validation_accuracy"]:
            log(f"{label}: check    a weaker setting did not help the {recipe.mode} flatbuffer ({drop:+.1f} pts on "
                f"validation): its loss is not the searched steps'")
            break
        weaker = _one_notch_weaker(recipe, tried, built[2]) if len(tries) <= BACKOFFS else None
        if weaker is None:
            break
        step, value, tried = weaker
        log(f"{label}: check    the {recipe.mode} flatbuffer is {verdict_text(v, recipe.max_drop)}: "
            f"trying {step} {_show(step, value)}")
        del built  # the best is held in `best`; a losing chain is released before the next is built
        optimizer.release()
        built = build(tried)
    _acc, built, at = best
    records = [dict(r) for r in built[2]]
    records[-1]["flatbuffer_check"] = {"max_drop": recipe.max_drop, **rule(recipe.max_drop), "samples": len(val),
                                       "tries": tries, "kept": at}
    if len(tries) > 1:
        kept = tries[at]
        log(f"{label}: check    kept {_settings_text(kept['settings'])} ({kept['drop_points']:+.1f} pts on "
            f"validation as a flatbuffer)")
    return built[0], built[1], records, built[3]


def _with_channel_multiple(recipe: Recipe, profile: DeviceProfile) -> Recipe:
    """Filter pruning keeps channel counts at the device's int8 kernel tile unless the recipe names one."""
    if recipe.filters is None or recipe.filters.channel_multiple != "device":
        return recipe
    from .compress.kernels import resolve
    return dataclasses.replace(recipe, filters=recipe.filters.with_(channel_multiple=resolve(profile.channel_multiple)))


def _source_sha(path: Path) -> str:
    """sha256 of a model file, or of every file of a SavedModel folder (names and contents)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _previous_runs(out: Path, source: dict, reuse: bool, log: Log, device: str) -> dict:
    """Variants to reuse: from a previous complete run into `out` and from an interrupted one beside it."""
    stopped = _reusable(outdir.interrupted(out), source)
    if not reuse:
        if stopped:
            log(f"[{device}] an interrupted run left {len(stopped)} finished variants in {outdir.interrupted(out)}; "
                f"pass --resume to reuse them (this run builds everything again)")
        return {}
    found = {**_reusable(out, source), **stopped}
    if stopped:
        log(f"[{device}] resuming: {len(stopped)} variants of an interrupted run can be reused")
    return found


def _reusable(out: Path, source: dict) -> dict:
    """Variants of a previous run into `out` from the same source model: recipe config -> (Variant, file)."""
    from .manifest import load_manifest, variant_file
    if not source.get("sha256") or not (out / "manifest.json").exists():
        return {}
    try:
        old = load_manifest(out / "manifest.json")
    except ConfigError:
        return {}
    if old.source_model.get("sha256") != source["sha256"]:
        return {}
    found = {}
    for v in old.variants:
        try:
            f = variant_file(out / "manifest.json", v)  # inside the folder, and the bytes it describes
        except ConfigError:
            continue
        if v.recipe_config:
            found[json.dumps(v.recipe_config, sort_keys=True)] = (v, f)
    return found
