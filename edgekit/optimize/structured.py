"""Steps that change the architecture: structured filter pruning and low-rank factorization, then fine-tuning."""
from __future__ import annotations

from ..data import Dataset
from .steps import Factorize, Filters
from .train import fine_tune, outputs_probabilities, refresh_batchnorm


def filters(model, cfg: Filters, data: Dataset, teacher=None, distill=None):
    """Remove whole filters to about `target_flops` of the MACs, ratios scaled per layer by filter sensitivity,
    channel counts kept at multiples of `channel_multiple` (the device's int8 kernel tile).

    The sensitivity is measured on training samples, by output divergence (as for magnitude pruning): measured on
    the validation split, the allocation would be fitted to the samples that then judge it."""
    from ..compress.filters import prune_to_flops
    from ..compress.flops import count
    from ..compress.sensitivity import analyse
    weights, decided_on = None, None
    if cfg.allocation == "sensitivity":
        sample = data.sample(min(len(data), 300), seed=1)
        sens = analyse(model, sample, method="filter")
        # robust layers (outputs moved little with 50% of their filters removed) take more of the cut
        mid = sens["sparsities"].index(0.5) if 0.5 in sens["sparsities"] else len(sens["sparsities"]) // 2
        drops = {n: max(0.0, d["divergence"][mid]) for n, d in sens["layers"].items()}
        worst = max(drops.values(), default=0.0) or 1.0
        weights = {n: 1.5 - d / worst for n, d in drops.items()}
        decided_on = f"output divergence on {len(sample)} training samples"
    multiple = cfg.channel_multiple if isinstance(cfg.channel_multiple, int) else 1  # 'device' resolved earlier
    before = count(model, multiple)
    smaller, frac, fraction = prune_to_flops(model, float(cfg.target_flops), weights,
                                             multiple=multiple)
    after = count(smaller, multiple)
    fit = fine_tune(smaller, data, epochs=cfg.epochs, lr=1e-3,
                    probabilities=outputs_probabilities(model), teacher=teacher, distill=distill)
    if (bn := refresh_batchnorm(smaller, data)) is not None:
        fit["batchnorm_refreshed"] = bn
    return smaller, {"macs_before": before["macs"], "macs_after": after["macs"], "params_before": before["params"],
                     "params_after": after["params"], "flops_fraction": round(frac, 4),
                     "prune_fraction": round(fraction, 4), "channel_multiple": multiple,
                     "effective_macs_before": before.get("effective_macs", before["macs"]),
                     "effective_macs_after": after.get("effective_macs", after["macs"]), "fit": fit,
                     **({"allocation_decided_on": decided_on} if decided_on else {})}


def factorize(model, cfg: Factorize, data: Dataset, teacher=None, distill=None):
    from ..compress.factorize import factorize as svd
    from ..compress.flops import count
    before = count(model)
    smaller, report = svd(model, energy=float(cfg.energy) if not cfg.rank else None, rank=cfg.rank)
    after = count(smaller)
    fit = fine_tune(smaller, data, epochs=cfg.epochs, lr=5e-4,
                    probabilities=outputs_probabilities(model), teacher=teacher, distill=distill) if report else None
    if fit is not None and (bn := refresh_batchnorm(smaller, data)) is not None:
        fit["batchnorm_refreshed"] = bn
    return smaller, {"layers": report, "macs_before": before["macs"], "macs_after": after["macs"],
                     "params_before": before["params"], "params_after": after["params"], "fit": fit}


AUTO_FLOPS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # share of the MACs kept, strongest first
AUTO_ENERGY = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)  # share of squared singular values kept, strongest first


def searched(step: str, model, cfg: Filters | Factorize, fit: Dataset, val: Dataset, max_drop: float, reference,
             teacher=None, distill=None, memo=None):
    """filters with `target_flops: auto` or factorize with `energy: auto`: the strongest setting within budget."""
    from ..compress.sensitivity import correct_of
    from .search import strongest
    key, settings, fn = (("target_flops", AUTO_FLOPS, filters) if step == "filters" else
                         ("energy", AUTO_ENERGY, factorize))
    value, smaller, details, trace = strongest(
        settings, lambda s: fn(model, cfg.with_(**{key: s}), fit, teacher=teacher, distill=distill),
        lambda m: correct_of(m, val), reference, max_drop, key, memo)
    trace["validation_samples"] = len(val)
    return smaller, {**details, key: value, "search": trace}
