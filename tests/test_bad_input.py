"""Every bad input: one clear line on stderr, exit code 2, no traceback, no output folder left behind."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli


def convert(model, out, *extra):
    return run_cli("convert-for-device", model, "--out", out, *extra)


def test_missing_model(tmp_path):
    assert_one_line_error(convert(tmp_path / "none.keras", tmp_path / "o", "--device", "local"), "no such file")


@pytest.mark.parametrize("name,content", [("notes.keras", b"hello, I am text"), ("weights.h5", b"\x89HDF\r\n"),
                                          ("zip.keras", b"PK\x03\x04broken")])
def test_file_that_is_not_a_model(tmp_path, name, content):
    bad = tmp_path / name
    bad.write_bytes(content)
    out = tmp_path / "o"
    assert_one_line_error(convert(bad, out, "--device", "local", "--recipe", "fp32"), name)
    assert not out.exists()


def test_keras3_model_converts_directly(tmp_path):
    path = tmp_path / "k3.keras"
    code = ("import os; os.environ.pop('TF_USE_LEGACY_KERAS', None); import keras;"
            f"m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]); m.save(r'{path}')")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_USE_LEGACY_KERAS"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    proc = convert(path, tmp_path / "o", "--device", "local", "--recipe", "fp32", "--json")
    assert proc.returncode == 0, proc.stderr
    m = __import__("json").loads(proc.stdout)
    assert m["source_model"]["keras"] == 3 and m["variants"][0]["inputs"][0]["shape"][-1] == 4


def test_a_layer_no_recipe_can_handle_is_named_before_training(digits_data, tmp_path):
    """When every recipe asked for is impossible for the model, the run stops in the pre-flight (seconds), naming
    the layer, and nothing is written."""
    from edgekit import convert_for_device
    from edgekit._tf import keras
    from edgekit.errors import OptimizationError

    class Scale(keras.layers.Layer):  # the user's own layer: TF-MOT knows nothing of it
        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w
    m = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), Scale(name="odd_scale"),
                          keras.layers.Dense(10)])
    train, _ = digits_data
    out = tmp_path / "o"
    with pytest.raises(OptimizationError, match="Scale") as e:
        convert_for_device(m, "local", ["pcqat-int8"], train=train, out=out, log=lambda s: None)
    assert "\n" not in str(e.value) and "pcqat-int8" in str(e.value)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


def _npz(tmp_path, name, **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_calibration_with_wrong_shape(digits_model, tmp_path):
    cal = _npz(tmp_path, "cal.npz", x=np.zeros((20, 4, 4, 1), np.float32))
    assert_one_line_error(convert(digits_model, tmp_path / "o", "--device", "local", "--recipe", "int8",
                                  "--calibration", cal), "calibration", "(4, 4, 1)", "(8, 8, 1)")


def test_calibration_with_wrong_dtype(digits_model, tmp_path):
    cal = _npz(tmp_path, "cal.npz", x=np.array([["a"] * 8] * 8).reshape(1, 8, 8, 1))
    assert_one_line_error(convert(digits_model, tmp_path / "o", "--device", "local", "--recipe", "int8",
                                  "--calibration", cal), "numeric")


def test_calibration_with_zero_samples(digits_model, tmp_path):
    cal = _npz(tmp_path, "cal.npz", x=np.zeros((0, 8, 8, 1), np.float32))
    assert_one_line_error(convert(digits_model, tmp_path / "o", "--device", "local", "--recipe", "int8",
                                  "--calibration", cal), "at least one sample")


def test_eval_labels_that_do_not_match_outputs(digits_model, tmp_path):
    ev = _npz(tmp_path, "ev.npz", x=np.zeros((5, 8, 8, 1), np.float32), y=np.array([0, 3, 12, 1, 2]))
    assert_one_line_error(convert(digits_model, tmp_path / "o", "--device", "local", "--recipe", "fp32",
                                  "--eval", ev), "labels", "10 outputs")


def test_validation_data_that_is_also_training_data(digits_model, digits_data, tmp_path):
    train, _test = digits_data
    d = np.load(train)
    val = _npz(tmp_path, "val.npz", x=np.concatenate([d["x"][:3], d["x"][:4] + 7.0]),
               y=np.concatenate([d["y"][:3], d["y"][:4]]))
    out = tmp_path / "o"
    assert_one_line_error(convert(digits_model, out, "--device", "local", "--recipe", "pruned-int8",
                                  "--train", train, "--val", val), "3 of its 7 samples are also in the training")
    assert not out.exists()
    assert_one_line_error(convert(digits_model, out, "--device", "local", "--recipe", "fp32", "--val", val),
                          "--val", "needs --train")


def test_unknown_recipe(digits_model, tmp_path):
    assert_one_line_error(convert(digits_model, tmp_path / "o", "--device", "local", "--recipe", "int9"),
                          "unknown recipe 'int9'")


def test_recipe_the_device_cannot_run(digits_model, tmp_path):
    assert_one_line_error(convert(digits_model, tmp_path / "o", "--device", "coral-usb", "--recipe", "fp32"),
                          "cannot run on device 'coral-usb'", "float32")


def test_optimizing_recipe_without_training_data(digits_model, tmp_path):
    assert_one_line_error(convert(digits_model, tmp_path / "o", "--device", "local", "--recipe", "pruned-int8"),
                          "--train")


def test_foreign_output_folder_is_not_clobbered(digits_model, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert_one_line_error(convert(digits_model, out, "--device", "local", "--recipe", "fp32"), "not empty")
    assert (out / "precious.txt").read_text() == "keep me"


def test_cli_success_prints_table_and_json(digits_model, digits_data, tmp_path):
    import json
    _, test = digits_data
    proc = convert(digits_model, tmp_path / "o", "--device", "local", "--recipe", "fp32", "--eval", test, "--json")
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert m["variants"][0]["accuracy"] > 0.95 and (tmp_path / "o" / "fp32.tflite").exists()
    assert "convert" in proc.stderr and "Traceback" not in proc.stderr


def test_an_untrained_model_is_called_out_not_measured_against(digits_data, digits_model, tmp_path):
    """A reference no better than the most common class makes every drop and budget meaningless: said on stderr and
    in the manifest; a trained model is not flagged."""
    from edgekit._tf import keras
    keras.utils.set_random_seed(0)
    raw = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")])
    raw.save(tmp_path / "untrained.keras")
    test = digits_data[1]
    proc = run_cli("convert-for-device", tmp_path / "untrained.keras", "--device", "local", "--recipe", "fp32",
                   "--eval", test, "--out", tmp_path / "o", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "no better than always answering its most common class" in proc.stderr
    ev = json.loads(proc.stdout)["eval_data"]
    assert ev["reference_at_chance"] is True and 0.05 < ev["majority_baseline"] < 0.2
    ok = run_cli("convert-for-device", digits_model, "--device", "local", "--recipe", "fp32", "--eval", test,
                 "--out", tmp_path / "o2", "--json")
    assert ok.returncode == 0 and "most common class" not in ok.stderr
    assert json.loads(ok.stdout)["eval_data"]["reference_at_chance"] is False
