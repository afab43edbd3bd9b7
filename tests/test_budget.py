"""The accuracy budget: the strongest compression that keeps accuracy, and never a silent collapse."""
import json

from conftest import run_cli


def test_auto_pruning_meets_a_one_point_budget_on_digits(rpi4_manifest):
    manifest, out = rpi4_manifest
    v = manifest.variant("pruned-int8")
    (prune,) = [s for s in v.steps if s["step"] == "prune"]
    search = prune["search"]
    assert search["max_drop"] == 1.0 and 1 <= len(search["trials"]) <= search["trial_budget"]
    assert search["budget_met"] and prune["target"] in search["candidates"]
    tried = {t["target"]: t for t in search["trials"]}
    assert tried[prune["target"]]["within_budget"]
    # nothing stronger that was tried stayed within the validation budget
    assert all(not t["within_budget"] for t in search["trials"] if t["target"] > prune["target"])
    assert v.max_drop == 1.0 and v.accuracy_drop is not None
    assert v.within_budget and v.accuracy_drop <= 1.0 and v.sparsity >= 0.5
    ref = manifest.reference_keras_accuracy
    assert abs(v.accuracy_drop - round(100 * (ref - v.accuracy), 2)) < 1e-6  # against the original model


def test_fixed_strength_over_budget_is_flagged_and_not_selected(digits_model, digits_data, tmp_path):
    train, test = digits_data
    recipe = tmp_path / "prune95-int8.yaml"
    recipe.write_text("name: prune95-int8\ndescription: 95% whatever it costs\nmax_drop: 0.5\n"
                      "optimize:\n  prune: {target: 0.95, epochs: 1}\nquantization: {mode: int8}\n")
    out = tmp_path / "o"
    proc = run_cli("convert-for-device", digits_model, "--device", "local", "--recipe", "int8", "--recipe", recipe,
                   "--train", train, "--eval", test, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "prune95-int8: WARNING  over the accuracy budget" in proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("prune95-int8"))
    assert "OVER" in row and "over the accuracy budget" in row
    m = json.loads((out / "manifest.json").read_text())
    v = {x["name"]: x for x in m["variants"]}
    assert v["prune95-int8"]["within_budget"] is False and v["prune95-int8"]["accuracy_drop"] > 0.5
    assert v["int8"]["within_budget"] is True
    worst = v["prune95-int8"]["quantization"]["largest_errors"]  # where to look: per-layer int8 error
    assert worst and {w["layer"] for w in worst} <= {"conv1", "conv2", "fc1", "fc2"}
    assert all(w["relative_error"] >= 0 for w in worst) and "largest int8 error" in proc.stderr
    store = tmp_path / "s.db"
    proc = run_cli("profile", out / "int8.tflite", out / "prune95-int8.tflite", "--board", "local", "--threads", "1",
                   "--runs", "20", "--store", store, env={"HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("select", "--board", "local", "--store", store, "--json")
    d = json.loads(proc.stdout)
    assert proc.returncode == 0 and [c["variant"] for c in d["candidates"]] == ["int8"], proc.stdout
    assert any("over their accuracy budget: prune95-int8" in n for n in d["notes"])
    proc = run_cli("select", "--board", "local", "--store", store, "--include-over-budget", "--json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(c["variant"] for c in json.loads(proc.stdout)["candidates"]) == ["int8", "prune95-int8"]
