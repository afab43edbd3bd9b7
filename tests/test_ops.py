"""Per-op latency: single-op models cut from real models, `profile --ops`, `table --ops` and `predict`."""
import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli


def _run_full(model_bytes: bytes, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter
    from edgekit.validate import quantize_input
    it = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], quantize_input(x, d))
    it.invoke()
    return it


@pytest.mark.parametrize("variant", ["int8", "fp32", "dynamic"])
def test_each_single_op_model_computes_what_the_op_computes_inside_the_model(rpi4_manifest, digits_data, variant):
    from ai_edge_litert.interpreter import Interpreter
    from edgekit.data import load_data
    from edgekit.ops import cut
    raw = (rpi4_manifest[1] / f"{variant}.tflite").read_bytes()
    x = load_data(digits_data[1]).x[:1]
    full = _run_full(raw, x)
    ops = cut(raw)
    assert len(ops) >= 5 and all(o.model is not None for o in ops)
    assert {o.layer for o in ops} >= {"conv1", "conv2", "fc1", "fc2"}  # from the tensor names
    non_constant = _non_constant(raw)
    for o in ops:
        it = Interpreter(model_content=o.model)
        it.allocate_tensors()
        details = it.get_input_details()
        # the single-op model's inputs are the op's non-constant inputs, in order; constants travel inside it
        variable = [i for i in o.inputs if i >= 0 and i in non_constant]
        assert len(variable) == len(details) >= 1, (o.index, o.op)
        for d, i in zip(details, variable):
            it.set_tensor(d["index"], full.get_tensor(i))
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"])
        want = full.get_tensor(o.outputs[0])
        if np.issubdtype(want.dtype, np.integer):
            assert np.array_equal(got, want), (o.index, o.op)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{o.index} {o.op}")


def _non_constant(raw: bytes) -> set[int]:
    from ai_edge_litert import schema_py_generated as fb
    m = fb.ModelT.InitFromPackedBuf(bytearray(raw), 0)
    sub = m.subgraphs[0]
    return {i for i, t in enumerate(sub.tensors) if not (t.buffer and m.buffers[t.buffer].data is not None
                                                         and len(m.buffers[t.buffer].data))}


@pytest.fixture(scope="module")
def convnets(tmp_path_factory):
    """Three float CNNs of one family at different widths (ms-scale ops), converted by the real converter."""
    from edgekit._tf import keras, tf
    out = tmp_path_factory.mktemp("convnets")
    paths = []
    for width in (32, 48, 64):
        keras.utils.set_random_seed(width)
        i = keras.Input((64, 64, 3))
        h = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(i)
        h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
        h = keras.layers.Conv2D(width * 2, 1, activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Conv2D(width * 2, 3, padding="same", activation="relu")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(i, keras.layers.Dense(10, activation="softmax")(h))
        p = out / f"net{width}.tflite"
        p.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        paths.append(p)
    return paths


def test_predict_sums_the_op_table_and_scales_by_the_other_models(convnets, tmp_path):
    """The predictor's arithmetic on a real op table: the model's ops summed from the table, times the median
    whole/sum ratio of the *other* models measured both ways.  Its accuracy against fresh measurements is a
    goal measured by tools/bench_predict.py, not a timed test (this machine is shared and noisy)."""
    store = tmp_path / "ops.db"
    proc = run_cli("profile", *convnets, "--ops", "--board", "local", "--threads", "1", "--runs", "20",
                   "--repeat", "2", "--store", store)
    assert proc.returncode == 0, proc.stderr
    table = run_cli("table", "--ops", convnets[0], "--store", store, "--format", "json")
    assert table.returncode == 0, table.stderr
    t = json.loads(table.stdout)
    assert [o["op"] for o in t["ops"]][:3] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]
    assert all(o["p50_ms"]["local t1"] > 0 for o in t["ops"]) and t["whole_ms"]["local t1"] > 0
    assert "conv2d" in (t["ops"][0]["layer"] or "")
    from edgekit.flatbuffer import read_model
    from edgekit.predict import predict
    from edgekit.store import Store
    st = Store(store)
    whole: dict[str, list[float]] = {}
    for r in st.rows(board="local", columns=("model_sha256", "p50_ms")):
        whole.setdefault(r["model_sha256"], []).append(r["p50_ms"])
    ops_table = st.op_latencies("local", 1, "xnnpack")
    sums = {read_model(n).sha256: sum(ops_table[o.sig_key]["p50_ms"] for o in st.ops_of(read_model(n).sha256))
            for n in convnets}
    for net in convnets:
        sha = read_model(net).sha256
        assert len(whole[sha]) == 2  # both repeats stored
        p = predict(st, net, "local", 1, exclude_self=True)
        assert p.measured_share == 1.0 and not p.missing and p.overhead_from == 2
        assert p.ops_ms == pytest.approx(sums[sha])
        ratio = float(np.median([float(np.median(whole[s])) / sums[s] for s in sums if s != sha]))
        assert p.ms == pytest.approx(ratio * sums[sha])
        # sanity, not a goal: the op table describes this model (a wrong table would be off by far more)
        measured = float(np.median(whole[sha]))
        assert 0.5 < p.ms / measured < 2.0, (net.name, p.ms, measured)
    cli = run_cli("predict", convnets[1], "--board", "local", "--store", store, "--json")
    assert cli.returncode == 0, cli.stderr
    out = json.loads(cli.stdout)
    # without exclude_self the model's own measurement enters the ratio (3 models)
    assert out["overhead_from"] == 3 and out["ms"] > 0


