"""The edgetpu_compiler wrapper.

The real Edge TPU compiler is not installable here (no Debian or PyPI package), so these tests put a
FAKE `edgetpu_compiler` script on PATH that behaves like the real one (writes NAME_edgetpu.tflite and
prints its summary).  The product code path (argv list, exit code, output checks, log parsing) is the real one.
"""
import os
import stat

import pytest

from edgekit.convert import edgetpu
from edgekit.errors import ConversionError

REAL_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.
Model compiled successfully in 23 ms.
Number of operations that will run on Edge TPU: 7
Number of operations that will run on CPU: 2
"""


def fake_compiler(tmp_path, body):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "edgetpu_compiler"
    exe.write_text("#!/bin/sh\n# FAKE edgetpu_compiler for tests (no Edge TPU toolchain exists here)\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return bindir


def _model(tmp_path):
    m = tmp_path / "my model.tflite"
    m.write_bytes(b"\0\0\0\0TFL3" + b"x" * 4000)
    return m


def _env(monkeypatch, bindir):
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin:/bin")


def test_parse_log_reads_op_split():
    assert edgetpu.parse_log(REAL_LOG) == (7, 2, "16.0.384591198")


def test_successful_compile_keeps_log_and_counts(tmp_path, monkeypatch):
    body = ('out=""; while [ $# -gt 1 ]; do case "$1" in --out_dir) out="$2"; shift;; esac; shift; done\n'
            'name=$(basename "$1" .tflite)\n'
            f'head -c 5000 /dev/zero > "$out/${{name}}_edgetpu.tflite"\ncat <<EOF\n{REAL_LOG}EOF\n')
    _env(monkeypatch, fake_compiler(tmp_path, body))
    model = _model(tmp_path)
    res = edgetpu.compile_model(model, tmp_path)
    assert res.path.name == "my model_edgetpu.tflite" and res.tpu_ops == 7 and res.cpu_ops == 2
    assert "Edge TPU Compiler version" in res.log_path.read_text()


def test_nonzero_exit_is_an_error_with_the_last_log_line(tmp_path, monkeypatch):
    _env(monkeypatch, fake_compiler(tmp_path, 'echo "ERROR: Didn\'t find op for builtin opcode"; exit 1\n'))
    with pytest.raises(ConversionError, match=r"exited with 1: ERROR: Didn't find op"):
        edgetpu.compile_model(_model(tmp_path), tmp_path)


def test_success_with_a_tiny_stub_is_refused(tmp_path, monkeypatch):
    body = ('while [ $# -gt 1 ]; do case "$1" in --out_dir) out="$2"; shift;; esac; shift; done\n'
            'printf stub > "$out/my model_edgetpu.tflite"\n')
    _env(monkeypatch, fake_compiler(tmp_path, body))
    with pytest.raises(ConversionError, match="too small"):
        edgetpu.compile_model(_model(tmp_path), tmp_path)


def test_success_without_output_is_refused(tmp_path, monkeypatch):
    _env(monkeypatch, fake_compiler(tmp_path, "exit 0\n"))
    with pytest.raises(ConversionError, match="wrote no"):
        edgetpu.compile_model(_model(tmp_path), tmp_path)
