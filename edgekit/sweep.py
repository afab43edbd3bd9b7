"""`edgekit sweep`: the whole loop for a model: grid of variants -> convert per device -> profile on boards ->
select per device and board -> report.  Resumable: a rerun reuses converted variants and stored measurements."""
from __future__ import annotations

import itertools
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, OptimizationError
from .optimize.steps import Cluster, Filters, Prune, Qat, default_of
from .profiles import DeviceProfile, QuantMode, Recipe, load_profile
from .record import parse, rule
from .schema import read_yaml

def _each(ok, what: str):
    def check(values) -> str | None:
        bad = [v for v in values if not ok(v)]
        return f"values are {what}, got {bad[0]!r}" if bad else None
    return check


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class GridEpochs:
    """Fine-tune epochs per step; the defaults are the steps' own."""
    prune: int = rule(default_of(Prune, "epochs"), minimum=1)
    cluster: int = rule(default_of(Cluster, "epochs"), minimum=1)
    qat: int = rule(default_of(Qat, "epochs"), minimum=1)
    filters: int = rule(default_of(Filters, "epochs"), minimum=1)


@dataclass(frozen=True)
class Grid:
    """A sweep grid file: every combination of these is one variant (where the device can run it)."""
    prune: tuple[Any, ...] = rule(check=_each(lambda p: p == "2:4" or (_num(p) and 0 <= p < 1),
                                              'sparsities in [0, 1) or "2:4"'))
    clusters: tuple[Any, ...] = rule(check=_each(lambda c: c in ("none", None) or (
        isinstance(c, int) and not isinstance(c, bool) and 2 <= c <= 256), "none or 2..256"))
    qat: tuple[bool, ...] = rule()
    quantization: tuple[QuantMode, ...] = rule()
    # target share of the MACs for structured filter pruning (none/0: not pruned)
    filters: tuple[Any, ...] = rule((0,), check=_each(lambda f: f in ("none", None, 0) or (
        isinstance(f, float) and 0.05 <= f < 1), "none/0 or a target fraction of the MACs in [0.05, 1)"))
    epochs: GridEpochs = GridEpochs()


DEFAULT_GRID = {"prune": [0, 0.75], "clusters": ["none", 16], "qat": [False, True],
                "quantization": ["float32", "dynamic", "int8"]}
FULL_GRID_EXAMPLE = {"prune": [0, 0.5, 0.75, 0.9, "2:4"], "clusters": ["none", 16, 32], "qat": [False, True],
                     "quantization": ["float32", "float16", "dynamic", "int8"], "filters": [0, 0.5],
                     "epochs": {"prune": 4, "cluster": 3, "qat": 3, "filters": 6}}


def load_grid(path: str | Path | None) -> Grid:
    if path is None:
        return parse(Grid, DEFAULT_GRID, "default grid")
    data = read_yaml(path, f"grid file {path} does not exist")
    return parse(Grid, data, Path(path).name)


def grid_recipes(grid: Grid | dict, profile: DeviceProfile) -> list[Recipe]:
    """Every meaningful combination the device can run (QAT only with int8; a device's own quantization rules)."""
    if isinstance(grid, dict):
        grid = parse(Grid, grid, "grid")
    epochs = grid.epochs
    io = "int8" if "int8" in profile.io_dtypes else profile.io_dtypes[0]
    recipes, seen = [], set()
    for flops, prune, clusters, qat, mode in itertools.product(grid.filters or (0,), grid.prune, grid.clusters,
                                                               grid.qat, grid.quantization):
        if mode not in profile.quant_modes or (qat and mode != "int8"):
            continue
        f = Filters.of({"structure": "filters", "target_flops": float(flops), "epochs": epochs.filters,
                        "channel_multiple": "device"}) if flops not in ("none", None, 0) else None
        p = None
        if prune == "2:4":
            p = Prune.of({"target": 0.5, "structure": "2:4", "schedule": "constant", "epochs": epochs.prune})
        elif prune:
            p = Prune.of({"target": float(prune), "schedule": "polynomial", "epochs": epochs.prune})
        c = Cluster.of({"clusters": int(clusters), "init": "kmeans++", "epochs": epochs.cluster}) \
            if clusters not in ("none", None) else None
        q = Qat.of({"epochs": epochs.qat}) if qat else None
        parts = [f"f{int(round(float(flops) * 100))}" if f else "",
                 ("p24" if prune == "2:4" else f"p{int(round(float(prune) * 100))}") if p else "",
                 f"c{clusters}" if c else "", "qat" if q else "", mode]
        name = "-".join(x for x in parts if x)
        if name in seen:
            continue
        seen.add(name)
        io_here = io if mode == "int8" else "float32"
        post = ("edgetpu_compile",) if profile.edgetpu and mode == "int8" else ()
        recipes.append(Recipe(name=name, description=f"sweep grid: {name}", mode=mode, io=io_here, prune=p,
                              cluster=c, qat=q, post=post, source="grid", filters=f))
    if not recipes:
        raise ConfigError(f"the grid has no combination that {profile.name} can run "
                          f"(it takes {', '.join(profile.quant_modes)})")
    return recipes


