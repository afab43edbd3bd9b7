import json
import subprocess
import sys

import pytest

from edgekit.errors import ModelFormatError
from edgekit.flatbuffer import read_model
from conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def int8_path(rpi4_manifest):
    return rpi4_manifest[1] / "int8.tflite"


def test_inspect_json_reports_ops_tensors_and_metadata(int8_path):
    proc = run_cli("inspect", int8_path, "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    ops = {o["op"]: o["version"] for o in d["ops"]}
    assert ops["FULLY_CONNECTED"] >= 4 and "CONV_2D" in ops
    assert d["inputs"][0]["dtype"] == "int8" and d["inputs"][0]["zero_point"] == -128
    assert d["min_runtime_version"] == "1.14.0" and d["bytes"] == int8_path.stat().st_size


def test_inspect_with_device_reports_runtime_problem(too_new_model):
    proc = run_cli("inspect", too_new_model, "--device", "rpi4")
    assert proc.returncode == 0, proc.stderr
    assert "NOT compatible" in proc.stdout and "tflite-runtime 2.14.0 cannot load" in proc.stdout


def test_inspect_edgetpu_preflight_for_a_float_model(rpi4_manifest):
    proc = run_cli("inspect", rpi4_manifest[1] / "fp32.tflite", "--device", "coral-usb", "--json")
    dev = json.loads(proc.stdout)["device"]
    assert not dev["compatible"]
    assert any("int8/uint8" in p for p in dev["problems"])
    pre = dev["edgetpu_preflight"]
    assert pre["first_split"] == "CONV_2D (op #0, has float tensors)" and pre["mappable_ops"] == 0


def test_inspect_does_not_import_tensorflow(int8_path):
    code = ("import sys; from edgekit.cli import main; main(['inspect', sys.argv[1], '--json']);"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    proc = subprocess.run([sys.executable, "-c", code, str(int8_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip_header"])
def test_corrupt_tflite_is_a_one_line_error(int8_path, tmp_path, damage):
    raw = int8_path.read_bytes()
    bad = tmp_path / f"{damage}.tflite"
    bad.write_bytes({"truncate": raw[: len(raw) // 3], "garbage": b"\x17" * 999, "empty": b"",
                     "flip_header": raw[:4] + b"XXXX" + raw[8:]}[damage])
    with pytest.raises(ModelFormatError):
        read_model(bad)
    assert_one_line_error(run_cli("inspect", bad), str(bad.name))


def test_missing_tflite_is_a_one_line_error(tmp_path):
    assert_one_line_error(run_cli("inspect", tmp_path / "nope.tflite"), "no such file")


def test_inspect_notes_layers_off_the_device_channel_tile(tmp_path):
    import numpy as np
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    paths = {}
    for width in (20, 24):  # rpi4's int8 tile is 8: 20 channels cost what 24 do, 24 fill their tiles
        inp = keras.Input((8, 8, 3))
        model = keras.Model(inp, keras.layers.Conv2D(4, 1)(keras.layers.Conv2D(width, 3)(inp)))
        cal = Dataset(np.random.default_rng(0).random((8, 8, 8, 3), dtype=np.float32), None, "random")
        paths[width] = tmp_path / f"w{width}.tflite"
        paths[width].write_bytes(convert(model, "int8", "int8", cal))
    off = json.loads(run_cli("inspect", paths[20], "--device", "rpi4", "--json").stdout)["device"]["warnings"]
    assert any("off rpi4's 8-channel kernel tile" in w and "20 channels cost what 24 do" in w for w in off), off
    on = json.loads(run_cli("inspect", paths[24], "--device", "rpi4", "--json").stdout)["device"]["warnings"]
    assert not any("kernel tile" in w for w in on), on


def test_a_model_over_the_edgetpu_parameter_cache_is_a_warning_a_hard_size_limit_a_problem(int8_path, tmp_path):
    """The Edge TPU's ~8 MB is an on-chip cache, not a limit: a larger model runs with the rest of its parameters
    streamed from host memory (ResNet50V2's 24 MB int8 was flagged incompatible on coral-usb). A profile's
    max_model_bytes (flash, an asset budget) stays a problem."""
    from edgekit.profiles import _data_dir, load_profile
    coral = load_profile("coral-usb")
    assert coral.param_cache_bytes == 8 * 2**20 and coral.max_model_bytes is None
    text = (_data_dir("device_profiles") / "coral-usb.yaml").read_text()
    size = int8_path.stat().st_size
    for key in ("param_cache_bytes", "max_model_bytes"):
        y = tmp_path / f"{key}.yaml"
        y.write_text(text.replace("param_cache_bytes: 8388608", f"{key}: {size - 1}").replace("name: coral-usb",
                                                                                             f"name: {key}"))
        dev = json.loads(run_cli("inspect", int8_path, "--device", y, "--json").stdout)["device"]
        cache = [w for w in dev["warnings"] if "on-chip parameter cache" in w]
        over = [p for p in dev["problems"] if f"over {key}'s" in p]
        if key == "param_cache_bytes":
            assert cache and "streamed from host memory" in cache[0] and not over, dev
        else:
            assert over and not cache, dev
