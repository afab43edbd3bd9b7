"""Models we did not design for edgekit: the layers TF-MOT trips on (Rescaling, Normalization-like input scaling,
squeeze-excitation Multiply, hard-swish as TF ops, a standalone BatchNormalization, Concatenate, ZeroPadding2D,
Reshape, Dropout), a Keras 3 model, and a real keras.applications family."""
import json

import numpy as np
import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def data16(tmp_path_factory):
    import zoo
    return zoo.write_npz(tmp_path_factory.mktemp("d16"), 16)


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
    import zoo
    m = zoo.train(zoo.odd_layers(16), 16, epochs=10)
    path = tmp_path_factory.mktemp("odd") / "odd.keras"
    m.save(path)
    return path


@pytest.fixture(scope="module")
def odd_keras3(tmp_path_factory):
    import zoo
    m = zoo.train(zoo.odd_layers(16, keras3=True), 16, epochs=10, keras3=True)
    import keras
    assert isinstance(m, keras.Model) and keras.__version__.startswith("3")
    path = tmp_path_factory.mktemp("odd3") / "odd3.keras"
    m.save(path)
    return path


def _ops(path):
    from edgekit.flatbuffer import read_model
    return {o["op"] for o in read_model(path).ops}


def test_odd_layers_go_through_prune_cluster_and_qat(odd_model, data16, tmp_path):
    train, test = data16
    out = tmp_path / "o"
    proc = run_cli("convert-for-device", odd_model, "--device", "rpi4", "--train", train, "--eval", test,
                   "--recipe", "pruned-int8", "--recipe", "pcqat-int8", "--out", out,
                   "--json")
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    # (CQAT is PCQAT without the pruning prefix: the same clustering and QAT wrappers, tested on digits)
    assert [v["name"] for v in m["variants"]] == ["pruned-int8", "pcqat-int8"] and not m["failed"]
    steps = {s["step"]: s for v in m["variants"] for s in v["steps"]}
    left = steps["prune"]["layers_left"]
    assert "no weights to prune" in left["rescale"] and "no prunable weights" in left["lonely_bn"]
    handled = steps["qat"]["layers_handled"]
    assert "on the model's input: left float in training" in handled["rescale"]
    assert "output fake-quantized" in handled["se_mul"]
    assert "BatchNormalization without a conv" in handled["lonely_bn"]
    assert any("TFOpLambda" in why for why in handled.values())
    assert "stem_bn" not in handled  # after a conv: TF-MOT folds it itself
    chosen = steps["prune"]["target"]  # searched within the budget: whatever this model allows
    assert chosen in steps["prune"]["search"]["candidates"] or steps["prune"]["search"]["trials"][-1]["refined"]
    for v in m["variants"]:
        assert v["sparsity"] > 0.25, (v["name"], v["sparsity"], chosen)
        assert v["accuracy"] >= m["reference_keras_accuracy"] - 0.15, (v["name"], v["accuracy"])
        weights_dtypes = {w["dtype"] for w in v["inputs"]} | {w["dtype"] for w in v["outputs"]}
        assert weights_dtypes == {"int8"}
    ops = _ops(out / "pcqat-int8.tflite")
    assert "HARD_SWISH" in ops or "MUL" in ops
    assert "DEQUANTIZE" not in ops, ops  # integer from the input on: nothing for an Edge TPU to split at


def test_a_recipe_the_model_cannot_take_fails_alone(tmp_path, digits_data):
    """A layer TF-MOT cannot handle marks that recipe impossible in the pre-flight; the rest is built."""
    from edgekit._tf import keras

    class Custom(keras.layers.Layer):  # a user's own layer: no TF-MOT support and no QuantizeConfig of ours
        def build(self, shape):
            self.w = self.add_weight(name="w", shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.w
    m = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Flatten(), Custom(name="mine"),
                          keras.layers.Dense(10, activation="softmax")])
    from edgekit import convert_for_device
    train, test = digits_data
    lines = []
    manifest = convert_for_device(m, "local", ["int8", "pcqat-int8"], train=train, eval=test, out=tmp_path / "o",
                                  log=lines.append)
    assert [v.name for v in manifest.variants] == ["int8"]
    (failed,) = manifest.failed
    assert failed["recipe"] == "pcqat-int8" and failed["stage"] == "preflight"
    assert "'pcqat-int8'" in failed["error"] and "Custom" in failed["error"] and "\n" not in failed["error"]
    assert any("FAILED" in ln for ln in lines)


