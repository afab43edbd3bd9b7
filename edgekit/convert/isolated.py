"""Heavy conversions in a child process with a memory and a time limit.

Converting a large model (ResNet50 after PCQAT) can take more memory than the machine has; in-process, the kernel's
out-of-memory killer then ends the whole run.  In a child, the conversion that would run out fails alone with one
line and the run goes on.  The child gets a SavedModel of the model's inference function and the calibration
samples, and runs the same converter settings (`tflite.finish`) on `TFLiteConverter.from_saved_model`.

    EDGEKIT_CONVERT_ISOLATED   auto (default: models with >= 5M parameters), always, never
    EDGEKIT_CONVERT_MEMORY_MB  the child's limit (default: 80% of the memory available when it starts)
    EDGEKIT_CONVERT_TIMEOUT_S  the child's time limit (default: 3600)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..data import CALIBRATION_SAMPLES, Dataset
from ..errors import ConfigError, ConversionError, ResourceLimitError
from ..memory import available_mb, env_number, rss_mb

ISOLATE_PARAMS = 5_000_000
POLL_S = 0.1


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


def limits() -> tuple[float | None, float]:
    """(memory limit in MB or None where it cannot be read, time limit in seconds)."""
    available = available_mb()
    memory = env_number("EDGEKIT_CONVERT_MEMORY_MB", None if available is None else 0.8 * available)
    return memory, env_number("EDGEKIT_CONVERT_TIMEOUT_S", 3600.0) or 3600.0


def _save(model, folder: Path, static_batch: bool) -> None:
    from .._quiet import captured_stderr
    from .._tf import tf
    spec = model.inputs[0]
    fn = tf.function(lambda x: model(x, training=False))
    batch = 1 if static_batch else None
    concrete = fn.get_concrete_function(tf.TensorSpec([batch, *spec.shape[1:]], spec.dtype, name="input"))
    with captured_stderr((1, 2)):
        tf.saved_model.save(model, str(folder), signatures=concrete)


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
                     stats: dict | None = None, rebuild: tuple | None = None) -> bytes:
    """Convert in a child process; `stats` (if given) receives the child's peak memory.  `rebuild`: (the model
    before QAT, the QAT scheme) when `model` is a QAT model, so the child rebuilds and traces it."""
    memory, seconds = limits()
    with tempfile.TemporaryDirectory(prefix="edgekit-convert-") as tmp:
        work = Path(tmp)
        rebuilt = rebuild is not None and _save_for_rebuild(rebuild[0], model, rebuild[1], work)
        if rebuilt:
            (work / "static_batch").write_text("1" if static_batch else "0")
        else:
            _save(model, work / "model", static_batch)
        if calibration is not None:
            np.save(work / "calibration.npy", calibration.sample(CALIBRATION_SAMPLES).x.astype(np.float32))
        with open(work / "stderr", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "edgekit.convert.child", str(work), mode, io],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            t0, peak, why = time.monotonic(), 0.0, None
            while proc.poll() is None:
                peak = max(peak, rss_mb(proc.pid) or 0.0)
                if memory is not None and peak > memory:
                    why = f"needed more than {memory:,.0f} MB of memory"
                elif time.monotonic() - t0 > seconds:
                    why = f"took longer than {seconds:,.0f} s"
                if why:
                    proc.kill()
                    proc.wait()
                    raise ResourceLimitError(f"{mode} conversion {why} and was stopped in its child process (limits: "
                                             f"EDGEKIT_CONVERT_MEMORY_MB, EDGEKIT_CONVERT_TIMEOUT_S)")
                time.sleep(POLL_S)
        if stats is not None:
            stats.update(isolated=True, child_peak_rss_mb=round(peak, 1))
            if rebuilt:
                stats["qat_rebuilt_in_child"] = True
        if proc.returncode != 0:
            lines = [ln for ln in (work / "stderr").read_text(errors="replace").splitlines() if ln.strip()]
            last = next((ln for ln in reversed(lines) if ln.startswith("edgekit-child: ")), None)
            if last is None:
                raise ConversionError(f"{mode} conversion in a child process ended with exit code {proc.returncode}")
            raise ConversionError(last[len("edgekit-child: "):])
        return (work / "model.tflite").read_bytes()
