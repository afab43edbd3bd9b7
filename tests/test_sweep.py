import json

import pytest

from conftest import assert_one_line_error, run_cli
from edgekit.errors import ConfigError
from edgekit.profiles import load_profile
from edgekit.sweep import DEFAULT_GRID, FULL_GRID_EXAMPLE, grid_recipes, load_grid


def test_grid_respects_device_rules():
    rpi4 = grid_recipes(FULL_GRID_EXAMPLE, load_profile("rpi4"))
    names = {r.name for r in rpi4}
    assert {"float32", "int8", "qat-int8", "p90-c32-qat-int8", "p24-c16-int8", "p75-float16"} <= names
    assert not any(r.qat and r.mode != "int8" for r in rpi4)
    by = {r.name: r for r in rpi4}
    assert by["p90-c32-qat-int8"].qat_scheme == "PCQAT" and by["p24-int8"].prune.structure == "2:4"
    coral = grid_recipes(DEFAULT_GRID, load_profile("coral-usb"))
    assert coral and all(r.mode == "int8" and r.post == ("edgetpu_compile",) for r in coral)
    f50 = by["f50-p75-c16-qat-int8"]  # filter pruning first, then the rest, at the device's channel tile
    assert f50.steps == ("filters", "prune", "cluster", "qat") and f50.filters.target_flops == 0.5
    assert f50.filters.channel_multiple == "device" and not by["int8"].filters


def test_bad_grid_file(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("prune: [0, 1.5]\nclusters: [none]\nqat: [false]\nquantization: [int8]\n")
    with pytest.raises(ConfigError, match="sparsities in"):
        load_grid(bad)
    bad.write_text("prune: [0]\nclusters: [none]\nqat: [false]\nquantization: [int4]\n")
    with pytest.raises(ConfigError, match="allowed: float32"):
        load_grid(bad)
    bad.write_text("prune: [0]\nclusters: [none]\nqat: [false]\nquantization: [int8]\nfilters: [0, 2]\n")
    with pytest.raises(ConfigError, match="'filters' values are none/0 or a target fraction"):
        load_grid(bad)
    bad.write_text("prune: [0]\nclusters: [none]\nqat: [false]\nquantization: [float32]\n")
    with pytest.raises(ConfigError, match="no combination that coral-usb can run"):
        grid_recipes(load_grid(bad), load_profile("coral-usb"))


def test_sweep_end_to_end_and_resume(digits_model, digits_data, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("prune: [0]\nclusters: [none]\nqat: [false]\nquantization: [float32, int8]\n")
    train, test = digits_data
    args = ["sweep", digits_model, "--devices", "local,coral-usb", "--train", train, "--eval", test, "--grid", grid,
            "--out", tmp_path / "sw", "--threads", "1", "--runs", "20", "--max-latency-ms", "1000", "--json"]
    env = {"HOME": str(tmp_path)}
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["measurements"] == 3 and d["failed"] == 0
    chosen = {x["device"]: x["chosen"] for x in d["decisions"]}
    assert chosen["local"] in {"float32", "int8"} and chosen["coral-usb"] == "int8"
    assert (tmp_path / "sw" / "report" / "report.html").exists()
    proc = run_cli(*args, env=env)  # resumable: nothing converted or measured again
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("reused") == 3 and proc.stderr.count("already in the store") == 3
    assert json.loads(proc.stdout)["measurements"] == 0


def test_sweep_converts_devices_in_parallel_processes(digits_model, digits_data, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("prune: [0]\nclusters: [none]\nqat: [false]\nquantization: [int8]\n")
    train, test = digits_data
    proc = run_cli("sweep", digits_model, "--devices", "local,rpi4", "--train", train, "--eval", test, "--grid", grid,
                   "--out", tmp_path / "sw", "--threads", "1", "--runs", "10", "--jobs", "2", "--json",
                   env={"HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert set(d["manifests"]) == {"local", "rpi4"} and d["failed"] == 0  # identical int8 files: measured once
    assert all((tmp_path / "sw" / dev / "int8.tflite").exists() for dev in ("local", "rpi4"))


def test_sweep_unknown_device(digits_model, tmp_path):
    assert_one_line_error(run_cli("sweep", digits_model, "--devices", "rpi4,zx81", "--out", tmp_path / "o"),
                          "unknown device profile 'zx81'")