def test_a_keras3_model_converts_to_static_full_integer_for_an_edge_tpu(odd_keras3, data16, tmp_path):
    """Coral converts with a static batch (a concrete function): the converter could not freeze a Keras 3 model's
    variables through the model, they stayed READ_VARIABLE ops and int8 calibration failed (EfficientNetB0 in the
    zoo; any Keras 3 model).  The dynamic-batch path (rpi4) was not affected."""
    from edgekit import convert_for_device
    train, test = data16
    m = convert_for_device(odd_keras3, "coral-usb", ["int8-edgetpu"], train=train, eval=test, out=tmp_path / "o",
                           log=lambda s: None)
    assert not m.failed
    (v,) = m.variants
    assert v.inputs[0]["shape"][0] == 1 and v.inputs[0]["dtype"] == "uint8"  # static batch, uint8 I/O
    assert "READ_VARIABLE" not in v.ops and v.accuracy >= m.reference_keras_accuracy - 0.05


def test_a_large_keras3_model_converted_in_a_child_process_keeps_its_weights(odd_keras3, data16, tmp_path,
                                                                             monkeypatch):
    """Large models convert in a child process from a SavedModel (forced here).  Saved as it is, a Keras 3 model's
    variables were not in the SavedModel: the float flatbuffer read uninitialized weights (the zoo's DenseNet121:
    accuracy 0.11 against 0.98, NaN outputs here) and int8 calibration failed on READ_VARIABLE."""
    from edgekit import convert_for_device
    monkeypatch.setenv("EDGEKIT_CONVERT_ISOLATED", "always")
    train, test = data16
    lines: list[str] = []
    m = convert_for_device(odd_keras3, "rpi4", ["fp32", "int8"], train=train, eval=test, out=tmp_path / "o",
                           log=lines.append)
    assert not m.failed, m.failed
    fp32, int8 = m.variants
    assert all(v.steps[-1]["isolated"] and "READ_VARIABLE" not in v.ops for v in (fp32, int8))
    assert abs(fp32.accuracy - m.reference_keras_accuracy) <= 0.005
    assert int8.accuracy >= m.reference_keras_accuracy - 0.05
    assert not any("WARNING" in ln for ln in lines if "fp32" in ln)


def test_the_qat_preflight_verdict_is_remembered_by_architecture(tmp_path, monkeypatch):
    """Wrapping NASNetMobile for QAT takes a minute; the verdict (ok, or the one-line reason) is remembered by
    architecture and versions, so converting the same model again (another device) does not wrap it again."""
    import pytest
    from edgekit._tf import keras
    from edgekit.errors import OptimizationError
    from edgekit.optimize import qat
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))

    class Custom(keras.layers.Layer):  # the user's own layer, not registered: QAT cannot rebuild the model
        def call(self, x):
            return x * 2.0
    fine = keras.Sequential([keras.layers.Input((8,)), keras.layers.Dense(4)])
    bad = keras.Sequential([keras.layers.Input((8,)), keras.layers.Dense(4), Custom(name="mine")])
    verdicts = {}
    for name, model in (("fine", fine), ("bad", bad)):
        try:
            qat.preflight(model)
            verdicts[name] = None
        except OptimizationError as e:
            verdicts[name] = str(e)
    assert verdicts["fine"] is None
    assert "layer class Custom is the model's own and not registered" in verdicts["bad"] and "\n" not in verdicts["bad"]
    monkeypatch.setattr(qat, "_apply", lambda *a: pytest.fail("wrapped again"))
    qat.preflight(fine)  # remembered: no wrapping
    with pytest.raises(OptimizationError) as e:
        qat.preflight(bad)
    assert str(e.value) == verdicts["bad"]
    again = keras.Sequential([keras.layers.Input((8,)), keras.layers.Dense(5)])  # another architecture: wrapped
    with pytest.raises(pytest.fail.Exception):
        qat.preflight(again)


