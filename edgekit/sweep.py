"""`edgekit sweep`: the whole loop for a model: grid of variants -> convert per device -> profile on boards ->
select per device and board -> report.  Resumable: a rerun reuses converted variants and stored measurements."""
from __future__ import annotations

import itertools
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .profiles import DeviceProfile, Recipe, load_profile
from .schema import Field, check, read_yaml

GRID_SCHEMA = {
    "prune": Field(list, required=True), "clusters": Field(list, required=True),
    "qat": Field(list, required=True, item=bool), "quantization": Field(list, required=True, item=str,
                                                                         choices=("float32", "float16", "dynamic",
                                                                                  "int8", "int16x8")),
    "filters": Field(list),  # target_flops of structured filter pruning (0 or none: not pruned)
    "epochs": Field(dict, nested={"prune": Field(int, minimum=1), "cluster": Field(int, minimum=1),
                                  "qat": Field(int, minimum=1), "filters": Field(int, minimum=1)}),
}
DEFAULT_GRID = {"prune": [0, 0.75], "clusters": ["none", 16], "qat": [False, True],
                "quantization": ["float32", "dynamic", "int8"]}
FULL_GRID_EXAMPLE = {"prune": [0, 0.5, 0.75, 0.9, "2:4"], "clusters": ["none", 16, 32], "qat": [False, True],
                     "quantization": ["float32", "float16", "dynamic", "int8"], "filters": [0, 0.5],
                     "epochs": {"prune": 4, "cluster": 3, "qat": 3, "filters": 6}}


def load_grid(path: str | Path | None) -> dict:
    if path is None:
        return dict(DEFAULT_GRID)
    data = read_yaml(path, f"grid file {path} does not exist")
    check(data, GRID_SCHEMA, Path(path).name)
    for p in data["prune"]:
        if not (p == "2:4" or (isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1)):
            raise ConfigError(f"{Path(path).name}: 'prune' values are sparsities in [0, 1) or \"2:4\", got {p!r}")
    for c in data["clusters"]:
        if not (c in ("none", None) or (isinstance(c, int) and not isinstance(c, bool) and 2 <= c <= 256)):
            raise ConfigError(f"{Path(path).name}: 'clusters' values are none or 2..256, got {c!r}")
    for f in data.get("filters") or []:
        if not (f in ("none", None, 0) or (isinstance(f, float) and 0.05 <= f < 1)):
            raise ConfigError(f"{Path(path).name}: 'filters' values are none/0 or a target fraction of the MACs in "
                              f"[0.05, 1), got {f!r}")
    return data


def grid_recipes(grid: dict, profile: DeviceProfile) -> list[Recipe]:
    """Every meaningful combination the device can run (QAT only with int8; a device's own quantization rules)."""
    epochs = grid.get("epochs") or {}
    io = "int8" if "int8" in profile.io_dtypes else profile.io_dtypes[0]
    recipes, seen = [], set()
    for flops, prune, clusters, qat, mode in itertools.product(grid.get("filters") or [0], grid["prune"],
                                                               grid["clusters"], grid["qat"], grid["quantization"]):
        if mode not in profile.quant_modes or (qat and mode != "int8"):
            continue
        f = {"structure": "filters", "target_flops": float(flops), "epochs": epochs.get("filters", 6),
             "channel_multiple": "device"} if flops not in ("none", None, 0) else None
        p = None
        if prune == "2:4":
            p = {"target": 0.5, "structure": "2:4", "schedule": "constant", "epochs": epochs.get("prune", 4)}
        elif prune:
            p = {"target": float(prune), "schedule": "polynomial", "epochs": epochs.get("prune", 4)}
        c = {"clusters": int(clusters), "init": "kmeans++", "epochs": epochs.get("cluster", 3)} \
            if clusters not in ("none", None) else None
        q = {"epochs": epochs.get("qat", 3)} if qat else None
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
          include_over_budget: bool = False, include_emulated: bool = False) -> SweepResult:
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(out)
    profiles = [load_profile(d) for d in devices]
    g = load_grid(grid)
    plan = {p.name: grid_recipes(g, p) for p in profiles}
    for name, rs in plan.items():
        log(f"[sweep] {name}: {len(rs)} variants: {', '.join(r.name for r in rs)}")
    from .remote.inventory import local_board
    boards = boards or [local_board()]
    t0 = time.perf_counter()
    manifests = {}
    if jobs > 1 and len(profiles) > 1:
        # Each device is an independent, picklable job: a cluster engine (Ray, Dask, a batch queue) can take this
        # executor's place by submitting the same function with the same arguments.
        import multiprocessing
        # spawn, not fork: a forked child of a process that touched TensorFlow can deadlock
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {p.name: pool.submit(_convert_one, str(model), p.name, plan[p.name], train, calibration, eval,
                                           out / p.name, max_drop) for p in profiles}
            manifests = {name: f.result() for name, f in futures.items()}
    else:
        for p in profiles:
            manifests[p.name] = _convert_one(model, p.name, plan[p.name], train, calibration, eval, out / p.name,
                                             max_drop)
    log(f"[sweep] converted in {time.perf_counter() - t0:.1f} s")
    recipe_failures = [(d, f) for d, m in manifests.items() for f in m.failed]
    for d, f in recipe_failures:
        log(f"[sweep] {d}: recipe {f['recipe']} failed: {f['error']}")

    from .profiling.jobs import Settings, build_jobs, model_ref
    from .profiling.scheduler import Options, run_profile
    from .profiling.progress import Progress
    store_path = out / "edgekit.db"
    refs = [model_ref(out / d / v.path) for d, m in manifests.items() for v in m.variants]
    per_board = build_jobs(refs, boards, threads, 1, Settings(warmup=warmup, runs=runs))
    progress = Progress(sum(len(j) for j in per_board.values()))
    rows = run_profile(per_board, Options(store=str(store_path), known_hosts=known_hosts,
                                          accept_new_host=accept_new_host), progress.event)
    progress.close()

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
    failed = sum(1 for r in rows if r["status"] != "ok")
    return SweepResult(manifests=manifests, measurements=len(rows),
                       failed=failed + len(progress.board_errors) + len(recipe_failures),
                       decisions=decisions, report=report)