def _convert_one(model, device, recipes, train, calibration, eval_data, out, max_drop=None):
    """One device's variants (runs in a worker process when --jobs > 1)."""
    from .pipeline import convert_for_device
    return convert_for_device(model, device, recipes, train=train, calibration=calibration, eval=eval_data,
                              out=out, reuse=True, keep_going=True, max_drop=max_drop)


@dataclass
class SweepResult:
    manifests: dict
    measurements: int
    failed: int
    decisions: list
    report: Path | None


def sweep(model: str | Path, devices: list[str], *, boards: list | None = None, train=None, calibration=None,
          eval=None, grid: str | Path | None = None, out: str | Path = "sweep-out", jobs: int = 1,
          threads: list[int] | None = None, runs: int = 100, warmup: int = 10, budgets: list | None = None,
          known_hosts=None, accept_new_host: bool = False, log=None, max_drop: float | None = None,
          include_over_budget: bool = False, include_emulated: bool = False, executor: str = "local",
          ray=None) -> SweepResult:
    """The whole loop for one model.  `executor` "local" converts in this process (or `jobs` processes, one per
    device); "ray" submits every (device, recipe prefix) to a Ray cluster (`ray`: a sweep_ray.RayOptions) and
    profiles each device as soon as its variants are back."""
    log = log or logging.getLogger("edgekit.sweep").info
    out = Path(out)
    profiles = [load_profile(d) for d in devices]
    g = load_grid(grid)
    plan = {p.name: grid_recipes(g, p) for p in profiles}
    for name, rs in plan.items():
        log(f"[sweep] {name}: {len(rs)} variants: {', '.join(r.name for r in rs)}")
    from .remote.inventory import local_board
    boards = boards or [local_board()]
    from .profiling.api import profile
    from .profiling.jobs import Settings
    from .profiling.scheduler import Options
    store_path = out / "edgekit.db"

    def measure(paths: list[Path]):
        return profile(paths, boards, threads=threads, settings=Settings(warmup=warmup, runs=runs),
                       options=Options(store=str(store_path), known_hosts=known_hosts,
                                       accept_new_host=accept_new_host))
    t0 = time.perf_counter()
    manifests: dict = {}
    recipe_failures: list[tuple[str, dict]] = []
    if executor == "ray":
        # each device is profiled as soon as its variants are back, while the cluster converts the rest
        from concurrent.futures import ThreadPoolExecutor

        from .sweep_ray import RayOptions, convert_on_ray
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep-profile") as boards_pool:
            futures = []

            def on_device(device: str, manifest) -> None:
                futures.append(boards_pool.submit(measure, [out / device / v.path for v in manifest.variants]))
            results = convert_on_ray(model, plan, train=train, calibration=calibration, eval=eval, out=out,
                                     max_drop=max_drop, options=ray or RayOptions(), on_device=on_device, log=log)
            measured = [f.result() for f in futures]
        manifests = {d: r.manifest for d, r in results.items() if r.manifest is not None}
        recipe_failures = [(d, f) for d, r in results.items() for f in r.failed]
    else:
        if executor != "local":
            raise ConfigError(f"--executor must be local or ray, got {executor!r}")
        if jobs > 1 and len(profiles) > 1:
            import multiprocessing
            # spawn, not fork: a forked child of a process that touched TensorFlow can deadlock
            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                futs = {p.name: pool.submit(_convert_one, str(model), p.name, plan[p.name], train, calibration,
                                            eval, out / p.name, max_drop) for p in profiles}
                manifests = {name: f.result() for name, f in futs.items()}
        else:
            for p in profiles:
                manifests[p.name] = _convert_one(model, p.name, plan[p.name], train, calibration, eval,
                                                 out / p.name, max_drop)
        log(f"[sweep] converted in {time.perf_counter() - t0:.1f} s")
        recipe_failures = [(d, f) for d, m in manifests.items() for f in m.failed]
        measured = [measure([out / d / v.path for d, m in manifests.items() for v in m.variants])]
    for d, f in recipe_failures:
        log(f"[sweep] {d}: recipe {f['recipe']} failed: {f['error']}")
    if not manifests:
        raise OptimizationError("no device got any variant built" + (
            f"; first failure: {recipe_failures[0][0]} {recipe_failures[0][1]['recipe']}: "
            f"{recipe_failures[0][1]['error']}" if recipe_failures else ""))

    from .select import Budget, select
    from .store import Store
    store = Store(store_path)
    decisions = []
    for d in manifests:
        for b in boards:
            for budget in budgets or [Budget()]:
                try:
                    dec = select(store, board=b.name, budget=budget, manifests=[str(out / d / "manifest.json")],
                                 include_over_budget=include_over_budget, include_emulated=include_emulated)
                except ConfigError as e:
                    log(f"[sweep] {d} on {b.name}: {e}")
                    continue
                decisions.append((d, b.name, budget, dec))
    from .report import write_report
    report, _ = write_report(store, out / "report")
    return SweepResult(manifests=manifests, measurements=sum(len(m.rows) for m in measured),
                       failed=sum(len(m.failed) + len(m.board_errors) for m in measured) + len(recipe_failures),
                       decisions=decisions, report=report)
