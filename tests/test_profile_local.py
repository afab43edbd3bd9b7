"""The `local` board (the runner in a subprocess), the runner's runtime choice, the store and the table."""
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from edgekit.profiling import runner

RUNNER = Path(runner.__file__)


@pytest.fixture
def home(tmp_path):
    """An isolated HOME so the local board's ~/.cache/edgekit and lock files start empty."""
    h = tmp_path / "home"
    h.mkdir()
    return {"HOME": str(h)}


def test_local_board_profiles_and_table_formats(tmp_path, rpi4_manifest, home):
    out = rpi4_manifest[1]
    store = tmp_path / "s.db"
    proc = run_cli("profile", out / "int8.tflite", out / "pcqat-int8.tflite", "--board", "local",
                   "--threads", "1,2", "--runs", "30", "--store", store, env=home)
    assert proc.returncode == 0, proc.stderr
    assert "local t1" in proc.stdout and "local t2" in proc.stdout and "pcqat-int8" in proc.stdout
    assert (Path(home["HOME"]) / ".cache" / "edgekit").is_dir()
    csv = run_cli("table", "--store", store, "--format", "csv").stdout.splitlines()
    assert csv[0] == "model,column,p50_ms,p90_ms,runs,repeats,throttled" and len(csv) == 5
    data = json.loads(run_cli("table", "--store", store, "--format", "json").stdout)
    assert all(c["p50_ms"] <= c["p90_ms"] for c in data)
    md = run_cli("table", "--store", store, "--format", "md", "--board", "local").stdout
    assert md.startswith("| model | local t1 | local t2 |")


def test_env_store_and_repeat(tmp_path, rpi4_manifest, home):
    store = tmp_path / "env.db"
    proc = run_cli("profile", rpi4_manifest[1] / "int8.tflite", "--board", "local", "--threads", "1",
                   "--runs", "10", "--repeat", "3", "--json", env={**home, "EDGEKIT_STORE": str(store)})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["measurements"]
    assert [r["repeat_index"] for r in rows] == [0, 1, 2] and store.exists()


def test_bad_profile_inputs_are_one_line_errors(tmp_path, rpi4_manifest, home):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 100)
    assert_one_line_error(run_cli("profile", bad, "--board", "local", "--store", tmp_path / "s.db", env=home),
                          "bad.tflite")
    good = rpi4_manifest[1] / "int8.tflite"
    assert_one_line_error(run_cli("profile", good, "--board", "nosuch", "--store", tmp_path / "s.db", env=home),
                          "unknown board 'nosuch'")
    assert_one_line_error(run_cli("profile", good, "--store", tmp_path / "s.db", env=home), "--board")
    assert_one_line_error(run_cli("profile", good, "--host", "pi@10.0.0.9", "--store", tmp_path / "s.db",
                                  env=home), "--profile")
    assert_one_line_error(run_cli("table", "--store", tmp_path / "none.db"), "does not exist")
    (tmp_path / "boards.yaml").write_text("boards:\n  - {name: x, host: h, profile: rpi9}\n")
    assert_one_line_error(run_cli("profile", good, "--all-boards", "--boards", tmp_path / "boards.yaml",
                                  env=home), "unknown device profile 'rpi9'")


def test_runner_reports_missing_runtime_as_json():
    proc = subprocess.run([sys.executable, str(RUNNER), "--model", "x.tflite", "--runtime", "tflite_runtime"],
                          capture_output=True, text=True)
    assert proc.returncode == 3
    assert json.loads(proc.stdout) == {"status": "error",
                                       "error": json.loads(proc.stdout)["error"]}
    assert "no TFLite runtime found" in json.loads(proc.stdout)["error"]


