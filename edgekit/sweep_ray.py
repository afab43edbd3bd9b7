"""The sweep's conversions on a Ray cluster (`edgekit sweep --executor ray`).  Ray is imported only here.

Every (device, recipe prefix) is one Ray task: recipes that share their first optimization step (same settings)
share its fine-tune, so they travel together; recipes with no optimization go together per device.  The model and
the data are put in Ray's object store once; a task writes them to a temporary folder on its node, runs the same
`convert_for_device` the local executor runs, and returns the manifest and the .tflite bytes.  The driver writes
each device's folder exactly as the local executor does (staging folder, manifest listing its files) as soon as
that device's last task is back, and hands it to `on_device` (the sweep profiles it while the rest converts).
A task whose worker or node dies is retried by Ray (`max_retries`); one that still fails, or raises, is recorded
as failed for its recipes and the others go on."""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import outdir
from .errors import ConfigError, EdgekitError
from .manifest import Manifest, Variant, load_manifest
from .profiles import Recipe
from .scratch import scratch

log = logging.getLogger("edgekit.sweep")


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray for this sweep
    cpus: float = 1.0  # CPUs each conversion task declares
    memory_mb: int = 3000  # memory each task declares (TensorFlow + one model being fine-tuned)
    max_retries: int = 2  # a task whose worker or node dies is run again this many times


@dataclass
class DeviceResult:
    manifest: Manifest | None
    failed: list[dict] = field(default_factory=list)
    # per task: recipes, seconds inside the task, seconds from submission to its result on the driver, node, pid
    tasks: list[dict] = field(default_factory=list)


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'edgekit[ray]'") from None
    return ray


def _pack(path: str | Path | None) -> tuple[str, bytes] | None:
    """A file or folder as (name, tar bytes), to put in the object store once."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p} does not exist")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(p), arcname=p.name)
    return p.name, buf.getvalue()


def _unpack(blob: tuple[str, bytes] | None, where: Path) -> str | None:
    if blob is None:
        return None
    name, data = blob
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(where, filter="data")
    return str(where / name)


def groups_of(recipes: list[Recipe]) -> list[list[Recipe]]:
    """Recipes that share their first optimization step (same settings and distillation) go together."""
    groups: dict[str, list[Recipe]] = {}
    for r in recipes:
        first = r.steps[0] if r.steps else ""
        key = json.dumps([first, r.given(first) if first else None, r.given("distill")], sort_keys=True)
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def convert_group(model_blob, train_blob, calibration_blob, eval_blob, device: str, recipes: list[Recipe],
                  max_drop) -> dict:
    """One task (runs on a Ray worker): convert `recipes` for `device`; returns the manifest and the files.  The
    blobs are top-level arguments so Ray hands the task their values from the object store."""
    data_blobs = {"train": train_blob, "calibration": calibration_blob, "eval": eval_blob}
    from .pipeline import convert_for_device, variant_files
    t0 = time.perf_counter()
    with scratch("edgekit-ray-") as root:
        model = _unpack(model_blob, root / "model")
        data = {k: _unpack(v, root / k) for k, v in data_blobs.items()}
        lines: list[str] = []
        out = root / "out"
        manifest = convert_for_device(model, device, recipes, train=data["train"], calibration=data["calibration"],
                                      eval=data["eval"], out=out, keep_going=True, max_drop=max_drop,
                                      log=lines.append)
        files = {f.name: f.read_bytes() for v in manifest.variants for f in variant_files(out / v.path)}
        return {"manifest": manifest.to_dict(), "files": files, "log": lines, "pid": os.getpid(),
                "node": os.uname().nodename, "seconds": time.perf_counter() - t0, "ended_at": time.time()}


def _why(e: Exception) -> str:
    """One line: our own error as it is, anything else with its type (a dead worker: Ray's own words)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, EdgekitError):
        return str(cause)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0][:300]}"
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1][:300] if lines else ''}"


def _reused(out: Path, model: Path, recipes: list[Recipe]) -> tuple[dict[str, tuple[Variant, Path]], list[Recipe]]:
    """Variants a previous sweep already built into `out` from this model file with these settings."""
    from .pipeline import _reusable, _source_sha, previous_variant
    previous = _reusable(out, {"sha256": _source_sha(model)}) if out.exists() else {}
    kept, todo = {}, []
    for r in recipes:
        hit = previous_variant(r, previous)
        if hit is not None:
            kept[r.name] = hit
        else:
            todo.append(r)
    return kept, todo


