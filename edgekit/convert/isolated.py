"""Heavy conversions in a child process with a memory and a time limit.

Converting a large model (ResNet50 after PCQAT) can take more memory than the machine has; in-process, the kernel's
out-of-memory killer then ends the whole run.  In a child, the conversion that would run out fails alone with one
line and the run goes on.  The child gets a SavedModel of the model's inference function and the calibration
samples, and runs the same converter settings (`tflite.finish`) on `TFLiteConverter.from_saved_model`.

    EDGEKIT_CONVERT_ISOLATED   auto (default: models with >= 5M parameters), always, never
    EDGEKIT_CONVERT_MEMORY_MB  a fixed limit for the child's memory (default: none, see below)
    EDGEKIT_CONVERT_RESERVE_MB the memory the child must leave the machine (default: 1024): it is stopped when the
                               machine's available memory falls below this, however much it holds itself
    EDGEKIT_CONVERT_TIMEOUT_S  the child's time limit (default: 3600)

The default limit follows the machine, not a figure taken when the child starts (80% of what was available then
stopped a conversion that would have fitted once other work on the machine finished, and let one through that
would not when other work grew).  The child is also the kernel's first choice when memory runs out anyway
(oom_score_adj 1000): a conversion killed between two polls fails alone, never the run that holds the models.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..data import CALIBRATION_SAMPLES, Dataset
from ..errors import ConfigError, ConversionError, ResourceLimitError
from ..memory import available_mb, env_number, rss_mb
from ..scratch import scratch

ISOLATE_PARAMS = 5_000_000
POLL_S = 0.1
RESERVE_MB = 1024.0


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default).strip().lower()


def isolate(model) -> bool:
    how = _env("EDGEKIT_CONVERT_ISOLATED", "auto")
    if how not in ("auto", "always", "never"):
        raise ConfigError(f"EDGEKIT_CONVERT_ISOLATED is {how!r}; allowed: auto, always, never")
    if how != "auto":
        return how == "always"
    try:
        return int(model.count_params()) >= ISOLATE_PARAMS
    except (ValueError, AttributeError):
        return False


def limits() -> tuple[float | None, float, float]:
    """(fixed memory limit in MB or None, memory to leave the machine in MB, time limit in seconds)."""
    return (env_number("EDGEKIT_CONVERT_MEMORY_MB", None), env_number("EDGEKIT_CONVERT_RESERVE_MB", RESERVE_MB) or
            RESERVE_MB, env_number("EDGEKIT_CONVERT_TIMEOUT_S", 3600.0) or 3600.0)


def _first_to_go(pid: int) -> int | None:
    """Make the child the kernel's first choice when memory runs out; returns the oom_score_adj it now has."""
    adj = Path(f"/proc/{pid}/oom_score_adj")
    try:
        adj.write_text("1000")
        return int(adj.read_text())
    except (OSError, ValueError):
        return None


def _over(memory: float | None, reserve: float, seconds: float, peak: float, elapsed: float) -> str | None:
    """Why the child must stop now, or None."""
    if memory is not None and peak > memory:
        return f"needed more than {memory:,.0f} MB of memory"
    left = available_mb()
    if left is not None and left < reserve:
        return (f"held {peak:,.0f} MB and would have left the machine under {reserve:,.0f} MB of memory "
                f"({left:,.0f} MB available)")
    if elapsed > seconds:
        return f"took longer than {seconds:,.0f} s"
    return None


def _save(model, folder: Path, static_batch: bool) -> None:
    from .._quiet import captured_stderr
    from .._tf import tf
    from .tflite import variables_holder
    spec = model.inputs[0]
    fn = tf.function(lambda x: model(x, training=False))
    batch = 1 if static_batch else None
    concrete = fn.get_concrete_function(tf.TensorSpec([batch, *spec.shape[1:]], spec.dtype, name="input"))
    with captured_stderr((1, 2)):
        tf.saved_model.save(variables_holder(model), str(folder), signatures=concrete)


def _save_for_rebuild(plain, qmodel, scheme: str, folder: Path) -> bool:
    """A QAT model goes to the child as the model before QAT (a .keras file) and the QAT weights: the child wraps it
    again as the QAT step did and traces it there.  Tracing a large QAT model for a SavedModel here costs this
    process gigabytes on top of what training left it holding (ResNet50V2 after PCQAT: killed at 24 GB).  False when
    the plain model cannot be saved (e.g. a custom layer without get_config): the caller then traces it here."""
    from .._quiet import captured_stderr
    try:
        with captured_stderr((1, 2)):
            plain.save(folder / "plain.keras")
    except Exception:  # any failure to serialize means: trace in this process instead
        return False
    np.savez(folder / "qat_weights.npz", *qmodel.get_weights())
    (folder / "qat_scheme").write_text(scheme)
    return True


def convert_isolated(model, mode: str, io: str, calibration: Dataset | None, static_batch: bool,
                     stats: dict | None = None, rebuild: tuple | None = None, dense_per_tensor: bool = False) -> bytes:
    """Convert in a child process; `stats` (if given) receives the child's peak memory.  `rebuild`: (the model
    before QAT, the QAT scheme) when `model` is a QAT model, so the child rebuilds and traces it."""
    memory, reserve, seconds = limits()
    with scratch("edgekit-convert-") as work:
        rebuilt = rebuild is not None and _save_for_rebuild(rebuild[0], model, rebuild[1], work)
        if rebuilt:
            (work / "static_batch").write_text("1" if static_batch else "0")
        else:
            _save(model, work / "model", static_batch)
        if dense_per_tensor:
            (work / "dense_per_tensor").write_text("1")
        if calibration is not None:
            np.save(work / "calibration.npy", calibration.sample(CALIBRATION_SAMPLES).x.astype(np.float32))
        with open(work / "stderr", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "edgekit.convert.child", str(work), mode, io],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            t0, peak, why = time.monotonic(), 0.0, None
            adj = _first_to_go(proc.pid)
            while proc.poll() is None:
                peak = max(peak, rss_mb(proc.pid) or 0.0)
                why = _over(memory, reserve, seconds, peak, time.monotonic() - t0)
                if why:
                    proc.kill()
                    proc.wait()
                    raise ResourceLimitError(f"{mode} conversion {why} and was stopped in its child process (limits: "
                                             f"EDGEKIT_CONVERT_MEMORY_MB, EDGEKIT_CONVERT_RESERVE_MB, "
                                             f"EDGEKIT_CONVERT_TIMEOUT_S)")
                time.sleep(POLL_S)
        if proc.returncode == -9:  # not ours (we raised above): the kernel's out-of-memory killer chose the child
            raise ResourceLimitError(f"{mode} conversion was killed in its child process (by the kernel: out of "
                                     f"memory, after {peak:,.0f} MB)")
        if stats is not None:
            stats.update(isolated=True, child_peak_rss_mb=round(peak, 1), child_oom_score_adj=adj)
            if rebuilt:
                stats["qat_rebuilt_in_child"] = True
        if proc.returncode != 0:
            lines = [ln for ln in (work / "stderr").read_text(errors="replace").splitlines() if ln.strip()]
            last = next((ln for ln in reversed(lines) if ln.startswith("edgekit-child: ")), None)
            if last is None:
                raise ConversionError(f"{mode} conversion in a child process ended with exit code {proc.returncode}")
            raise ConversionError(last[len("edgekit-child: "):])
        return (work / "model.tflite").read_bytes()
