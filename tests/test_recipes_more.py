"""The recipes the rpi4 default set does not cover, and every model format convert-for-device accepts."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def more(digits_model, digits_data, tmp_path_factory):
    from edgekit import convert_for_device
    train, test = digits_data
    out = tmp_path_factory.mktemp("more") / "local"
    return convert_for_device(digits_model, "local", ["pruned24-int8", "int16x8", "cqat-int8", "clustered-int8"],
                              train=train, eval=test, out=out, log=lambda m: None), out


def test_two_of_four_structure_survives_into_the_int8_model(more):
    from ai_edge_litert import schema_py_generated as fb
    m, out = more
    v = m.variant("pruned24-int8")
    assert m.reference_keras_accuracy - v.accuracy <= 0.03
    raw = (out / v.path).read_bytes()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(raw, 0))
    g = model.subgraphs[0]
    checked = 0
    for op in g.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != fb.BuiltinOperator.FULLY_CONNECTED:
            continue
        t = g.tensors[op.inputs[1]]
        w = np.frombuffer(bytes(np.asarray(model.buffers[t.buffer].data, np.uint8)), np.int8).reshape(t.shape)
        if w.shape[1] % 4:
            continue
        blocks = (w.reshape(w.shape[0], -1, 4) != 0).sum(axis=2)  # (out, in/4) non-zeros per block of 4 inputs
        assert blocks.max() <= 2
        checked += 1
    assert checked >= 1


def test_int16x8_and_cluster_preserving_qat(more):
    m, _ = more
    i16 = m.variant("int16x8")
    assert abs(i16.accuracy - m.reference_keras_accuracy) <= 0.01
    assert i16.inputs[0]["dtype"] == "float32" and i16.min_runtime_version
    for name in ("cqat-int8", "clustered-int8"):
        v = m.variant(name)
        assert v.survival["clusters"]["ok"] and v.max_unique_weights_per_channel <= 17, name
        assert m.reference_keras_accuracy - v.accuracy <= 0.015, name
    assert m.variant("cqat-int8").optimizations["qat_scheme"] == "CQAT"


@pytest.mark.parametrize("fmt", ["h5", "savedmodel"])
def test_h5_and_savedmodel_inputs(fmt, digits_model, digits_data, tmp_path):
    from edgekit import convert_for_device
    from edgekit.modelio import load_keras_model
    model = load_keras_model(digits_model)
    path = tmp_path / ("m.h5" if fmt == "h5" else "saved")
    model.save(path, **({} if fmt == "h5" else {"save_format": "tf"}))
    m = convert_for_device(path, "local", ["fp32"], eval=digits_data[1], out=tmp_path / "o", log=lambda s: None)
    assert m.variant("fp32").accuracy == pytest.approx(m.reference_keras_accuracy)
    assert m.source_model["sha256"] and m.source_model["params"] == model.count_params()