def test_predict_needs_a_table_and_a_real_model(convnets, tmp_path):
    (tmp_path / "bad.tflite").write_bytes(b"not a model")
    assert_one_line_error(run_cli("predict", tmp_path / "bad.tflite", "--board", "local", "--store",
                                  tmp_path / "none.db"), "bad.tflite")
    run_cli("profile", convnets[0], "--board", "local", "--threads", "1", "--runs", "5", "--store",
            tmp_path / "plain.db")
    assert_one_line_error(run_cli("predict", convnets[0], "--board", "local", "--store", tmp_path / "plain.db"),
                          "profile --ops")


def test_lut_build_gives_predict_measured_neighbours_for_unseen_channel_counts(tmp_path):
    """A kernel grid at 16 and 64 channels; a model with 32 channels (never measured) is predicted from them, each
    op between its two measured neighbours."""
    grid = tmp_path / "grid.yaml"
    grid.write_text("kernels:\n  - {op: conv, kernel: 3, size: [16], channels: [16, 64]}\n"
                    "  - {op: depthwise, kernel: 3, size: [16], channels: [16, 64], activation: relu6}\n"
                    "quantization: [int8]\n")
    store = tmp_path / "lut.db"
    proc = run_cli("lut", "build", "--grid", grid, "--board", "local", "--threads", "1", "--runs", "30",
                   "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert "4 kernel models" in proc.stdout and "4 measurements" in proc.stdout
    assert len(list((tmp_path / "edgekit-lut").glob("lut-conv3s1-relu-16x16x*-int8-*.tflite"))) == 2
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    from edgekit.predict import _cost
    from edgekit.store import Store
    i = keras.Input((16, 16, 32))
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(i)
    h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)  # relu; the grid has relu6
    cal = Dataset(np.random.default_rng(0).normal(size=(8, 16, 16, 32)).astype(np.float32), None, "random")
    model = tmp_path / "unseen.tflite"
    model.write_bytes(convert(keras.Model(i, h), "int8", io="int8", calibration=cal, static_batch=True))
    cli = run_cli("predict", model, "--board", "local", "--store", store, "--json")
    assert cli.returncode == 0, cli.stderr
    p = json.loads(cli.stdout)
    assert [o["op"] for o in p["ops"]] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert all(o["how"] == "scaled" for o in p["ops"]) and p["scaled_share"] == 1.0 and not p["missing"]
    table = Store(store).op_latencies("local", 1, "xnnpack")
    for o in p["ops"]:
        ms = sorted(e["p50_ms"] for e in table.values() if e["signature"]["op"] == o["op"])
        costs = sorted(_cost(e["signature"]) for e in table.values() if e["signature"]["op"] == o["op"])
        assert len(ms) == 2 and costs[0] < costs[1]
        assert min(ms) <= o["ms"] <= max(ms), (o, ms)  # interpolated between the 16- and 64-channel kernels
    # no overhead was fitted (no model measured whole and op by op): the prediction is the sum, and says so
    assert p["overhead_from"] == 0 and p["ms"] == pytest.approx(sum(o["ms"] for o in p["ops"]))


def test_lut_build_refuses_a_bad_grid(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("kernels:\n  - {op: conv3d, channels: [16]}\n")
    proc = run_cli("lut", "build", "--grid", grid, "--board", "local", "--store", tmp_path / "x.db")
    assert_one_line_error(proc, "conv3d")
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "edgekit-lut").exists()


