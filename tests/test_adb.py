"""Android boards over adb.  No phone exists here: these test the command lines and the parser; the transport has
not run against a real device (see the README)."""
import shutil

import pytest

from edgekit.errors import ConfigError, ConnectError
from edgekit.remote.adb import AdbConnection, adb_argv, benchmark_argv, parse_benchmark_output
from edgekit.remote.base import quote_argv
from edgekit.remote.inventory import load_boards

# The log format of TFLite's benchmark_model (tensorflow/lite/tools/benchmark), as printed on a phone.
SAMPLE = """INFO: STARTING!
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/edgekit/abc.tflite]
INFO: Loaded model /data/local/tmp/edgekit/abc.tflite
INFO: Initialized session in 3.126ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=93 first=8426 curr=5217 min=5136 max=8426 avg=5370.76 std=395

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=185 first=5334 curr=5240 min=5112 max=6181 avg=5373.1 std=161

INFO: Inference timings in us: Init: 3126, First inference: 8426, Warmup (avg): 5370.76, Inference (avg): 5373.1
INFO: Memory footprint delta from the start of the tool (MB): init=5.96875 overall=12.3516
INFO: Overall peak memory footprint (MB) via periodic monitoring: 14.5039
"""


def test_parser_takes_the_measured_runs_not_the_warmup():
    r = parse_benchmark_output(SAMPLE)
    assert r["status"] == "ok"
    st = r["stats"]
    assert st["n"] == 185 and st["mean_ms"] == pytest.approx(5.3731) and st["min_ms"] == pytest.approx(5.112)
    assert st["std_ms"] == pytest.approx(0.161) and st["p50_ms"] is None
    assert r["load_ms"] == pytest.approx(3.126) and r["first_ms"] == pytest.approx(8.426)
    assert r["peak_rss_kb"] == int(14.5039 * 1024)


def test_parser_reports_failures():
    r = parse_benchmark_output("ERROR: Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'\n"
                               "ERROR: Failed to construct interpreter\n")
    assert r["status"] == "error" and "benchmark_model:" in r["error"]
    assert parse_benchmark_output("nothing useful")["status"] == "error"


def test_command_lines_are_argv_lists_with_quoted_shell_words():
    argv = benchmark_argv("/data/local/tmp/edgekit/benchmark_model-1", "/data/local/tmp/edgekit/x y.tflite", 4, 10,
                          100, 0.5, "gpu")
    assert argv[:2] == ["/data/local/tmp/edgekit/benchmark_model-1", "--graph=/data/local/tmp/edgekit/x y.tflite"]
    assert "--num_threads=4" in argv and "--warmup_runs=10" in argv and "--use_gpu=true" in argv
    assert "--use_xnnpack=false" in argv
    cmd = adb_argv("adb", "R58M12345", ["shell", quote_argv(argv)])
    assert cmd[:4] == ["adb", "-s", "R58M12345", "shell"]
    assert "'--graph=/data/local/tmp/edgekit/x y.tflite'" in cmd[4]


def test_adb_boards_in_the_inventory(tmp_path):
    inv = tmp_path / "boards.yaml"
    inv.write_text("boards:\n  - {name: pixel, transport: adb, serial: R58M, benchmark_binary: bm, profile: rpi5}\n")
    (b,) = load_boards(inv)
    assert b.transport == "adb" and b.serial == "R58M" and not b.is_local
    inv.write_text("boards:\n  - {name: pixel, transport: adb, profile: rpi5}\n")
    with pytest.raises(ConfigError, match="needs 'serial' and 'benchmark_binary'"):
        load_boards(inv)


def test_missing_adb_or_device_is_a_connect_error(monkeypatch):
    if shutil.which("adb") is None:
        with pytest.raises(ConnectError, match="adb is not installed"):
            AdbConnection("pixel", "R58M")
    else:
        with pytest.raises(ConnectError, match="not connected"):
            AdbConnection("pixel", "NO-SUCH-SERIAL")