def test_runner_batch_streams_one_line_per_model_and_isolates_failures(rpi4_manifest):
    out = rpi4_manifest[1]
    jobs = [["--model", str(out / "int8.tflite"), "--runs", "5"],
            ["--model", str(out / "missing.tflite"), "--expect-sha256", "00"],
            ["--model", str(out / "int8.tflite"), "--runs", "5", "--warmup", "50000000"],  # hangs: killed
            ["--model", str(out / "fp32.tflite"), "--runs", "7"]]
    proc = subprocess.run([sys.executable, str(RUNNER), "--batch", json.dumps(jobs), "--job-timeout", "3"],
                          capture_output=True, text=True, timeout=120)
    lines = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert [r["job"] for r in lines] == [0, 1, 2, 3]
    assert [r["status"] for r in lines] == ["ok", "error", "error", "ok"]
    assert "missing" in lines[1]["error"] and lines[2]["timeout"] and "timed out after 3 s" in lines[2]["error"]
    assert lines[0]["stats"]["n"] == 5 and lines[3]["stats"]["n"] == 7
    assert lines[3]["peak_rss_kb"] > 0


def test_runner_input_npy_and_min_seconds(tmp_path, rpi4_manifest):
    import numpy as np
    npy = tmp_path / "in.npy"
    np.save(npy, np.zeros((1, 8, 8, 1), np.float32))
    proc = subprocess.run([sys.executable, str(RUNNER), "--model", str(rpi4_manifest[1] / "fp32.tflite"),
                           "--input", str(npy), "--runs", "5", "--min-seconds", "0.3", "--warmup", "2"],
                          capture_output=True, text=True)
    d = json.loads(proc.stdout)
    assert d["status"] == "ok" and d["stats"]["n"] > 5 and sum(d["latencies_ms"]) < 300
    assert d["settings"]["input"] == str(npy) and d["first_ms"] > 0 and d["peak_rss_kb"] > 0


@pytest.fixture(scope="session")
def tflite_runtime_python(tmp_path_factory):
    """A real venv with tflite-runtime 2.14 (needs numpy < 2): the runtime many Raspberry Pis have."""
    root = tmp_path_factory.mktemp("tflrt")
    venv.create(root, with_pip=True)
    py = root / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "tflite-runtime==2.14.0", "numpy<2"],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"cannot install tflite-runtime 2.14 here: {proc.stderr.strip().splitlines()[-1:]}")
    return py


def test_runner_uses_tflite_runtime_when_present(tflite_runtime_python, rpi4_manifest):
    probe = json.loads(subprocess.run([str(tflite_runtime_python), str(RUNNER), "--probe"], capture_output=True,
                                      text=True).stdout)
    assert [r["name"] for r in probe["runtimes"]] == ["tflite-runtime"]
    assert probe["runtimes"][0]["version"] == "2.14.0"
    proc = subprocess.run([str(tflite_runtime_python), str(RUNNER), "--model", str(rpi4_manifest[1] / "int8.tflite"),
                           "--runs", "5"], capture_output=True, text=True)
    d = json.loads(proc.stdout)
    assert d["status"] == "ok" and d["runtime"] == {"name": "tflite-runtime", "module": "tflite_runtime",
                                                    "version": "2.14.0"}