def test_select_predicts_the_variants_never_measured_and_says_so(rpi4_manifest, tmp_path):
    """int8 and fp32 measured (whole and op by op); pruned-int8 / pcqat-int8 have only int8 op kinds, so they are
    predicted from the table and marked; dynamic (hybrid kernels the table never saw) cannot be and is named."""
    out = rpi4_manifest[1]
    store = tmp_path / "sel.db"
    proc = run_cli("profile", out / "int8.tflite", out / "fp32.tflite", "--ops", "--board", "local", "--threads",
                   "1", "--runs", "20", "--store", store)
    assert proc.returncode == 0, proc.stderr
    plain = run_cli("select", "--board", "local", "--store", store, "--manifest", out / "manifest.json", "--json")
    assert plain.returncode == 0, plain.stderr
    assert {c["variant"] for c in json.loads(plain.stdout)["candidates"]} == {"int8", "fp32"}
    sel = run_cli("select", "--board", "local", "--store", store, "--manifest", out / "manifest.json", "--predict",
                  "--json")
    assert sel.returncode == 0, sel.stderr
    d = json.loads(sel.stdout)
    by = {c["variant"]: c for c in d["candidates"]}
    assert not by["int8"]["predicted"] and by["int8"]["measurements"] >= 1
    assert by["pruned-int8"]["predicted"] and by["pruned-int8"]["measurements"] == 0
    assert by["pruned-int8"]["latency_ms"] > 0 and "dynamic" not in by
    assert any("predicted from board local's op table" in n for n in d["notes"])
    assert any(n.startswith("no prediction for") and "dynamic t1" in n for n in d["notes"]), d["notes"]
    text = run_cli("select", "--board", "local", "--store", store, "--manifest", out / "manifest.json", "--predict")
    assert "pruned-int8 t1 (predicted)" in text.stdout
    assert_one_line_error(run_cli("select", "--board", "local", "--store", store, "--predict"), "--manifest")
    assert_one_line_error(run_cli("select", "--board", "local", "--store", store, "--manifest",
                                  out / "manifest.json", "--predict", "--percentile", "p90"), "p50")


def test_kernel_grid_ops_are_put_on_the_scale_of_model_ops():
    """Kernel-grid ops (never part of a model measured whole) are scaled by the median ratio of model ops to the grid
    interpolated at their size; with fewer than 3 such ratios nothing is scaled."""
    from edgekit.predict import _kernel_scale

    def conv(c, ms):
        t = {"shape": [1, 16, 16, c], "dtype": "INT8", "quant": "per-tensor", "const": False}
        w = {"shape": [c, 3, 3, c], "dtype": "INT8", "quant": "per-channel", "const": True}
        return {"signature": {"op": "CONV_2D", "version": 3, "inputs": [t, w], "outputs": [dict(t)],
                              "options": {"strideH": 1}}, "p50_ms": ms}
    entries = {"k8": conv(8, 1.0), "k64": conv(64, 8.0), "m16": conv(16, 1.2 * 2.0), "m32": conv(32, 1.2 * 4.0),
               "m48": conv(48, 1.2 * 6.0)}
    # the grid is linear in MACs between 8 and 64 channels: at 16, 32, 48 channels it says 1.333, 2.667, 4.889 ms;
    # the model ops took 2.4, 4.8, 7.2 ms: ratios 1.8, 1.8, 1.473 -> median 1.8
    assert _kernel_scale(entries, {"k8", "k64"}) == pytest.approx(1.8)
    assert _kernel_scale({k: entries[k] for k in ("k8", "k64", "m16", "m32")}, {"k8", "k64"}) == 1.0



def test_lut_build_for_an_unknown_board_builds_nothing(tmp_path):
    proc = run_cli("lut", "build", "--board", "nope", "--store", tmp_path / "x.db")
    assert_one_line_error(proc, "unknown board 'nope'")
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "edgekit-lut").exists()


@pytest.mark.parametrize("prune, why", [
    ("{structure: filters, target_latency: 0.6}", "needs board"),
    ("{structure: filters, target_latency: 0.6, board: local, target_flops: 0.5}", "not both"),
    ("{structure: filters, target_latency: 1.5, board: local}", "target_latency"),
])
def test_latency_target_recipes_are_checked_when_loaded(tmp_path, prune, why):
    from edgekit.errors import ConfigError
    from edgekit.profiles import load_recipe
    f = tmp_path / "lt.yaml"
    f.write_text(f"name: lt\ndescription: x\nquantization: {{mode: int8, io: int8}}\noptimize:\n  prune: {prune}\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(str(f))
    assert str(e.value).startswith("lt.yaml") and why in str(e.value)
