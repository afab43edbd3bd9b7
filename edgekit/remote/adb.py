"""Android devices over `adb` (Debian's package), behind the same Connection interface, plus the command line
and output parser of TFLite's `benchmark_model` binary (user-provided: it is pushed to the phone).

No Android device exists where edgekit is tested: command construction and parsing are tested; a real phone has
not run this path."""
from __future__ import annotations

import logging
import re
import shutil
import subprocess

from collections.abc import Callable
from pathlib import Path

from ..errors import ConnectError, ProfileTimeout, RemoteError
from .base import Result, atomic_upload, quote_argv

log = logging.getLogger("edgekit.remote")

DEVICE_DIR = "/data/local/tmp/edgekit"


class AdbConnection:
    def __init__(self, name: str, serial: str, adb: str | None = None):
        self.name, self.serial = name, serial
        found = adb or shutil.which("adb")
        if found is None:
            raise ConnectError(f"board {name}: adb is not installed (apt-get install adb)")
        self.adb: str = found
        self.bytes_uploaded = 0
        state = self._adb(["get-state"], timeout=10)
        if state.returncode != 0 or state.stdout.strip() != "device":
            raise ConnectError(f"board {name}: Android device {serial} is not connected "
                               f"({(state.stderr or state.stdout).strip() or 'no answer'})")

    def _adb(self, args: list[str], timeout: float | None = None) -> Result:
        argv = adb_argv(self.adb, self.serial, args)
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise ProfileTimeout(f"board {self.name}: adb timed out after {timeout:.0f} s") from e
        return Result(p.returncode, p.stdout, p.stderr)

    def run(self, argv: list[str], timeout: float | None = None,
            on_line: Callable[[str], None] | None = None) -> Result:
        log.debug("%s: adb shell %s", self.name, quote_argv(argv))
        res = self._adb(["shell", quote_argv(argv)], timeout)
        if on_line is not None:  # adb returns the output at the end: lines are handed over then
            for line in res.stdout.splitlines():
                on_line(line)
        return res

    def put(self, local: Path, remote: str) -> int:
        def send(tmp: str) -> None:
            res = self._adb(["push", str(local), tmp], timeout=600)
            if res.returncode != 0:
                raise RemoteError(f"board {self.name}: adb push of {Path(local).name} failed: {res.stderr.strip()}")

        def rename(tmp: str, final: str) -> None:
            if self.run(["mv", "-f", tmp, final]).returncode != 0:
                raise RemoteError(f"board {self.name}: adb push of {Path(local).name} failed: cannot rename")
        n = atomic_upload(local, remote, send, rename)
        self.bytes_uploaded += n
        return n

    def size(self, remote: str) -> int | None:
        res = self.run(["stat", "-c", "%s", remote])
        return int(res.stdout.strip()) if res.returncode == 0 and res.stdout.strip().isdigit() else None

    def makedirs(self, remote: str) -> None:
        if self.run(["mkdir", "-p", remote]).returncode != 0:
            raise RemoteError(f"board {self.name}: cannot create {remote}")

    def home(self) -> str:
        return DEVICE_DIR

    def close(self) -> None:
        pass


def adb_argv(adb: str, serial: str, args: list[str]) -> list[str]:
    return [adb, "-s", serial, *args]


def benchmark_argv(binary: str, model: str, threads: int, warmup: int, runs: int, min_seconds: float,
                   delegate: str) -> list[str]:
    """benchmark_model's flags for our knobs."""
    argv = [binary, f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
            f"--num_runs={runs}", f"--min_secs={min_seconds:g}", "--report_peak_memory_footprint=true"]
    argv.append(f"--use_xnnpack={'true' if delegate == 'xnnpack' else 'false'}")
    if delegate == "gpu":
        argv.append("--use_gpu=true")
    return argv


_COUNT = re.compile(r"count=(\d+)(?: first=(\d+))?(?: curr=(\d+))? min=(\d+) max=(\d+) avg=([\d.e+]+) std=(\d+)")


def parse_benchmark_output(text: str) -> dict:
    """benchmark_model's log -> a result in the runner's shape (microseconds -> ms).  Raw per-run latencies are
    not printed by benchmark_model, so percentiles are left empty and the mean stands in the table."""
    if "Failed" in text and "count=" not in text:
        line = next((ln for ln in text.splitlines() if "Failed" in ln or "ERROR" in ln), text.strip()[-200:])
        return {"status": "error", "error": f"benchmark_model: {line.strip()}"}
    counts = _COUNT.findall(text)
    if not counts:
        return {"status": "error", "error": "benchmark_model printed no timing summary"}
    n, first, _curr, mn, mx, avg, std = counts[-1]  # the last summary is the measured runs (warm-up comes first)
    timings = re.search(r"Init: ([\d.]+), First inference: ([\d.]+)", text)
    peak = re.search(r"[Pp]eak memory footprint \(MB\)[^:\n]*: (?:init=[\d.]+ overall=)?([\d.]+)", text)
    us = 1000.0
    return {
        "status": "ok", "runtime": {"name": "benchmark_model", "version": None},
        "load_ms": float(timings.group(1)) / us if timings else None,
        "first_ms": float(timings.group(2)) / us if timings else (float(first) / us if first else None),
        "latencies_ms": [],
        "stats": {"n": int(n), "mean_ms": float(avg) / us, "std_ms": float(std) / us, "min_ms": float(mn) / us,
                  "max_ms": float(mx) / us, "p50_ms": None, "p90_ms": None, "p99_ms": None},
        "peak_rss_kb": int(float(peak.group(1)) * 1024) if peak else None,
        "fingerprint": {}, "cooled_s": 0.0, "throttled": False,
    }
