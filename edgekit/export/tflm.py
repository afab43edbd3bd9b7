"""The TensorFlow Lite Micro Python interpreter (`tflite-micro` package): can it run the model, and in how much
arena?"""
from __future__ import annotations

import os
import re
import signal

import numpy as np

from ..errors import CompatibilityError, ConfigError


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as e:
        raise ConfigError("the c-array target needs the `tflite-micro` package (pip install tflite-micro)") from e
    return runtime


def _try_here(model: bytes, arena: int) -> str | None:
    """Allocate and run once in this process; None when it works, else TFLM's error text."""
    from .._quiet import captured_stderr
    runtime = _runtime()
    with captured_stderr((1, 2)) as cap:
        try:
            it = runtime.Interpreter.from_bytes(model, arena_size=arena)
            d = it.get_input_details(0)
            it.set_input(np.zeros(d["shape"], dtype=d["dtype"]), 0)
            it.invoke()
            return None
        except (RuntimeError, ValueError) as e:
            err = e
    return f"{err} {cap.text}"


def _try(model: bytes, arena: int) -> tuple[bool, str | None]:
    """(works, error text) for one arena size, tried in a forked child: TFLite Micro itself crashes (SIGSEGV) at
    some too-small arenas, and such a crash is a data point ("too small"), never the end of edgekit."""
    _runtime()  # import once in the parent: every child starts with it loaded
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report and leave without running any of the parent's cleanup
        code = 3
        try:
            import faulthandler
            faulthandler.disable()  # a crash here is expected data, not a traceback for the user's terminal
            os.close(r)
            err = _try_here(model, arena)
            os.write(w, (err or "").encode("utf-8", "replace")[:65536])
            code = 0 if err is None else 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        for block in iter(lambda: f.read(65536), b""):
            chunks.append(block)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    if os.WIFSIGNALED(status):
        try:
            name = signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            name = f"signal {os.WTERMSIG(status)}"
        return False, f"its interpreter crashed ({name}) with a {arena:,}-byte arena"
    return os.WEXITSTATUS(status) == 0, text or None


def _unsupported(text: str) -> str | None:
    m = re.search(r"Didn't find op for builtin opcode '(\w+)'", text)
    if m:
        return f"{m.group(1)} is not in TFLite Micro's op set"
    m = re.search(r"([^\n]*not supported[^\n]*)\n?Node (\w+) \(number (\d+)\)", text)
    if m:
        return f"{m.group(2)} (node {m.group(3)}): {m.group(1).split(' ', 1)[-1].strip()}"
    m = re.search(r"Node (\w+) \(number (\d+)\) failed to prepare", text)
    if m and "allocate" not in text.split("Node")[0][-200:]:
        return f"{m.group(1)} (node {m.group(2)}) failed to prepare"
    return None


def measure_arena(model: bytes, limit: int = 64 << 20) -> int:
    """Smallest arena (bytes, 16-byte steps) in which the model allocates and runs; refuses unsupported ops."""
    ok, err = _try(model, limit)
    if not ok:
        reason = _unsupported(err or "")
        first = (err or "unknown error").strip().splitlines() or ["unknown error"]
        raise CompatibilityError(f"TFLite Micro cannot run this model: {reason or first[0]}")
    lo, hi = 16, limit
    while hi - lo > 16:
        mid = (lo + hi) // 2 // 16 * 16
        ok, _ = _try(model, mid)
        if ok:
            hi = mid
        else:
            lo = mid
    return hi


def run(model: bytes, x: np.ndarray, arena: int) -> np.ndarray:  # at an arena measure_arena found to work
    """Outputs of the first output tensor for each sample (inputs already in the model's input dtype)."""
    from .._quiet import captured_stderr
    runtime = _runtime()
    outs = []
    with captured_stderr((1, 2)):
        it = runtime.Interpreter.from_bytes(model, arena_size=arena)
        for row in x:
            it.set_input(row[None].astype(it.get_input_details(0)["dtype"]), 0)
            it.invoke()
            outs.append(it.get_output(0).copy())
    return np.concatenate(outs, axis=0)
