"""Magnitude pruning with TF-MOT (uniform, sensitivity-allocated per layer, or 2:4): apply -> fine-tune -> strip."""
from __future__ import annotations

import math

from ..data import Dataset
from ..errors import OptimizationError
from .steps import Prune
from .train import fine_tune, outputs_probabilities, refresh_batchnorm, steps_per_epoch


def _schedule(cfg: Prune, target: float, steps: int):
    from .._tf import tfmot
    sparsity = tfmot.sparsity.keras
    epochs = cfg.epochs
    freq = max(1, steps // 4)
    if cfg.schedule == "constant":
        return sparsity.ConstantSparsity(target, begin_step=0, frequency=freq)
    return sparsity.PolynomialDecay(initial_sparsity=0.0, final_sparsity=target, begin_step=0,
                                    end_step=max(1, int(steps * epochs * 0.75)), frequency=freq)


def _wrap(model, cfg: Prune, steps: int, allocation: dict | None = None):
    """Wrap the prunable layers only; returns (wrapped model, {layer left as it is: why})."""
    from .._tf import keras, tfmot
    from .support import prune_skip_reason, skipped_layers
    sparsity = tfmot.sparsity.keras
    m_by_n = cfg.structure == "2:4"
    skipped = skipped_layers(model, lambda layer: prune_skip_reason(layer, m_by_n))
    wanted = {layer.name for layer in model.layers if layer.name not in skipped}
    if not wanted:
        raise OptimizationError("no layer of this model has weights TF-MOT can prune ("
                                + "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:3]) + ")")

    def per_layer(layer):  # each layer its own final sparsity; everything else stays as it is
        if layer.name not in wanted:
            return layer
        if m_by_n:
            return sparsity.prune_low_magnitude(
                layer, pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=max(1, steps // 4)),
                sparsity_m_by_n=(2, 4))
        s = float(cfg.target or 0) if allocation is None else allocation.get(layer.name, 0.0)
        return sparsity.prune_low_magnitude(layer, pruning_schedule=_schedule(cfg, s, steps)) if s > 0 else layer
    try:
        return keras.models.clone_model(model, clone_function=per_layer), skipped
    except (ValueError, RuntimeError, TypeError) as e:
        raise OptimizationError(f"pruning cannot wrap this model: {str(e).splitlines()[0][:200]}") from e


def preflight(model, cfg: Prune) -> None:
    """Fail fast (before any training) when a layer cannot be pruned."""
    from ..modelio import clone
    _wrap(clone(model), cfg.with_(target=0.5) if cfg.target == "auto" else cfg, steps=10)


def allocate(model, cfg: Prune, data: Dataset) -> tuple[dict | None, dict]:
    """Per-layer sparsities when the recipe asks for `allocation: sensitivity`."""
    if cfg.allocation != "sensitivity" or cfg.structure == "2:4":
        return None, {}
    from ..compress import allocate as alloc
    from ..compress.sensitivity import analyse
    sens = analyse(model, data, method="magnitude")
    per_layer = alloc.by_sensitivity(sens, float(cfg.target or 0))
    return per_layer, {"allocation": {k: round(v, 3) for k, v in per_layer.items()},
                       "allocation_small_layers": sorted(alloc.small_layers(sens["layers"])),
                       "allocated_sparsity": round(alloc.achieved(sens, per_layer), 4),
                       "allocation_decided_on": f"output divergence on {len(data)} training samples",
                       "sensitivity_cached": sens.get("cached", False)}


def _allocation_sample(data: Dataset) -> Dataset:
    """The training samples the allocation is decided on (the same ones for every trial of a search, so the
    sensitivity analysis runs once and is remembered)."""
    return data.sample(min(len(data), 300), seed=1)


def prune(model, cfg: Prune, data: Dataset, teacher=None, distill=None):
    """Return (a pruned, stripped copy of `model`, details).  The argument is left untouched."""
    from .._tf import tfmot
    from ..modelio import clone
    # the allocation is decided on training samples (by output divergence, which needs no labels and still
    # measures on data the model has memorized), not on the validation split that judges the result: allocated
    # there, MobileNetV2 at 85% scored -0.4 points on those 280 samples and -9.1 on --eval
    allocation, details = allocate(model, cfg, _allocation_sample(data))
    steps = steps_per_epoch(data)
    wrapped, skipped = _wrap(clone(model), cfg, steps, allocation)
    if skipped:
        details["layers_left"] = skipped
    details["fit"] = fine_tune(wrapped, data, epochs=cfg.epochs, lr=1e-3,
                               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
                               probabilities=outputs_probabilities(model), teacher=teacher, distill=distill)
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    if (bn := refresh_batchnorm(stripped, data)) is not None:
        details["batchnorm_refreshed"] = bn
    details["dense_weights"] = where_dense(stripped, skipped, allocation, details.get("allocation_small_layers", ()),
                                           cfg)
    return stripped, details


def where_dense(model, skipped: dict, allocation: dict | None, small, cfg: Prune) -> dict:
    """Where the kernel weights pruning left non-zero sit, by cause, so a shortfall says why (asked 95%, got 75%):
    {cause: {"layers", "kinds", "nonzero_share" (of all kernel weights), "sparsity": [lowest, highest]}}, causes
    `not_prunable` (TF-MOT leaves the layer alone), `small` (the allocation leaves it dense for its size),
    `sensitive` (the allocation holds it below the cap), `cap` (at the allocation's cap), `target` (uniform)."""
    from ..compress.allocate import MAX_SPARSITY
    from .train import kernel_counts
    counts = kernel_counts(model)
    total = sum(size for _, size, _ in counts.values()) or 1
    out: dict[str, dict] = {}
    for name, (kind, size, zeros) in counts.items():
        if name in skipped or (allocation is not None and name not in allocation):
            cause = "not_prunable"
        elif allocation is None:
            cause = "target" if cfg.target else "not_prunable"
        elif name in small:
            cause = "small"
        else:
            cause = "cap" if allocation[name] >= MAX_SPARSITY - 1e-9 else "sensitive"
        g = out.setdefault(cause, {"layers": 0, "kinds": [], "nonzero_share": 0.0, "sparsity": [1.0, 0.0]})
        g["layers"] += 1
        if kind not in g["kinds"]:
            g["kinds"].append(kind)
        g["nonzero_share"] += (size - zeros) / total
        g["sparsity"] = [min(g["sparsity"][0], zeros / size), max(g["sparsity"][1], zeros / size)]
    for g in out.values():
        g["nonzero_share"] = round(g["nonzero_share"], 4)
        g["sparsity"] = [round(x, 3) for x in g["sparsity"]]
    return out


AUTO_TARGETS = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3)  # strongest first


def prune_auto(model, cfg: Prune, fit: Dataset, val: Dataset, max_drop: float, reference, teacher=None,
               distill=None, memo=None):
    """The strongest sparsity of AUTO_TARGETS whose pruned, fine-tuned model stays within the budget on `val`
    against `reference` (per validation sample, is the original model right); returns (model, details with the
    trace)."""
    from ..compress.sensitivity import correct_of
    from .search import strongest
    targets, reach = auto_targets(model, cfg, fit)
    target, pruned, details, trace = strongest(
        targets, lambda t: prune(model, cfg.with_(target=t), fit, teacher=teacher, distill=distill),
        lambda m: correct_of(m, val), reference, max_drop, "target", memo)
    trace["validation_samples"] = len(val)
    if reach is not None:
        trace["reachable"] = reach
    return pruned, {**details, "target": target, "search": trace}


def auto_targets(model, cfg: Prune, data: Dataset) -> tuple[tuple, float | None]:
    """The sparsities a search tries, strongest first, and the most the allocation can reach (None: no limit
    known).  With a sensitivity allocation, the targets above what it can reach (the small layers dense, every other
    at its cap) all give the same model: they are replaced by that reach, so no trial trains a model another trial
    trained (the bench's odd model: 80% and 90% were one model, and one of its four trials went to it twice)."""
    if cfg.allocation != "sensitivity" or cfg.structure == "2:4":
        return AUTO_TARGETS, None
    from ..compress.sensitivity import analyse
    return targets_within(analyse(model, _allocation_sample(data), method="magnitude"))


def targets_within(sensitivity: dict) -> tuple[tuple, float]:
    """AUTO_TARGETS with those above the allocation's reach replaced by the reach (in whole percent, rounded down)."""
    from ..compress.allocate import reachable
    reach = math.floor(reachable(sensitivity) * 100 + 1e-9) / 100
    if reach >= AUTO_TARGETS[0] or reach <= 0:
        return AUTO_TARGETS, reach
    return (reach, *(t for t in AUTO_TARGETS if t < reach - 0.005)), reach
