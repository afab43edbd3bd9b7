"""Magnitude pruning (incl. 2:4 structured) with TF-MOT: apply -> fine-tune -> strip."""
from __future__ import annotations

from ..data import Dataset
from ..errors import OptimizationError
from .train import fine_tune, outputs_probabilities, steps_per_epoch


def _wrap(model, cfg: dict, steps: int):
    from .._tf import tfmot
    sparsity = tfmot.sparsity.keras
    epochs = int(cfg.get("epochs", 4))
    end = max(1, int(steps * epochs * 0.75))
    freq = max(1, steps // 4)
    kwargs = {}
    if cfg.get("structure") == "2:4":
        kwargs["sparsity_m_by_n"] = (2, 4)
        schedule = sparsity.ConstantSparsity(0.5, begin_step=0, frequency=freq)
    elif cfg.get("schedule", "polynomial") == "constant":
        schedule = sparsity.ConstantSparsity(float(cfg["target"]), begin_step=0, frequency=freq)
    else:
        schedule = sparsity.PolynomialDecay(initial_sparsity=0.0, final_sparsity=float(cfg["target"]),
                                            begin_step=0, end_step=end, frequency=freq)
    try:
        return sparsity.prune_low_magnitude(model, pruning_schedule=schedule, **kwargs)
    except (ValueError, RuntimeError) as e:
        raise OptimizationError(f"pruning cannot wrap this model: {str(e).splitlines()[0]}") from e


def preflight(model, cfg: dict) -> None:
    """Fail fast (before any training) when a layer cannot be pruned."""
    from ..modelio import clone
    _wrap(clone(model), cfg, steps=10)


def prune(model, cfg: dict, data: Dataset):
    """Return a pruned, stripped copy of `model` (the argument is left untouched)."""
    from .._tf import tfmot
    from ..modelio import clone
    steps = steps_per_epoch(data)
    wrapped = _wrap(clone(model), cfg, steps)
    fine_tune(wrapped, data, epochs=int(cfg.get("epochs", 4)), lr=1e-3,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], probabilities=outputs_probabilities(model))
    return tfmot.sparsity.keras.strip_pruning(wrapped)