def test_keras3_model_through_the_default_recipes(odd_keras3, data16, tmp_path):
    train, test = data16
    out = tmp_path / "o"
    proc = run_cli("convert-for-device", odd_keras3, "--device", "rpi4", "--train", train, "--eval", test,
                   "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "rebuilt in tf_keras" in proc.stderr and "Saved artifact" not in proc.stdout + proc.stderr
    m = json.loads(proc.stdout)
    assert m["source_model"]["keras"] == 3 and not m["failed"]
    names = [v["name"] for v in m["variants"]]
    assert names == ["fp32", "fp16", "int8", "pruned-int8", "pcqat-int8"]
    ref = m["reference_keras_accuracy"]
    fp32 = next(v for v in m["variants"] if v["name"] == "fp32")
    assert abs(fp32["accuracy"] - ref) < 1e-9  # converted from the Keras 3 model itself
    pruned = next(v for v in m["variants"] if v["name"] == "pruned-int8")
    prune = next(s for s in pruned["steps"] if s["step"] == "prune")
    assert pruned["sparsity"] > 0.25 and prune["target"] >= 0.3
    if prune["keras_sparsity"] < prune["target"] - 0.05:  # the allocation protected layers: said, not silent
        assert any(w.startswith(f"asked {prune['target']:.0%} sparsity") for w in pruned["warnings"])
    assert all(v["within_budget"] is not None for v in m["variants"])


def test_keras3_rebuild_is_exact_and_names_what_it_cannot_carry(odd_keras3):
    import keras
    from edgekit import keras3
    from edgekit.errors import OptimizationError
    model = keras.saving.load_model(odd_keras3)
    x = np.random.default_rng(0).random((16, 16, 16, 3), dtype=np.float32)
    twin = keras3.to_tf_keras(model, x)
    assert np.max(np.abs(model.predict(x, verbose=0) - twin.predict(x, verbose=0))) <= keras3.TOLERANCE

    @keras.saving.register_keras_serializable(package="test")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return 2 * x
    inp = keras.Input((4,))
    odd = keras.Model(inp, keras.layers.Dense(2)(Twice(name="twice")(inp)))
    with pytest.raises(OptimizationError, match="layer 'twice' \\(Twice\\)"):
        keras3.to_tf_keras(odd)


def test_keras3_dropout_still_drops_when_the_rebuilt_model_trains():
    """Keras 3 records `training=False` in a Dropout's node (and overrides it when the model runs); carried over to
    tf_keras as it is, the rebuilt model's dropout was off in every fine-tune, so a Keras 3 MobileNetV3 or
    EfficientNet fine-tuned differently from the same model in tf_keras."""
    import keras
    from edgekit import keras3
    inp = keras.Input((64,))
    out = keras.layers.Dense(4, name="head")(keras.layers.Dropout(0.5, name="drop")(inp))
    model = keras.Model(inp, out)
    x = np.ones((256, 64), np.float32)
    twin = keras3.to_tf_keras(model, x)
    assert np.max(np.abs(model.predict(x, verbose=0) - twin.predict(x, verbose=0))) <= keras3.TOLERANCE
    dropped = keras3.to_tf_keras(keras.Model(inp, model.get_layer("drop").output))
    kept = np.asarray(dropped(x, training=True))
    assert 0.4 < float((kept == 0).mean()) < 0.6  # about half dropped, the rest scaled by 2
    assert np.allclose(kept[kept != 0], 2.0)
    assert float(np.abs(np.asarray(twin(x, training=True)) - np.asarray(twin(x, training=False))).max()) > 0.1


def test_a_keras3_model_fine_tunes_exactly_as_the_same_model_in_tf_keras():
    """keras.applications' MobileNetV3Small (its Rescaling, hard-swish, SE blocks and Dropout) in tf_keras, and the
    same weights in Keras 3: edgekit's tf_keras rebuild of the Keras 3 model fine-tunes to the very weights the
    tf_keras model does, so every TF-MOT recipe treats the two alike (before the rebuild kept Keras 3's recorded
    `training=False` on the Dropout, they drifted apart and the zoo's fine-tuned variants differed by 1-2 points)."""
    import zoo
    same_kinds, _dropouts, gap = zoo.keras3_fine_tune_gap("MobileNetV3Small", samples=128, lr=1e-3)
    assert same_kinds
    assert gap < 1e-6


def test_keras3_activations_and_tensor_operators_are_rebuilt_for_tf_mot():
    """Keras 3's MobileNetV3 has Activation('hard_silu') (no such name in tf_keras; its 'hard_sigmoid' is another
    function) and `x + 3.0` / `x * (1 / 6)` as operations, not layers: every TF-MOT recipe failed on it.  They are
    rebuilt as tf_keras' own MobileNetV3 writes them (TFOpLambda, ReLU(6), Multiply), outputs equal, and QAT and
    pruning take the result.  The rebuilt layers' names do not depend on how many rebuilds came before."""
    import keras
    from edgekit import keras3
    from edgekit.optimize.qat import _apply
    from edgekit.optimize.support import prune_skip_reason
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inp)
    x = keras.layers.Activation("hard_silu", name="hs")(x)
    x = keras.layers.Activation("hard_sigmoid", name="hsig")(x) * (1.0 / 2.0) + 1.0
    x = keras.layers.Activation("silu", name="silu")(x - 0.5)
    x = keras.layers.Conv2D(8, 1, name="pw")(x)
    out = keras.layers.Dense(4, activation="softmax", name="out")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).normal(0, 3, (16, 8, 8, 3)).astype(np.float32)  # both sides of every kink
    twin = keras3.to_tf_keras(model, x)
    assert np.max(np.abs(model.predict(x, verbose=0) - twin.predict(x, verbose=0))) <= keras3.TOLERANCE
    kinds = [type(layer).__name__ for layer in twin.layers]
    assert "TFOpLambda" in kinds and "ReLU" in kinds and "Multiply" in kinds
    assert prune_skip_reason(twin.get_layer("pw")) is None
    # a second rebuild (one per device in a run) has the same layer names, so remembered searches are found again
    from edgekit import cache
    keys = [cache.new_hash() for _ in range(2)]
    for h, rebuilt in zip(keys, [twin, keras3.to_tf_keras(model, x)]):
        cache.model_digest(h, rebuilt)
    assert keys[0].hexdigest() == keys[1].hexdigest()
    qmodel, _notes = _apply(twin, "QAT")
    wrapped = {layer.name for layer in qmodel.layers if type(layer).__name__ == "QuantizeWrapperV2"}
    assert {"quant_conv", "quant_pw", "quant_out"} <= wrapped, wrapped


