"""The optimization steps a recipe may chain, declared once: each step's settings (a record with its defaults and
bounds, as the recipe file spells them under `optimize:`) and what the pipeline does with it (a registry entry:
preflight, apply, the strength searched when a setting is `auto`).  No TensorFlow at import; the step functions
import it when they run."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..record import parse, rule


def _fraction(lo: float, hi: float, what: str):
    def check(value) -> str | None:
        if value == "auto" or (isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi):
            return None
        return f"must be {what} between {lo} and {hi} or 'auto', got {value!r}"
    return check


@dataclass(frozen=True, kw_only=True)
class Step:
    """Common to every step: `given` is the mapping as the recipe wrote it (cache keys and manifests use it, so
    stating a default explicitly or not changes nothing else)."""
    given: dict = rule(factory=dict, internal=True)

    @classmethod
    def of(cls, given: dict, where: str = "recipe", prefix: str = "") -> Any:
        return parse(cls, given, where, prefix)

    def with_(self, **changes) -> Any:
        """A copy with some settings changed (and recorded as given)."""
        return dataclasses.replace(self, **changes, given={**self.given, **changes})


def default_of(record: type, name: str) -> Any:
    """A step setting's declared default (for other records that offer the same setting)."""
    return next(f.default for f in dataclasses.fields(record) if f.name == name)


@dataclass(frozen=True, kw_only=True)
class Prune(Step):
    """Magnitude pruning (TF-MOT), uniform, sensitivity-allocated per layer, or 2:4."""
    target: float | Literal["auto"] | None = rule(None, check=_fraction(0.0, 0.99, "a sparsity"))
    schedule: Literal["constant", "polynomial"] = "polynomial"
    structure: Literal["2:4"] | None = None
    allocation: Literal["uniform", "sensitivity"] = "uniform"
    epochs: int = rule(4, minimum=1)


@dataclass(frozen=True, kw_only=True)
class Filters(Step):
    """Structured filter pruning (`prune: {structure: filters}`): whole filters, to a share of the MACs."""
    structure: Literal["filters"] = "filters"
    target_flops: float | Literal["auto"] = rule(0.5, check=_fraction(0.05, 0.99, "a share of the MACs"))
    channel_multiple: int | str = rule("device", check=lambda v: None if v == "device" or (
        isinstance(v, int) and not isinstance(v, bool) and v >= 1) else "must be a positive integer or 'device' (the "
        f"device profile's int8 kernel tile), got {v!r}")
    allocation: Literal["uniform", "sensitivity"] = "sensitivity"
    epochs: int = rule(6, minimum=1)
    # latency-driven (NetAdapt-style) instead of MACs: a share of the latency the board's op table predicts
    target_latency: float | None = rule(None, minimum=0.05, maximum=0.99)
    board: str | None = None  # whose op table (`edgekit lut build --board B`)
    threads: int = rule(1, minimum=1)
    store: str | None = None  # where that table is (default ./edgekit.db or $EDGEKIT_STORE)

    def __post_init__(self):
        from ..errors import ConfigError
        if self.target_latency is not None and not self.board:
            raise ConfigError("prune: {structure: filters, target_latency: ...} needs board: (the board whose op "
                              "table predicts latency)")
        if self.target_latency is not None and "target_flops" in self.given:
            raise ConfigError("prune: {structure: filters} takes target_flops or target_latency, not both")


@dataclass(frozen=True, kw_only=True)
class Cluster(Step):
    clusters: int | Literal["auto"] = rule(minimum=2, maximum=256)  # 'auto': the fewest within max_drop
    init: Literal["kmeans++", "linear", "density", "random"] = "kmeans++"
    epochs: int = rule(3, minimum=1)


@dataclass(frozen=True, kw_only=True)
class Qat(Step):
    epochs: int = rule(3, minimum=1)


@dataclass(frozen=True, kw_only=True)
class Factorize(Step):
    """Low-rank factorization (SVD) of Dense / 1x1 Conv layers."""
    energy: float | Literal["auto"] = rule(0.9, check=_fraction(0.1, 0.9999, "a share of the spectrum"))
    rank: int | None = rule(None, minimum=1)
    epochs: int = rule(3, minimum=1)