def test_profiler_refuses_op_versions_the_board_cannot_load(tflite_runtime_python, rpi4_manifest, too_new_model,
                                                            tmp_path):
    """A board with tflite-runtime 2.14: int8 runs, and so does the dynamic-range model edgekit built for rpi4 (dense
    weights per tensor); the converter's default dynamic-range model (FULLY_CONNECTED v12) is refused unrun."""
    import yaml
    pytest.importorskip("paramiko")
    from loopback_board import SSHD, LoopbackBoard
    if not Path(SSHD).exists():
        pytest.skip("openssh-server is not installed")
    b = LoopbackBoard(tmp_path / "b").start()
    try:
        inv = tmp_path / "boards.yaml"
        inv.write_text(yaml.safe_dump({"boards": [b.board_entry("oldpi", "rpi4", python=str(tflite_runtime_python),
                                                                workdir=str(tmp_path / "w"))]}))
        (tmp_path / "kh").write_text(b.known_hosts_line)
        out = rpi4_manifest[1]
        proc = run_cli("profile", out / "int8.tflite", out / "dynamic.tflite", too_new_model, "--board", "oldpi",
                       "--threads", "1", "--runs", "5", "--boards", inv, "--known-hosts", tmp_path / "kh",
                       "--store", tmp_path / "s.db", "--json")
        assert proc.returncode == 2
        # the manifest's variants by name; the converter's own model (no manifest) as "too new"
        rows = {r["variant"] or "too new": r for r in json.loads(proc.stdout)["measurements"]}
        assert rows["int8"]["status"] == "ok" and rows["int8"]["runtime_version"] == "2.14.0"
        assert rows["dynamic"]["status"] == "ok" and rows["dynamic"]["runtime_version"] == "2.14.0"
        assert rows["dynamic"]["n_runs"] >= 5 and rows["dynamic"]["p50_ms"] > 0
        v12 = rows["too new"]
        assert v12["status"] == "failed" and v12.get("n_runs") is None
        assert "not run: tflite-runtime 2.14.0 cannot load" in v12["error"] and "FULLY_CONNECTED v12" in v12["error"]
        assert not list((tmp_path / "w").glob(f"{v12['model_sha256']}*"))
    finally:
        b.kill()


def test_boards_check_reports_the_local_machine(tmp_path):
    proc = run_cli("boards", "--check", "--json", cwd=tmp_path)  # no boards.yaml there: just `local`
    assert proc.returncode == 0, proc.stderr
    (local,) = json.loads(proc.stdout)
    assert local["reachable"] and local["runtime"].startswith("ai-edge-litert")
    assert local["python"] == ".".join(map(str, sys.version_info[:3])) and local["memory_mb"] > 0


def test_board_lock_serialises_two_processes_worth_of_jobs(tmp_path):
    import threading
    import time
    from edgekit.errors import RemoteError
    from edgekit.profiling.scheduler import BoardLock
    stop, events = threading.Event(), []
    first = BoardLock("pi", str(tmp_path), 5, stop, events.append).__enter__()
    with pytest.raises(RemoteError, match="still locked by another edgekit"), \
            BoardLock("pi", str(tmp_path), 0.5, stop, events.append):
        pass
    assert events and events[0]["event"] == "waiting"
    threading.Timer(0.5, lambda: first.__exit__(None, None, None)).start()
    t0 = time.monotonic()
    with BoardLock("pi", str(tmp_path), 5, stop, events.append):
        assert time.monotonic() - t0 >= 0.4  # it waited for the holder to let go


def test_per_job_timeout_is_recorded_as_failed(tmp_path, rpi4_manifest, home):
    proc = run_cli("profile", rpi4_manifest[1] / "int8.tflite", "--board", "local", "--threads", "1",
                   "--warmup", "20000000", "--timeout", "2", "--retries", "0", "--store", tmp_path / "s.db",
                   "--json", env=home)
    assert proc.returncode == 2
    (row,) = json.loads(proc.stdout)["measurements"]
    assert row["status"] == "failed" and "timed out after 2 s" in row["error"]


def test_profile_table_and_select_do_not_import_tensorflow(tmp_path, rpi4_manifest, home):
    code = ("import sys\nfrom edgekit.cli import main\n"
            "rc = main(['profile', sys.argv[1], '--board', 'local', '--threads', '1', '--runs', '5', '--store', "
            "sys.argv[2]])\nmain(['table', '--store', sys.argv[2]])\nmain(['select', '--board', 'local', '--store', "
            "sys.argv[2]])\nassert 'tensorflow' not in sys.modules, 'tensorflow was imported'\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(rpi4_manifest[1] / "int8.tflite"), str(tmp_path / "s.db")],
                          capture_output=True, text=True, env={**os.environ, **home})
    assert proc.returncode == 0, proc.stderr
    assert "chosen: int8 t1 on local" in proc.stdout


def _zone(root, celsius):
    zone = root / "thermal_zone0"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text(f"{int(celsius * 1000)}\n")