def test_pcqat_keeps_sparsity_when_another_conv_was_left_unpruned():
    """TF-MOT's PCQAT registry shares one weight quantizer between all Conv2D layers, and that quantizer stops
    preserving sparsity for good when it meets a conv with no zeros (one left alone as too small): the pruned convs
    then lost every zero during QAT, intermittently, as the allocation varied. Each layer now has its own."""
    from edgekit._tf import keras
    from edgekit.data import Dataset
    from edgekit.optimize.cluster import cluster
    from edgekit.optimize.qat import qat
    from edgekit.optimize.steps import Cluster, Qat
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    data = Dataset(rng.random((256, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 256), "random")
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 1, name="protected")(inp)  # too small to prune or cluster: no zeros, as in real models
    h = keras.layers.Conv2D(16, 3, name="pruned")(h)
    out = keras.layers.Dense(10, activation="softmax", name="head")(keras.layers.Flatten()(h))
    model = keras.Model(inp, out)
    kernel, bias = model.get_layer("pruned").get_weights()
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.7)] = 0
    model.get_layer("pruned").set_weights([kernel, bias])
    clustered, _ = cluster(model, Cluster(clusters=8, epochs=1), data, preserve_sparsity=True)
    assert np.mean(clustered.get_layer("pruned").get_weights()[0] == 0) > 0.69
    trained, _ = qat(clustered, Qat(epochs=1), data, "PCQAT")
    zeros = {v.name.split("/")[0]: float(np.mean(v.numpy() == 0)) for v in trained.weights if "kernel:0" in v.name}
    assert zeros["pruned"] > 0.69 and zeros["protected"] == 0.0, zeros


def test_a_conv_before_a_relu_layer_keeps_its_zeros_and_clusters_through_pcqat(digits_data):
    """Conv2D -> ReLU() (MobileNetV3's squeeze-excite, many hand-written models): TF-MOT's LayerReLUQuantize gave the
    conv a NoOpQuantizeConfig, so its weights trained outside QAT and lost their zeros and clusters (80% pruned and
    8 clusters in Keras, 46% and 10 values in the int8 model).  Now its weights are fake-quantized and preserved,
    and Conv+ReLU still convert to one fused op."""
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.data import load_data
    from edgekit.flatbuffer import parse_model
    from edgekit.optimize.cluster import cluster
    from edgekit.optimize.qat import qat
    from edgekit.optimize.steps import Cluster, Qat
    data = load_data(digits_data[0])
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inp)
    h = keras.layers.Conv2D(32, 3, name="conv")(h)
    h = keras.layers.ReLU(name="relu")(h)
    out = keras.layers.Dense(10, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)] = 0
    model.get_layer("conv").set_weights([kernel, bias])
    clustered, _ = cluster(model, Cluster(clusters=8, epochs=1), data, preserve_sparsity=True)
    trained, _ = qat(clustered, Qat(epochs=1), data, "PCQAT")
    info = parse_model(convert(trained, "int8", "int8", data), "relu")
    (w,) = [w for w in info.weights if "conv/" in w.name]
    assert w.sparsity > 0.79 and w.max_unique_per_channel <= 9, (w.sparsity, w.max_unique_per_channel)
    assert "RELU" not in {o["op"] for o in info.ops}  # fused into the conv, as before


