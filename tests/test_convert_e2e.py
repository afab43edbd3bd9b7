"""End to end: real TF-MOT, the real converter, the real LiteRT interpreter, on the digits example."""
import json

import numpy as np

from edgekit.flatbuffer import read_model
from edgekit.manifest import load_manifest

REQUIRED_FIELDS = {"name", "recipe", "path", "sha256", "bytes", "gzip_bytes", "sparsity", "accuracy",
                   "keras_accuracy", "inputs", "outputs", "ops", "min_runtime_version", "compatible", "problems"}


def test_manifest_describes_every_rpi4_default_variant(rpi4_manifest):
    _manifest, out = rpi4_manifest
    on_disk = load_manifest(out / "manifest.json")
    assert [v.name for v in on_disk.variants] == ["fp32", "fp16", "int8", "pruned-int8", "pcqat-int8", "dynamic"]
    raw = json.loads((out / "manifest.json").read_text())
    for v in raw["variants"]:
        assert set(v) >= REQUIRED_FIELDS, v["name"]
        info = read_model(out / v["path"])
        assert info.sha256 == v["sha256"] and info.bytes == v["bytes"]
        assert v["ops"] and all({"op", "version", "count"} <= set(o) for o in v["ops"])
    assert not list(out.parent.glob(".*partial"))


def test_int8_within_one_point_of_keras(rpi4_manifest):
    manifest, _ = rpi4_manifest
    ref = manifest.reference_keras_accuracy
    assert ref > 0.95
    int8 = manifest.variant("int8")
    assert int8.inputs[0]["dtype"] == "int8" and int8.inputs[0]["scale"] > 0
    assert abs(int8.accuracy - ref) <= 0.01


def test_pcqat_small_accurate_and_sparsity_and_clusters_survive(rpi4_manifest):
    manifest, _ = rpi4_manifest
    fp32, pcqat = manifest.variant("fp32"), manifest.variant("pcqat-int8")
    assert manifest.reference_keras_accuracy - pcqat.accuracy <= 0.015
    assert fp32.gzip_bytes / pcqat.gzip_bytes >= 8
    assert pcqat.sparsity >= 0.75
    assert pcqat.max_unique_weights_per_channel <= 17
    assert pcqat.survival["sparsity"]["ok"] and pcqat.survival["clusters"]["ok"]
    assert [s["step"] for s in pcqat.steps] == ["prune", "cluster", "qat", "convert"]
    assert pcqat.optimizations["qat_scheme"] == "PCQAT"


def test_dynamic_range_for_tflite_runtime_2_14_is_built_with_dense_weights_it_loads(rpi4_manifest, too_new_model):
    """The converter's dynamic-range model has per-channel dense weights (FULLY_CONNECTED v12), which rpi4's
    tflite-runtime 2.14 cannot load.  For rpi4 the recipe is built with one scale per dense layer (v9) instead, says
    so, and keeps the Keras model's accuracy; the default conversion is still flagged for that runtime."""
    from edgekit.compat import DENSE_PER_TENSOR, unloadable
    from edgekit.flatbuffer import read_model
    from edgekit.profiles import load_profile
    manifest, _ = rpi4_manifest
    dyn = manifest.variant("dynamic")
    assert dyn.compatible and not dyn.problems, dyn.problems
    assert {o["op"]: o["version"] for o in dyn.ops}["FULLY_CONNECTED"] < 12
    assert dyn.steps[-1]["step"] == "convert" and dyn.steps[-1]["dense_weights"] == DENSE_PER_TENSOR
    assert abs(dyn.accuracy - manifest.variant("fp32").accuracy) <= 0.01
    assert manifest.variant("int8").compatible
    why = unloadable(too_new_model.read_bytes(), load_profile("rpi4").runtime)
    assert why and "tflite-runtime 2.14.0" in why and "FULLY_CONNECTED v12" in why
    assert read_model(too_new_model).min_runtime_version == "2.17.0"


def test_caller_model_is_not_mutated(digits_model, digits_data, tmp_path):
    from edgekit import convert_for_device
    from edgekit.modelio import load_keras_model
    model = load_keras_model(digits_model)
    before = [w.copy() for w in model.get_weights()]
    train, test = digits_data
    convert_for_device(model, "local", ["pruned-int8"], train=train, eval=test, out=tmp_path / "o",
                       log=lambda m: None)
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert len(model.layers) == 6 and type(model.layers[0]).__name__ == "Conv2D"


def test_coral_variants_are_static_uint8_with_preflight(digits_model, digits_data, tmp_path, monkeypatch):
    from edgekit import convert_for_device
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no edgetpu_compiler here
    train, test = digits_data
    m = convert_for_device(digits_model, "coral-usb", ["int8-edgetpu"], train=train, eval=test,
                           out=tmp_path / "coral", log=lambda m: None)
    v = m.variant("int8-edgetpu")
    assert v.inputs[0]["shape"] == [1, 8, 8, 1] and v.inputs[0]["dtype"] == "uint8"
    assert v.compatible, v.problems
    assert v.edgetpu["compiled"] is False and "not on PATH" in v.edgetpu["reason"]
    assert v.edgetpu["preflight"]["first_split"] is None
    assert abs(v.accuracy - m.reference_keras_accuracy) <= 0.01


def test_api_accepts_datasets_and_explicit_recipes(digits_model, digits_data, tmp_path):
    from edgekit import convert_for_device, load_data
    train, test = digits_data
    m = convert_for_device(str(digits_model), "local", ["fp16", "int8-uint8io"], calibration=load_data(train),
                           eval=load_data(test), out=tmp_path / "x", log=lambda m: None)
    fp16 = m.variant("fp16")
    assert fp16.sparsity == 0 and fp16.bytes < m.variant("int8-uint8io").bytes * 2
    assert m.variant("int8-uint8io").inputs[0]["dtype"] == "uint8"
