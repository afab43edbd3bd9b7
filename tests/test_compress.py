"""Compression building blocks: filter pruning, factorization, allocation, sensitivity, distilled fine-tunes."""
import json

import numpy as np
import pytest

from conftest import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def tfk():
    from edgekit._tf import keras
    return keras


def test_removing_dead_filters_keeps_outputs_identical(tfk):
    from edgekit.compress.filters import prune_filters
    from edgekit.compress.flops import count
    from edgekit.examples import build_digits_cnn
    m = build_digits_cnn()
    k, b = m.get_layer("conv1").get_weights()
    k[..., 8:] = 0
    b[8:] = 0
    m.get_layer("conv1").set_weights([k, b])  # channels 8..15 are dead (relu(0) = 0)
    small = prune_filters(m, {"conv1": 0.5})
    assert small.get_layer("conv1").filters == 8 and small.get_layer("conv2").get_weights()[0].shape[2] == 8
    x = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(m.predict(x, verbose=0), small.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert count(small)["macs"] < count(m)["macs"]


def test_residual_depthwise_bn_model_shrinks_consistently(tfk):
    from edgekit.compress.filters import prune_filters, prune_to_flops
    from edgekit.compress.flops import count
    from edgekit.examples import build_residual_cnn
    m = build_residual_cnn()
    x = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    same = prune_filters(m, 0.0)
    np.testing.assert_allclose(m.predict(x, verbose=0), same.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    small, frac, _ = prune_to_flops(m, 0.5)
    assert 0.4 <= frac <= 0.5
    adds = [layer for layer in small.layers if type(layer).__name__ == "Add"]
    assert adds and all(len({tuple(t.shape) for t in layer.input}) == 1 for layer in adds)
    assert small.output_shape == m.output_shape and count(small)["params"] < count(m)["params"]
    assert small.predict(x, verbose=0).shape == (4, 10)


def test_low_rank_factorization_is_exact_for_a_low_rank_kernel(tfk):
    from edgekit.compress.factorize import factorize
    inp = tfk.Input((64,))
    h = tfk.layers.Dense(128, activation="relu", name="big")(inp)
    m = tfk.Model(inp, tfk.layers.Dense(10, name="out")(h))
    rng = np.random.default_rng(0)
    k = (rng.normal(size=(64, 5)) @ rng.normal(size=(5, 128))).astype(np.float32)
    m.get_layer("big").set_weights([k, np.zeros(128, np.float32)])
    f, report = factorize(m, energy=0.9999)
    assert report["big"]["rank"] == 5 and report["big"]["params_after"] < report["big"]["params_before"]
    x = rng.random((8, 64)).astype(np.float32)
    np.testing.assert_allclose(m.predict(x, verbose=0), f.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_sensitivity_allocation_spares_sensitive_and_tiny_layers():
    from edgekit.compress.allocate import achieved, by_sensitivity
    sens = {"baseline": 0.98, "sparsities": [0.3, 0.5, 0.7, 0.9], "layers": {
        "first": {"params": 300, "accuracy": [0.97, 0.9, 0.8, 0.5]},
        "sensitive": {"params": 20000, "accuracy": [0.975, 0.96, 0.9, 0.7]},
        "robust": {"params": 80000, "accuracy": [0.98, 0.98, 0.979, 0.97]}}}
    a = by_sensitivity(sens, 0.8)
    assert a["first"] == 0.0 and a["robust"] > a["sensitive"]
    assert achieved(sens, a) >= 0.8


def test_allocation_follows_output_divergence_where_accuracy_is_flat():
    """On samples the model has memorized, pruning one layer alone rarely flips an answer: accuracy is flat for
    every layer and cannot tell the sensitive one.  How far the outputs move (KL divergence) still can, and the
    allocation follows it."""
    from edgekit.compress.allocate import achieved, by_sensitivity
    flat = [0.98] * 4
    sens = {"baseline": 0.98, "sparsities": [0.3, 0.5, 0.7, 0.9], "layers": {
        "sensitive": {"params": 5000, "accuracy": flat, "divergence": [0.05, 0.2, 0.8, 3.0]},
        "robust": {"params": 5000, "accuracy": flat, "divergence": [0.0, 0.01, 0.03, 0.1]}}}
    a = by_sensitivity(sens, 0.6)
    assert a["robust"] > a["sensitive"] + 0.2 and achieved(sens, a) >= 0.6
    accuracy_only = {**sens, "layers": {n: {k: v for k, v in d.items() if k != "divergence"}
                                        for n, d in sens["layers"].items()}}
    b = by_sensitivity(accuracy_only, 0.6)
    assert b["robust"] == b["sensitive"]  # what the allocation saw before: no difference at all
    # a target only the divergence's far end reaches: every layer at its cap, not stopped at tolerance 1.0
    assert achieved(sens, by_sensitivity(sens, 0.95)) >= 0.9


def test_a_pruning_search_does_not_try_targets_beyond_what_the_allocation_can_reach():
    """Small layers stay dense and the rest stop at the cap, so every target above that reach is one model: the
    search tries the reach itself instead of training it twice (the bench's odd model at 80% and 90%)."""
    from edgekit.compress.allocate import MAX_SPARSITY, achieved, by_sensitivity, reachable
    from edgekit.optimize.prune import AUTO_TARGETS, targets_within
    curve = {"accuracy": [0.98, 0.97, 0.95, 0.9]}
    sens = {"baseline": 0.98, "sparsities": [0.3, 0.5, 0.7, 0.9], "layers": {
        "tiny": {"params": 400, **curve}, "big": {"params": 3600, **curve}}}
    reach = reachable(sens)
    assert reach == achieved(sens, {"tiny": 0.0, "big": MAX_SPARSITY}) == 0.855
    assert by_sensitivity(sens, 0.9) == by_sensitivity(sens, 0.95) == by_sensitivity(sens, reach)
    targets, got = targets_within(sens)
    assert got == 0.85 and targets == (0.85, 0.8, 0.7, 0.6, 0.5, 0.3)
    assert by_sensitivity(sens, 0.85) != by_sensitivity(sens, 0.8)  # each target left is a different model
    sens["layers"]["tiny"]["params"] = 40000  # nothing small any more: every target can be reached
    assert targets_within(sens)[0] == AUTO_TARGETS


def test_sensitivity_is_cached_by_model_hash(tfk, tmp_path, monkeypatch):
    from edgekit.compress.sensitivity import analyse
    from edgekit.data import Dataset
    from edgekit.examples import build_digits_cnn, digits_arrays
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    _, _, x, y = digits_arrays()
    data = Dataset(x[:100], y[:100], "t")
    m = build_digits_cnn()
    first = analyse(m, data, (0.5, 0.9))
    again = analyse(m, data, (0.5, 0.9))
    assert not first["cached"] and again["cached"] and again["layers"] == first["layers"]
    assert set(first["layers"]) == {"conv1", "conv2", "fc1", "fc2"}
    for d in first["layers"].values():  # the outputs move away from the unpruned model's, more at 90%
        assert len(d["divergence"]) == 2 and 0 <= d["divergence"][0] <= d["divergence"][1] and d["divergence"][1] > 0


def test_filter_pruning_recipe_with_distillation_end_to_end(digits_model, digits_data, tmp_path):
    from edgekit import convert_for_device
    recipe = tmp_path / "filters-int8.yaml"
    recipe.write_text("name: filters-int8\ndescription: half the MACs\noptimize:\n"
                      "  distill: {temperature: 4, alpha: 0.3}\n"
                      "  prune: {structure: filters, target_flops: 0.5, epochs: 6}\n"
                      "quantization: {mode: int8, io: int8}\n")
    train, test = digits_data
    # rpi4's profile says its int8 kernels work in tiles of 8 channels: the recipe takes that tile by default
    m = convert_for_device(digits_model, "rpi4", [str(recipe), "int8"], train=train, eval=test,
                           out=tmp_path / "o", log=lambda s: None)
    small, full = m.variant("filters-int8"), m.variant("int8")
    assert small.macs <= 0.52 * full.macs and small.params < full.params
    assert small.bytes < full.bytes
    step = small.steps[0]
    assert step["step"] == "filters" and step["distill"] == {"temperature": 4, "alpha": 0.3}
    assert step["channel_multiple"] == 8 and small.recipe_config["optimize"]["filters"]["channel_multiple"] == 8
    assert step["accuracy_before"] == pytest.approx(m.reference_keras_accuracy)
    assert m.reference_keras_accuracy - small.accuracy <= 0.03


def test_sensitivity_cli(digits_model, digits_data, tmp_path):
    proc = run_cli("sensitivity", digits_model, "--eval", digits_data[1], "--sparsities", "0.5,0.9", "--json",
                   "--plot", tmp_path / "s.png", env={"EDGEKIT_CACHE": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["sparsities"] == [0.5, 0.9] and (tmp_path / "s.png").exists()
    drops = [res["baseline"] - a for a in res["layers"]["fc1"]["accuracy"]]
    assert drops[1] >= drops[0]  # pruning more hurts at least as much
    assert_one_line_error(run_cli("sensitivity", digits_model, "--eval", tmp_path / "none.npz"), "no such file")


def test_channel_tile_from_cpu_flags():
    from edgekit.compress.kernels import cpu_flags, host_channel_multiple, resolve
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni amx_tile amx_int8\n"
    assert cpu_flags(x86) >= {"avx2", "amx_int8"}
    assert host_channel_multiple(cpu_flags(x86), "x86_64") == 64
    assert host_channel_multiple({"avx2", "avx512bw", "avx512_vnni"}, "x86_64") == 16
    assert host_channel_multiple({"avx2"}, "x86_64") == 8
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 asimddp\n"
    assert host_channel_multiple(cpu_flags(arm), "aarch64") == 16
    assert host_channel_multiple({"fp", "asimd"}, "aarch64") == 8
    assert resolve(16) == 16 and resolve("auto") == host_channel_multiple()


def test_effective_macs_round_channels_up_to_the_tile(tfk):
    from edgekit.compress.flops import count
    inp = tfk.Input((8, 8, 64))
    m = tfk.Model(inp, tfk.layers.Conv2D(72, 3, padding="same")(inp))
    c = count(m, 64)
    assert c["macs"] == 64 * 9 * 64 * 72 and c["effective_macs"] == 64 * 9 * 64 * 128
    assert "effective_macs" not in count(m)


def test_filter_pruning_keeps_channels_at_the_tile(tfk):
    from edgekit.compress.filters import keep_count, prune_to_flops
    from edgekit.compress.flops import count
    from edgekit.errors import OptimizationError
    from edgekit.examples import build_residual_cnn
    assert [keep_count(n, 0.3, 64) for n in (64, 128, 256, 512)] == [64, 64, 192, 384]
    assert keep_count(32, 0.5, 1) == 16 and keep_count(256, 0.95, 64) == 64
    wide = build_residual_cnn((16, 16, 1), width=128)
    small, frac, _ = prune_to_flops(wide, 0.5, multiple=64)
    assert 0.45 <= frac <= 0.5  # whole tiles given back: close to the target, never over it
    assert count(small, 64)["effective_macs"] <= 0.5 * count(wide, 64)["effective_macs"]
    widths = [layer.filters for layer in small.layers if type(layer).__name__ == "Conv2D"]
    assert widths and all(w % 64 == 0 for w in widths) and widths != [128, 128, 256, 256, 512]
    narrow = build_residual_cnn((32, 32, 1), width=32)  # every channel group but one has <= 64 channels
    with pytest.raises(OptimizationError, match="multiples of 64") as e:
        prune_to_flops(narrow, 0.5, multiple=64)
    assert "\n" not in str(e.value) and "channel_multiple" in str(e.value)


def test_keep_going_lists_a_failed_recipe_and_builds_the_rest(digits_model, digits_data, tmp_path):
    from edgekit import convert_for_device
    recipe = tmp_path / "f64.yaml"  # digits has no channel group wider than 64: a tile of 64 leaves nothing to cut
    recipe.write_text("name: f64\ndescription: x\noptimize:\n  prune: {structure: filters, target_flops: 0.5, "
                      "channel_multiple: 64}\nquantization: {mode: int8}\n")
    train, test = digits_data
    m = convert_for_device(digits_model, "local", [str(recipe), "int8"], train=train, eval=test,
                           out=tmp_path / "o", log=lambda s: None, keep_going=True)
    assert [v.name for v in m.variants] == ["int8"] and (tmp_path / "o" / "int8.tflite").exists()
    (failed,) = m.failed
    assert failed["recipe"] == "f64" and "multiples of 64" in failed["error"]
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["failed"] == m.failed
    proc = run_cli("convert-for-device", digits_model, "--device", "local", "--recipe", recipe, "--recipe", "int8",
                   "--train", train, "--eval", test, "--out", tmp_path / "p")
    last = proc.stderr.strip().splitlines()[-1]  # after the progress lines: one error line, nothing written
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert last.startswith("edgekit: error: recipe 'f64', step filters: cannot reach 50%") and "64" in last
    assert not (tmp_path / "p").exists()


def test_latency_driven_filter_pruning_follows_the_boards_op_table(digits_model, digits_data, rpi4_manifest,
                                                                   tmp_path):
    """NetAdapt-style: the board's op table (from `profile --ops` of the model's int8 variant) predicts each cut;
    steps end at the target (or the accuracy budget), channel counts stay at the tile, and the variant says what it
    predicted.  Without a table the recipe fails with the command that builds one."""
    from edgekit import convert_for_device
    store = tmp_path / "ops.db"
    proc = run_cli("profile", rpi4_manifest[1] / "int8.tflite", "--ops", "--board", "local", "--threads", "1",
                   "--runs", "30", "--store", store)
    assert proc.returncode == 0, proc.stderr
    recipe = tmp_path / "lat-int8.yaml"
    recipe.write_text("name: lat-int8\ndescription: 70% of the latency\noptimize:\n"
                      f"  prune: {{structure: filters, target_latency: 0.7, board: local, store: {store}, "
                      "channel_multiple: 4, epochs: 2}\nquantization: {mode: int8, io: int8}\n")
    train, test = digits_data
    m = convert_for_device(digits_model, "local", [str(recipe)], train=train, eval=test, out=tmp_path / "o",
                           log=lambda s: None)
    small, full = m.variant("lat-int8"), rpi4_manifest[0].variant("int8")
    step = small.steps[0]
    assert step["step"] == "filters" and step["board"] == "local" and step["steps"]
    assert step["predicted_ms_after"] < step["predicted_ms_before"]
    if step["stopped"] == "target reached":
        assert step["predicted_fraction"] <= 0.7 + 1e-3
    for s in step["steps"]:
        before, after = s["channels"]
        assert after < before and after % 4 == 0
    assert small.macs < full.macs and small.bytes < full.bytes
    assert m.reference_keras_accuracy - small.accuracy <= 0.05
    # no table for that board: a failure that names the command to run
    recipe.write_text(recipe.read_text().replace("board: local", "board: pi9"))
    proc = run_cli("convert-for-device", digits_model, "--device", "local", "--recipe", recipe, "--train", train,
                   "--eval", test, "--out", tmp_path / "o2")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("edgekit: error: recipe 'lat-int8'") and "lut build --board pi9" in last, proc.stderr
    assert "reference accuracy" not in proc.stderr  # refused before any work