def test_batchnorm_after_a_conv_with_its_own_activation_goes_through_pcqat(digits_data):
    """Conv2D(activation='relu') -> BatchNormalization, common in hand-written models: TF-MOT folds only a linear
    conv, and its registry refused the BN (every QAT recipe failed in the pre-flight)."""
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.data import load_data
    from edgekit.flatbuffer import parse_model
    from edgekit.optimize.qat import _apply
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    for scheme in ("QAT", "PCQAT"):
        qmodel, notes = _apply(model, scheme)
        assert "after a conv with its own activation" in notes["bn"], notes
    info = parse_model(convert(qmodel, "int8", "int8", load_data(digits_data[0])), "bn")
    assert set(info.tensor_dtypes) <= {"int8", "int32"}, info.tensor_dtypes  # full integer


def test_qat_takes_activation_ranges_from_the_data_so_small_tensors_survive():
    """TF-MOT starts every activation range at [-6, 6] and moves it by an EMA of decay 0.999, so after a short
    fine-tune a tensor living in [-0.01, 0.01] still quantizes to zero: EfficientNetB0 (tiny activations after its
    stem) fell from 0.85 to 0.10 under QAT, and so did this model (0.87 -> 0.10) before QAT set its ranges from
    the data first."""
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    from edgekit.examples import digits_arrays
    from edgekit.optimize.qat import qat
    from edgekit.optimize.steps import Qat
    from edgekit.validate import accuracy
    xtr, ytr, xte, yte = digits_arrays()
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(32, 3, use_bias=False)(keras.layers.Rescaling(1 / 255.0)(inp))
    h = keras.layers.Activation("swish")(keras.layers.BatchNormalization()(h))
    h = keras.layers.Rescaling(0.01, name="tiny")(h)  # a tensor far inside [-6, 6]
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(h)))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(xtr, ytr, epochs=15, verbose=0)
    reference = float((model.predict(xte, verbose=0).argmax(1) == yte).mean())
    assert reference > 0.8
    qmodel, _ = qat(model, Qat(epochs=1), Dataset(xtr, ytr, "digits"), "QAT")
    tiny = [v for v in qmodel.weights if v.name.startswith("quant_tiny/") and v.name.endswith("max:0")]
    assert tiny and 0 < float(tiny[0].numpy()) < 0.2, tiny  # not TF-MOT's initial 6
    int8 = convert(qmodel, "int8", "int8", Dataset(xtr, ytr, "digits"))
    assert accuracy(int8, Dataset(xte, yte, "test")) >= reference - 0.03


def _separable_model():
    """stem Conv2D -> SeparableConv2D 'sep' (64 filters) -> GAP -> Dense 'head', for 8x8x1 digits."""
    from edgekit._tf import keras
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inp)
    h = keras.layers.SeparableConv2D(64, 3, activation="relu", name="sep")(h)
    out = keras.layers.Dense(10, activation="softmax", name="head")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, out)


def _separable_variant(digits_data, tmp_path, optimize: str):
    """The separable model, trained 5 epochs on digits, through one int8 recipe with the `optimize` steps (YAML)."""
    from edgekit import convert_for_device
    from edgekit.data import load_data
    data = load_data(digits_data[0])
    model = _separable_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.x, data.y, epochs=5, verbose=0)
    recipe = tmp_path / "p.yaml"
    recipe.write_text(f"name: p\ndescription: x\noptimize:\n{optimize}quantization: {{mode: int8}}\n")
    (v,) = convert_for_device(model, "local", [str(recipe)], train=digits_data[0], eval=digits_data[1],
                              out=tmp_path / "o", log=lambda s: None).variants
    return v


