"""Records declared once: validation messages from the declarations, the store's table generated from the
Measurement record (and old stores still open), the exact bootstrap interval, layer kinds by class, -v."""
import json
import sqlite3

import numpy as np
import pytest
import yaml

from conftest import run_cli
from edgekit.errors import ConfigError


def test_boards_file_problems_name_file_key_and_allowed(tmp_path):
    from edgekit.remote.inventory import load_boards
    bad = tmp_path / "boards.yaml"
    bad.write_text(yaml.safe_dump({"boards": [{"name": "pi", "host": "h", "profile": "rpi4", "prot": 22,
                                               "runtime": "tflite", "port": 70000}]}))
    with pytest.raises(ConfigError) as e:
        load_boards(bad)
    msg = str(e.value)
    assert "boards.yaml: unknown key 'boards[0].prot'" in msg and "allowed:" in msg and "port" in msg
    assert "'boards[0].runtime' has 'tflite'; allowed: auto, ai_edge_litert, tflite_runtime, tensorflow" in msg
    assert "'boards[0].port' must be <= 65535, got 70000" in msg


def test_recipe_step_settings_are_checked_against_their_declaration(tmp_path):
    from edgekit.profiles import load_recipe
    bad = tmp_path / "r.yaml"
    bad.write_text("name: r\ndescription: x\noptimize:\n  cluster: {clusters: 300, init: kmeans}\n"
                   "quantization: {mode: int8}\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(str(bad))
    msg = str(e.value)
    assert "'optimize.cluster.clusters' must be <= 256, got 300" in msg
    assert "'optimize.cluster.init' has 'kmeans'; allowed: kmeans++, linear, density, random" in msg
    # defaults live in the step declaration; what the file said is kept as written (cache keys, manifests)
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: ok\ndescription: x\noptimize:\n  prune: {target: 0.5}\n  cluster: {clusters: 8}\n"
                  "quantization: {mode: int8}\n")
    r = load_recipe(str(ok))
    assert (r.prune.epochs, r.prune.schedule, r.cluster.epochs, r.cluster.init) == (4, "polynomial", 3, "kmeans++")
    assert r.config()["optimize"] == {"prune": {"target": 0.5}, "cluster": {"clusters": 8}}


def test_store_table_comes_from_the_measurement_record_and_old_stores_open(tmp_path):
    from edgekit.store import COLUMNS, SCHEMA, Store
    cols = {r[1] for r in sqlite3.connect(":memory:").executescript(SCHEMA).execute(
        "PRAGMA table_info(measurements)")}
    assert cols == {"id", *COLUMNS}
    # a store written before the `emulated` column existed
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.executescript(SCHEMA.replace(",\n    emulated INTEGER NOT NULL DEFAULT 0", ""))
    db.execute("INSERT INTO measurements (settings_key, status, model_sha256, model_name, board, profile, threads, "
               "delegate, warmup_runs, min_runs, min_seconds, repeat_index, input, started_at, finished_at, p50_ms, "
               "n_runs) VALUES ('k', 'ok', 's', 'm', 'b', 'local', 1, 'xnnpack', 1, 1, 0, 0, 'random', 't', 't', "
               "1.5, 3)")
    db.commit()
    db.close()
    ro = Store(old, create=False)
    (row,) = ro.rows()
    assert row["emulated"] == 0 and row["p50_ms"] == 1.5
    ro.close()
    assert "emulated" not in {r[1] for r in sqlite3.connect(old).execute("PRAGMA table_info(measurements)")}
    rw = Store(old)  # writable: gains the column, keeps the row
    assert "emulated" in rw.have and rw.rows()[0]["emulated"] == 0
    rw.close()


def test_bootstrap_interval_is_the_exact_resampling_distribution():
    from edgekit.select import bootstrap_ci
    x = np.random.default_rng(3).lognormal(1.0, 0.3, 400)
    rng = np.random.default_rng(4)
    for q in (50, 90):
        lo, hi = bootstrap_ci(x, q)
        sims = [np.percentile(rng.choice(x, x.size), q, method="inverted_cdf") for _ in range(3000)]
        want_lo, want_hi = np.percentile(sims, [2.5, 97.5], method="inverted_cdf")
        xs = np.sort(x)  # within one order statistic of 3,000 real resamples
        assert abs(np.searchsorted(xs, lo) - np.searchsorted(xs, want_lo)) <= 1, (q, lo, want_lo)
        assert abs(np.searchsorted(xs, hi) - np.searchsorted(xs, want_hi)) <= 1, (q, hi, want_hi)


def test_layer_kinds_by_class_subclasses_and_registered(tmp_path):
    from edgekit._tf import keras
    from edgekit.compress.flops import count
    from edgekit.layers import kind_of, register_layer

    class MyConv(keras.layers.Conv2D):
        pass

    class Wrapped(keras.layers.Layer):  # not a Conv2D subclass: unknown until registered
        pass
    assert kind_of(MyConv(4, 3)) == "Conv2D" and kind_of(keras.layers.DepthwiseConv2D(3)) == "DepthwiseConv2D"
    assert kind_of(Wrapped()) == "Layer"
    register_layer(Wrapped, "Dense")
    assert kind_of(Wrapped()) == "Dense"

    def model(conv):
        i = keras.Input((8, 8, 3))
        return keras.Model(i, keras.layers.GlobalAveragePooling2D()(conv(16, 3, padding="same")(i)))
    assert count(model(MyConv))["macs"] == count(model(keras.layers.Conv2D))["macs"] > 0


def test_verbose_prints_debug_lines_for_remote_commands(tmp_path, rpi4_manifest):
    model = rpi4_manifest[1] / "int8.tflite"
    quiet = run_cli("profile", model, "--board", "local", "--threads", "1", "--runs", "3", "--store",
                    tmp_path / "a.db")
    assert quiet.returncode == 0, quiet.stderr
    assert "edgekit: debug:" not in quiet.stderr
    loud = run_cli("profile", model, "--board", "local", "--threads", "1", "--runs", "3", "--store",
                   tmp_path / "b.db", "-v")
    assert loud.returncode == 0, loud.stderr
    lines = [ln for ln in loud.stderr.splitlines() if ln.startswith("edgekit: debug: [remote] local: exec ")]
    assert any("--batch" in ln for ln in lines) and any("--probe" in ln for ln in lines)
    assert json.loads(run_cli("table", "--store", tmp_path / "b.db", "--format", "json").stdout)


def test_manifest_is_read_back_through_its_declaration(rpi4_manifest, tmp_path):
    from edgekit.manifest import load_manifest
    out = rpi4_manifest[1]
    m = load_manifest(out / "manifest.json")
    assert m.variants and all(type(v).__name__ == "Variant" for v in m.variants)
    data = json.loads((out / "manifest.json").read_text())
    data["variants"][0]["bytes"] = "many"
    del data["created"]
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as e:
        load_manifest(bad)
    msg = str(e.value)
    assert "'variants[0].bytes' must be an integer, got 'many'" in msg and "missing required key 'created'" in msg
