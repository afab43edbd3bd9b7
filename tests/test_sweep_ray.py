"""`edgekit sweep --executor ray` on a real local Ray cluster: a head and a worker node started with `ray start` on
127.0.0.1 (stopped at the end), against the local executor on the same grid."""
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from loopback_board import free_port

# one fine-tuned prefix (pruning, shared by three recipes) besides the plain conversions: fine-tunes are seeded,
# so the same settings give the same bytes on any executor
GRID = ("prune: [0, 0.5]\nclusters: [none]\nqat: [false]\nquantization: [float32, dynamic, int8]\n"
        "epochs: {prune: 1}\n")
RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="ekray", dir="/tmp")  # short: Ray's unix sockets live under it
    # the cluster's own auth token, for its nodes and drivers alike (whatever ~/.ray/auth_token holds)
    token = Path(tmp) / "token"
    token.write_text(secrets.token_hex(32) + "\n")
    ours = {"RAY_TMPDIR": tmp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env = {**os.environ, **ours}
    port = free_port()
    common = ["--num-cpus", "1", "--disable-usage-stats"]

    def ray(*args):
        p = subprocess.run([RAY, *args, *common], env=env, capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, (args, (p.stdout + p.stderr)[-1500:])
    try:
        ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard=false",
            "--temp-dir", tmp)
        ray("start", "--address", f"127.0.0.1:{port}")  # a second node: the worker
        yield {"address": f"127.0.0.1:{port}", "env": ours}
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=180)
        shutil.rmtree(tmp, ignore_errors=True)


def sweep_args(digits_model, digits_data, tmp_path, out, *extra):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    train, test = digits_data
    return ["sweep", digits_model, "--devices", "rpi4,local", "--grid", grid, "--train", train, "--eval", test,
            "--out", out, "--runs", "5", "--threads", "1", *extra]


def variants(out: Path) -> dict:
    return {d: [(v["name"], v["sha256"]) for v in json.loads((out / d / "manifest.json").read_text())["variants"]]
            for d in ("rpi4", "local")}


def test_ray_executor_builds_the_same_variants_as_the_local_one(cluster, digits_model, digits_data, tmp_path):
    local = run_cli(*sweep_args(digits_model, digits_data, tmp_path, tmp_path / "local", "--json"))
    assert local.returncode == 0, local.stderr
    ray = run_cli(*sweep_args(digits_model, digits_data, tmp_path, tmp_path / "ray", "--json", "--executor", "ray",
                              "--ray-address", cluster["address"]), env=cluster["env"])
    assert ray.returncode == 0, ray.stderr
    assert "Ray tasks submitted" in ray.stderr and "variants written to" in ray.stderr
    want, got = variants(tmp_path / "local"), variants(tmp_path / "ray")
    assert got == want and all(len(v) == 6 for v in got.values())  # same names, same sha256s
    for d in ("rpi4", "local"):
        a = json.loads((tmp_path / "local" / d / "manifest.json").read_text())
        b = json.loads((tmp_path / "ray" / d / "manifest.json").read_text())
        assert sorted(a["files"]) == sorted(b["files"]) and a["source_model"] == b["source_model"]
        assert a["eval_data"] == b["eval_data"] and a["reference_keras_accuracy"] == b["reference_keras_accuracy"]
    out = json.loads(ray.stdout)
    assert out["measurements"] >= 6 and out["failed"] == 0 and {d["device"] for d in out["decisions"]} == {
        "rpi4", "local"}


def _task_pid(timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if cmd.startswith(b"ray::convert_group"):
                    return int(entry)
        time.sleep(0.2)
    return None


def test_a_worker_killed_mid_sweep_costs_a_retry_not_the_sweep(cluster, digits_model, digits_data, tmp_path):
    args = sweep_args(digits_model, digits_data, tmp_path, tmp_path / "ray", "--executor", "ray", "--ray-address",
                      cluster["address"])
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **cluster["env"]})
    pid = _task_pid(120)
    assert pid is not None, "no conversion task started"
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)  # the worker process running a conversion dies
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert f"(pid {pid};" not in err  # that task's result came from another worker: it was retried
    assert all(len(v) == 6 for v in variants(tmp_path / "ray").values())
    assert "rpi4 on local" in out and "local on local" in out


def test_ray_missing_is_one_line_with_how_to_install(digits_model, digits_data, tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    proc = run_cli(*sweep_args(digits_model, digits_data, tmp_path, tmp_path / "o", "--executor", "ray"),
                   env={"PYTHONPATH": os.pathsep.join([str(tmp_path / "noray"), os.environ.get("PYTHONPATH", "")])})
    assert_one_line_error(proc, "pip install 'edgekit[ray]'")
    assert not (tmp_path / "o").exists()