def _write_device(out: Path, order: list[str], parts: list[dict], kept: dict, failed: list[dict],
                  model: Path, eval_path) -> Manifest | None:
    """The device's folder as the local executor writes it: variants in recipe order, one manifest."""
    variants: dict[str, Variant] = {name: v for name, (v, _) in kept.items()}
    base = None
    for part in parts:
        m = part["manifest"]
        base = base or m
        failed += m.get("failed") or []
        for v in m["variants"]:
            variants[v["name"]] = Variant(**v)
    if not variants:
        return None
    if base is None:  # everything reused: keep the old manifest's description
        base = load_manifest(out / "manifest.json").to_dict()
    from .pipeline import variant_files
    dest = outdir.check_out(out, overwrite=False)
    work = outdir.staging(dest)
    try:
        for _, f in kept.values():
            for extra in variant_files(f):
                shutil.copy2(extra, work / extra.name)
        for part in parts:
            for fname, data in part["files"].items():
                (work / Path(fname).name).write_bytes(data)
        source = dict(base["source_model"] or {})
        source["path"] = str(model)  # the driver's file, not the worker's temporary copy
        eval_data = base.get("eval_data")
        if eval_data and eval_path is not None:
            eval_data = {**eval_data, "source": str(eval_path)}
        manifest = Manifest(**{**{k: v for k, v in base.items() if k in Manifest.__dataclass_fields__},
                               "variants": [variants[n] for n in order if n in variants],
                               "failed": failed, "source_model": source, "eval_data": eval_data})
        manifest.files = outdir.written(work) + ["manifest.json"]
        manifest.write(work / "manifest.json")
        outdir.install(work, dest)
        return manifest
    except BaseException:
        outdir.discard(work)
        raise


def convert_on_ray(model: str | Path, plan: dict[str, list[Recipe]], *, train=None, calibration=None, eval=None,
                   out: Path, max_drop=None, options: RayOptions = RayOptions(),
                   on_device: Callable[[str, Manifest], None] | None = None,
                   log: Callable[[str], None] = log.info) -> dict[str, DeviceResult]:
    """Convert `plan` (device -> recipes) on Ray; returns each device's manifest (None if nothing was built) and
    the recipes that failed."""
    ray = import_ray()
    model = Path(model).resolve()
    if not ray.is_initialized():
        extra = {} if options.address else {"include_dashboard": False}  # a cluster of the user's has its own
        ray.init(address=options.address, ignore_reinit_error=True, log_to_driver=False,
                 logging_level=logging.WARNING, **extra)
    t0 = time.perf_counter()
    model_ref = ray.put(_pack(model))  # once; every task reads it from the object store
    data_refs = {k: ray.put(_pack(v)) for k, v in (("train", train), ("calibration", calibration), ("eval", eval))}
    task = ray.remote(convert_group).options(num_cpus=options.cpus, memory=int(options.memory_mb * 2**20),
                                             max_retries=options.max_retries, retry_exceptions=False)
    pending: dict = {}
    state: dict[str, dict] = {}
    for device, recipes in plan.items():
        kept, todo = _reused(out / device, model, recipes)
        if kept:
            log(f"[sweep] {device}: {len(kept)} variants reused from the previous run")
        groups = groups_of(todo)
        state[device] = {"order": [r.name for r in recipes], "kept": kept, "parts": [], "failed": [],
                         "left": len(groups), "tasks": []}
        for group in groups:
            ref = task.remote(model_ref, data_refs["train"], data_refs["calibration"], data_refs["eval"], device,
                              group, max_drop)
            pending[ref] = (device, group, time.perf_counter())
    log(f"[sweep] {len(pending)} Ray tasks submitted ({options.cpus:g} CPU, {options.memory_mb} MB each)")
    results: dict[str, DeviceResult] = {}

    def finish(device: str) -> None:
        st = state[device]
        manifest = _write_device(out / device, st["order"], st["parts"], st["kept"], st["failed"], model, eval)
        results[device] = DeviceResult(manifest, st["failed"], st["tasks"])
        if manifest is None:
            log(f"[sweep] {device}: no variant was built")
            return
        log(f"[sweep] {device}: {len(manifest.variants)} variants written to {out / device}")
        if on_device is not None:
            on_device(device, manifest)

    for device, st in state.items():
        if st["left"] == 0:
            finish(device)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        device, group, started = pending.pop(ref)
        names = ", ".join(r.name for r in group)
        try:
            part = ray.get(ref)
            state[device]["parts"].append(part)
            state[device]["tasks"].append({"recipes": [r.name for r in group], "seconds": part["seconds"],
                                           "wall": time.perf_counter() - started, "node": part["node"],
                                           "pid": part["pid"],
                                           "returned_after": max(0.0, time.time() - part["ended_at"])})
            log(f"[sweep] {device}: {names} converted in {part['seconds']:.1f} s on {part['node']} "
                f"(pid {part['pid']}; {time.perf_counter() - started:.1f} s since submitted)")
        except Exception as e:  # the task raised, or its worker died more often than max_retries
            text = _why(e)
            for r in group:
                state[device]["failed"].append({"recipe": r.name, "error": f"ray task: {text}", "stage": "ray"})
            log(f"[sweep] {device}: {names} FAILED on Ray: {text}")
        state[device]["left"] -= 1
        if state[device]["left"] == 0:
            finish(device)
    log(f"[sweep] converted on Ray in {time.perf_counter() - t0:.1f} s")
    return results
