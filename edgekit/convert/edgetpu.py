"""Run `edgetpu_compiler` when it is installed: argv list, checked exit code, kept log, parsed op counts."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConversionError

MIN_OUTPUT_BYTES = 2048  # a "successful" compile into a tiny stub is a failure


@dataclass
class EdgeTPUResult:
    path: Path
    log_path: Path
    tpu_ops: int | None
    cpu_ops: int | None
    compiler_version: str | None

    def to_dict(self) -> dict:
        return {"path": self.path.name, "log": self.log_path.name, "tpu_ops": self.tpu_ops,
                "cpu_ops": self.cpu_ops, "compiler_version": self.compiler_version}


def compiler_path() -> str | None:
    return shutil.which("edgetpu_compiler")


def parse_log(text: str) -> tuple[int | None, int | None, str | None]:
    tpu = re.search(r"Number of operations that will run on Edge TPU:\s*(\d+)", text)
    cpu = re.search(r"Number of operations that will run on CPU:\s*(\d+)", text)
    ver = re.search(r"Edge TPU Compiler version\s*([\w.\-]+)", text)
    return (int(tpu.group(1)) if tpu else None, int(cpu.group(1)) if cpu else None,
            ver.group(1) if ver else None)


def compile_model(model_path: Path, out_dir: Path, timeout: float = 600) -> EdgeTPUResult:
    exe = compiler_path()
    if exe is None:
        raise ConversionError("edgetpu_compiler is not installed")
    argv = [exe, "--show_operations", "--out_dir", str(out_dir), str(model_path)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise ConversionError(f"edgetpu_compiler timed out after {timeout:.0f} s") from e
    log_text = proc.stdout + proc.stderr
    out = out_dir / f"{model_path.stem}_edgetpu.tflite"
    log_path = out_dir / f"{model_path.stem}_edgetpu.compiler.log"
    log_path.write_text(log_text)
    if proc.returncode != 0:
        last = (log_text.strip().splitlines() or ["no output"])[-1]
        raise ConversionError(f"edgetpu_compiler exited with {proc.returncode}: {last} (log: {log_path.name})")
    if not out.is_file():
        raise ConversionError(f"edgetpu_compiler reported success but wrote no {out.name} (log: {log_path.name})")
    if out.stat().st_size < MIN_OUTPUT_BYTES:
        raise ConversionError(f"edgetpu_compiler wrote a {out.stat().st_size}-byte {out.name}: too small to be a "
                              f"model (log: {log_path.name})")
    tpu, cpu, version = parse_log(log_text)
    return EdgeTPUResult(path=out, log_path=log_path, tpu_ops=tpu, cpu_ops=cpu, compiler_version=version)