def test_runner_waits_for_a_hot_board_to_cool(tmp_path, rpi4_manifest):
    """No thermal sensors exist on this machine: a FAKE sysfs thermal zone stands in for the board's sensor."""
    import threading
    _zone(tmp_path, 90)
    env = {**os.environ, "EDGEKIT_THERMAL_GLOB": str(tmp_path / "thermal_zone*")}
    threading.Timer(1.2, lambda: _zone(tmp_path, 55)).start()
    proc = subprocess.run([sys.executable, str(RUNNER), "--model", str(rpi4_manifest[1] / "int8.tflite"), "--runs",
                           "5", "--max-temp", "80", "--cool-wait", "10"], capture_output=True, text=True, env=env)
    d = json.loads(proc.stdout)
    assert d["status"] == "ok" and 1.0 <= d["cooled_s"] < 5 and d["throttled"] is False
    assert list(d["fingerprint"]["temperatures_c"].values()) == [55.0]
    # still hot when the bounded wait ends: measured anyway, flagged as throttled
    _zone(tmp_path, 95)
    proc = subprocess.run([sys.executable, str(RUNNER), "--model", str(rpi4_manifest[1] / "int8.tflite"), "--runs",
                           "5", "--max-temp", "80", "--cool-wait", "1"], capture_output=True, text=True, env=env)
    d = json.loads(proc.stdout)
    assert d["status"] == "ok" and d["throttled"] is True and d["cooled_s"] >= 1.0


def test_hot_board_results_are_flagged_in_table_and_left_out_of_select(tmp_path, rpi4_manifest, home):
    """FAKE sysfs thermal zone (no sensors here) above the `local` profile's 95 C limit, which waits 0 s."""
    _zone(tmp_path / "zones", 99)
    env = {**home, "EDGEKIT_THERMAL_GLOB": str(tmp_path / "zones" / "thermal_zone*")}
    store = tmp_path / "s.db"
    proc = run_cli("profile", rpi4_manifest[1] / "int8.tflite", "--board", "local", "--threads", "1", "--runs", "5",
                   "--store", store, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "(throttled)" in proc.stderr and " !" in run_cli("table", "--store", store).stdout
    assert_one_line_error(run_cli("select", "--board", "local", "--store", store), "--include-throttled")
    proc = run_cli("select", "--board", "local", "--store", store, "--include-throttled", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["chosen"]["variant"] == "int8"


def test_ctrl_c_keeps_finished_rows_and_a_rerun_does_the_rest(tmp_path, rpi4_manifest, home):
    import signal
    import sqlite3
    import time
    store = tmp_path / "s.db"
    args = [sys.executable, "-m", "edgekit", "profile", str(rpi4_manifest[1] / "int8.tflite"), "--board", "local",
            "--threads", "1", "--runs", "5", "--min-seconds", "1", "--repeat", "4", "--store", str(store)]
    # SIGINT restored in the child: a CI that starts the suite with SIGINT ignored must not make Ctrl-C vanish
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **home},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def ok_rows():
        if not store.exists():
            return 0
        with sqlite3.connect(store) as db:
            try:
                return db.execute("SELECT COUNT(*) FROM measurements WHERE status = 'ok'").fetchone()[0]
            except sqlite3.OperationalError:
                return 0
    deadline = time.monotonic() + 120
    while ok_rows() < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT status, p50_ms FROM measurements").fetchall()
    assert 1 <= len(rows) < 4 and all(s == "ok" and p50 > 0 for s, p50 in rows)  # no half rows, no false failures
    time.sleep(0.5)
    runners = subprocess.run(["pgrep", "-f", home["HOME"]], capture_output=True, text=True).stdout  # runner in HOME
    assert not runners.strip(), "a runner is still measuring after Ctrl-C"
    again = run_cli(*args[3:], "--json", env=home)  # same settings: only the missing repeats run
    assert again.returncode == 0, again.stderr
    measured = json.loads(again.stdout)["measurements"]
    assert len(measured) == 4 - len(rows) and ok_rows() == 4
