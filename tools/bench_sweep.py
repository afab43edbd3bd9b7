#!/usr/bin/env python3
"""The sweep's conversions on the local executor and on Ray, same grid, this machine: wall time side by side and
what Ray costs per task.

    python tools/bench_sweep.py [--devices rpi4,local] [--cpus 2]

Grid: prune {0, 0.75} x clusters {none, 16} x int8 on the digits CNN (8 variants over two devices; Ray runs 6 tasks:
per device the no-prune/no-cluster recipe, the clustered one, and the two pruned ones together, which share their
fine-tune).  Local: one process, devices one after another (the default), and `--jobs 2` (a process per device).
Ray: a local Ray started by the driver with --cpus CPUs (one node), each task declaring 1 CPU.  Prints one table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GRID = {"prune": [0, 0.75], "clusters": ["none", 16], "qat": [False], "quantization": ["int8"],
        "epochs": {"prune": 2, "cluster": 2}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="rpi4,local")
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from edgekit.examples import train_digits_model, write_digits_npz
    from edgekit.profiles import load_profile
    from edgekit.sweep import _convert_one, grid_recipes
    from edgekit.report_text import table
    devices = [d.strip() for d in args.devices.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    model = train_digits_model(work / "model")
    train, test = write_digits_npz(work / "data")
    plan = {d: grid_recipes(GRID, load_profile(d)) for d in devices}
    rows = []

    t0 = time.perf_counter()
    shas = {}
    for d in devices:
        m = _convert_one(model, d, plan[d], train, None, test, work / "local" / d)
        shas[d] = {v.name: v.sha256 for v in m.variants}
    rows.append(["local, 1 process", f"{time.perf_counter() - t0:.1f}", "-", "-", "-", "-"])

    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=len(devices), mp_context=multiprocessing.get_context("spawn")) as pool:
        for f in [pool.submit(_convert_one, str(model), d, plan[d], train, None, test, work / "jobs" / d)
                  for d in devices]:
            f.result()
    rows.append([f"local, --jobs {len(devices)}", f"{time.perf_counter() - t0:.1f}", "-", "-", "-", "-"])

    import ray
    from edgekit.sweep_ray import RayOptions, convert_on_ray
    t_init = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - t_init
    t0 = time.perf_counter()
    res = convert_on_ray(model, plan, train=train, eval=test, out=work / "ray", options=RayOptions(cpus=1),
                         log=lambda m: None)
    wall = time.perf_counter() - t0
    tasks = [t for r in res.values() for t in r.tasks]
    same = all({v.name: v.sha256 for v in res[d].manifest.variants} == shas[d] for d in devices)
    rows.append([f"Ray, 1 node, {args.cpus} CPUs", f"{wall:.1f}", f"{init:.1f}", str(len(tasks)),
                 f"{statistics.median(t['seconds'] for t in tasks):.1f}",
                 f"{1000 * statistics.median(t['returned_after'] for t in tasks):.0f}"])
    ray.shutdown()
    print(table(["executor", "wall s", "ray.init s", "tasks", "median s in task", "median result return ms"],
                rows, "lrrrrr"))
    print(f"\nRay variants identical to the local executor's (sha256): {same}")
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