@dataclass(frozen=True, kw_only=True)
class Distill(Step):
    """Knowledge distillation from the original model in every fine-tune of the recipe."""
    temperature: float = rule(4.0, minimum=0.5, maximum=50)
    alpha: float = rule(0.3, minimum=0.0, maximum=1.0)


@dataclass(frozen=True)
class StepKind:
    """What the pipeline does with one kind of step."""
    name: str
    record: type
    strength: str | None  # the setting `auto` searches
    changes_architecture: bool = False
    # (model, settings, recipe) -> None, raising OptimizationError when this model cannot take the step
    preflight: Callable[[Any, Any, Any], None] | None = None
    # (optimizer, model, settings, recipe, teacher kwargs) -> (model, details)
    apply: Callable[..., tuple[Any, dict]] = lambda *a, **k: (_ for _ in ()).throw(NotImplementedError)
    apply_auto: Callable[..., tuple[Any, dict]] | None = None

    def searched(self, settings) -> bool:
        return self.strength is not None and getattr(settings, self.strength, None) == "auto"


def _factorize(opt, model, cfg, recipe, **kw):
    from . import structured
    return structured.factorize(model, cfg, opt.train, **kw)


def _filters_preflight(model, cfg, recipe):
    if cfg.target_latency is not None:  # the board's op table exists before any training
        from .netadapt import table_for
        table_for(cfg)


def _filters(opt, model, cfg, recipe, **kw):
    if cfg.target_latency is not None:
        from .netadapt import latency_filters
        return latency_filters(model, cfg, opt.fit, opt.val, recipe.mode, recipe.io, opt.reference_on_val(),
                               recipe.max_drop, **kw)
    from . import structured
    return structured.filters(model, cfg, opt.train, **kw)


def _structured_auto(step):
    def run(opt, model, cfg, recipe, **kw):
        from . import structured
        return structured.searched(step, model, cfg, opt.fit, opt.val, recipe.max_drop, opt.val_correct, **kw)
    return run


def _prune_preflight(model, cfg, recipe):
    from . import prune
    prune.preflight(model, cfg)


def _prune(opt, model, cfg, recipe, **kw):
    from . import prune
    return prune.prune(model, cfg, opt.train, **kw)


def _prune_auto(opt, model, cfg, recipe, **kw):
    from . import prune
    return prune.prune_auto(model, cfg, opt.fit, opt.val, recipe.max_drop, opt.val_correct, **kw)


def _cluster_preflight(model, cfg, recipe):
    from . import cluster
    cluster.preflight(model, cfg, preserve_sparsity=recipe.prune is not None)


def _cluster(opt, model, cfg, recipe, **kw):
    from . import cluster
    return cluster.cluster(model, cfg, opt.train, preserve_sparsity=recipe.prune is not None, **kw)


def _cluster_auto(opt, model, cfg, recipe, **kw):
    from . import cluster
    return cluster.cluster_auto(model, cfg, opt.fit, opt.val, recipe.prune is not None, recipe.max_drop,
                                opt.val_correct, **kw)


def _qat_preflight(model, cfg, recipe):
    from . import qat
    qat.preflight(model, recipe.qat_scheme or "QAT")


def _qat(opt, model, cfg, recipe, **kw):
    from . import qat
    return qat.qat(model, cfg, opt.train, recipe.qat_scheme, **kw)


# In the order a recipe runs them: architecture changes first, then the TF-MOT chain.
STEPS: dict[str, StepKind] = {k.name: k for k in (
    StepKind("factorize", Factorize, "energy", changes_architecture=True, apply=_factorize,
             apply_auto=_structured_auto("factorize")),
    StepKind("filters", Filters, "target_flops", changes_architecture=True, preflight=_filters_preflight,
             apply=_filters,
             apply_auto=_structured_auto("filters")),
    StepKind("prune", Prune, "target", preflight=_prune_preflight, apply=_prune, apply_auto=_prune_auto),
    StepKind("cluster", Cluster, "clusters", preflight=_cluster_preflight, apply=_cluster,
             apply_auto=_cluster_auto),
    StepKind("qat", Qat, None, preflight=_qat_preflight, apply=_qat),
)}