def test_separable_convs_are_allocated_pruned_and_counted_like_the_flatbuffer(digits_data, tmp_path):
    """NASNet is made of SeparableConv2D layers: the allocation left them out (so they stayed dense) and the
    Keras-side count skipped them while the flatbuffer's counts their depthwise and pointwise convs, so a sparsity
    that did survive conversion was reported as lost (NASNetMobile: 30% in Keras, 13.8% in the flatbuffer)."""
    v = _separable_variant(digits_data, tmp_path, "  prune: {target: 0.6, allocation: sensitivity, epochs: 1}\n")
    prune = v.steps[0]
    assert prune["allocation"]["sep"] > 0.5  # the pointwise kernel, the model's largest, takes its share
    assert v.survival["sparsity"]["ok"], v.survival  # Keras and flatbuffer counted alike
    assert abs(v.survival["sparsity"]["keras"] - v.survival["sparsity"]["tflite"]) < 0.02
    assert not any("did not survive" in w for w in v.warnings)
    # the depthwise halves, which TF-MOT does not prune, are where a shortfall is: said as such
    assert prune["dense_weights"]["not_prunable"]["kinds"] == ["DepthwiseConv2D"]


def test_sparsity_preserving_clustering_keeps_the_zeros_of_separable_convs_and_of_layers_it_leaves(digits_data):
    """NASNetMobile's PCQAT: 74.6% sparsity after pruning, 31.2% after clustering.  Clustering did not know
    SeparableConv2D, so it left those layers unwrapped, and its fine-tune moved their pruned weights off zero; the
    same happens to any layer it leaves (too few non-zero weights for the centroids)."""
    from edgekit.data import load_data
    from edgekit.optimize.cluster import cluster
    from edgekit.optimize.steps import Cluster
    data = load_data(digits_data[0])
    model = _separable_model()
    dw, pw, b = model.get_layer("sep").get_weights()
    pw[np.abs(pw) < np.quantile(np.abs(pw), 0.8)] = 0
    model.get_layer("sep").set_weights([dw, pw, b])
    k, hb = model.get_layer("head").get_weights()
    k.flat[6:] = 0  # 6 weights left: too few for 8 centroids, so clustering leaves this layer as it is
    model.get_layer("head").set_weights([k, hb])
    clustered, details = cluster(model, Cluster(clusters=8, epochs=1), data, preserve_sparsity=True)
    pw_after = clustered.get_layer("sep").get_weights()[1]
    assert np.mean(pw_after == 0) >= 0.79 and len(np.unique(pw_after)) <= 9  # clustered, zeros kept
    head = clustered.get_layer("head").get_weights()[0]
    assert np.all(head.flat[6:] == 0) and details["zeros_restored_layers"] >= 1


def test_pcqat_quantizes_separable_convs_and_keeps_their_zeros_and_clusters(digits_data, tmp_path):
    """QAT left every SeparableConv2D float (not in TF-MOT's registry), so PCQAT's fine-tune moved its pruned and
    clustered pointwise weights freely: 80% zeros and 8 values became 9% and 933 values, and the converter
    quantized the layer post-training behind QAT's back.  TF-MOT splits an annotated one into DepthwiseConv2D +
    1x1 Conv2D: both halves are quantization-aware trained and the int8 model keeps the zeros and clusters."""
    from edgekit.flatbuffer import parse_model
    v = _separable_variant(digits_data, tmp_path, "  prune: {target: 0.7, epochs: 1}\n"
                           "  cluster: {clusters: 8, epochs: 1}\n  qat: {epochs: 1}\n")
    info = parse_model((tmp_path / "o" / v.path).read_bytes())
    # the 1x1 conv's kernel: 64 output channels over 16 inputs
    (pointwise,) = [w for w in info.weights if w.op == "CONV_2D" and w.channels == 64 and w.size == 64 * 16]
    # pruned to 70% and clustered to 8 values (+1: int8 can split zero from a near-zero centroid); without the
    # split, QAT trained the layer freely: 59% zeros and 10 values
    assert pointwise.sparsity >= 0.68 and pointwise.max_unique_per_channel <= 9
    assert v.survival["sparsity"]["ok"] and v.survival["clusters"]["ok"], v.survival
    (qat,) = [s for s in v.steps if s["step"] == "qat"]
    assert "split by TF-MOT" in qat["layers_handled"]["sep"]


def test_an_average_pool_keeps_its_input_scale_so_int8_matches_the_qat_model():
    """TF-MOT gives AveragePooling2D an output range of its own, narrower than its input's (an average smooths).
    The int8 op must share its input's scale, so the converter requantized the pool's *input* into that range and
    clipped it (after a ZeroPadding2D: the pad's output tensor is requantized), and a max pool reading the same
    tensor with it: NASNetMobile's QAT model scored 0.972 in Keras and 0.814 as int8.  Here a checkerboard input
    (an average of 3x3 is a ninth of the values it averages) makes the clipping plain."""
    import numpy as np
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    from edgekit.optimize.qat import _apply, warm_ranges
    from edgekit.validate import predict
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input((8, 8, 1))
    h = layers.ZeroPadding2D(1)(layers.Conv2D(4, 1, name="c")(inp))  # as in NASNet's reduction cells
    a = layers.Conv2D(4, 1, name="after_avg")(layers.AveragePooling2D(3, 1, "same", name="avg")(h))
    b = layers.MaxPooling2D(3, 1, "same")(h)
    out = layers.Dense(10)(layers.Flatten()(layers.Add()([a, b])))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    checker = (np.indices((8, 8)).sum(axis=0) % 2 * 2 - 1).astype("float32")[None, :, :, None]
    x = (checker * rng.uniform(1, 5, (256, 1, 1, 1))).astype("float32")
    data = Dataset(x, rng.integers(0, 10, 256), "checkerboard")
    qmodel, notes = _apply(model, "QAT")
    assert "avg" in notes and "input's scale" in notes["avg"]
    warm_ranges(qmodel, data)
    keras_out = qmodel.predict(x[:64], verbose=0)
    int8_out = predict(convert(qmodel, "int8", "float32", data), x[:64])
    error = float(np.linalg.norm(int8_out - keras_out) / np.linalg.norm(keras_out))
    assert error < 0.04, error  # 0.10 when the pool's input was requantized into the pool's output range


def test_a_converter_error_names_the_keras_layer_in_one_line():
    """The converter's MLIR error, as it failed DenseNet121's PCQAT before the average-pool fix (recorded from the
    zoo run), becomes one line naming the Keras layer; text without a location is kept as its first error line."""
    from edgekit.convert.tflite import converter_error
    recorded = ('<unknown>:0: error: loc(callsite(fused["AvgPool:", "densenet121/quant_pool2_pool/AvgPool@__inference_'
                '<lambda>_215021"] at callsite(fused["StatefulPartitionedCall:", "StatefulPartitionedCall@__inference_'
                'signature_wrapper_217955"] at fused["StatefulPartitionedCall:", "StatefulPartitionedCall"]))): '
                "'tfl.average_pool_2d' op quantization parameters violate the same scale constraint: "
                "!quant.uniform<i8:f32, 0.034:-128> vs. !quant.uniform<i8:f32, 0.012:-9>\n"
                "<unknown>:0: note: loc(fused[...]): called from")
    assert converter_error(recorded) == ("at layer 'pool2_pool' (tfl.average_pool_2d): quantization parameters "
                                         "violate the same scale constraint")
    assert converter_error("Traceback\nValueError: error: the model has no signature") == \
        "ValueError: error: the model has no signature"


def test_int8_error_per_layer_is_measured_after_the_relu_the_converter_fuses():
    """The converter fuses conv + BatchNormalization + ReLU6 into one int8 op, whose tensor holds no negative
    values; comparing it with the BatchNormalization's output made every such conv look ~70% wrong (MobileNetV2's
    depthwise convs, named as int8's worst layers; keeping them float changed nothing).  A faithful int8 model now
    shows small errors for each of them."""
    import numpy as np
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.data import Dataset
    from edgekit.quant_error import worst_layers
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inp = keras.Input((8, 8, 3))
    h = inp
    for i in range(3):
        h = layers.Conv2D(16, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = layers.ReLU(6.0, name=f"relu{i}")(layers.BatchNormalization(name=f"bn{i}")(h))
    model = keras.Model(inp, layers.Dense(10, name="head")(layers.GlobalAveragePooling2D()(h)))
    x = np.random.default_rng(0).normal(size=(128, 8, 8, 3)).astype("float32")
    int8 = convert(model, "int8", "int8", Dataset(x, None, "random"))
    worst = worst_layers(int8, model, x, top=10)
    assert {w["layer"] for w in worst} >= {"conv0", "conv1", "conv2"}
    assert max(w["relative_error"] for w in worst) < 0.1, worst  # ~0.7 when compared before the ReLU6
