"""Nothing lost, nothing leaked: manifests that point elsewhere, swapped model files, foreign stores, crashes in
TFLite Micro, and choices that must say which model they are about."""
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli


@pytest.fixture
def manifest_copy(rpi4_manifest, tmp_path):
    """A private copy of the rpi4 output folder (tests below tamper with it)."""
    out = tmp_path / "rpi4"
    shutil.copytree(rpi4_manifest[1], out)
    return out


def _set_path(out, variant, path):
    m = json.loads((out / "manifest.json").read_text())
    for v in m["variants"]:
        if v["name"] == variant:
            v["path"] = path
    (out / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.tflite", "sub/../../outside.tflite", "ABSOLUTE"])
def test_manifest_paths_stay_inside_the_manifest_folder(manifest_copy, tmp_path, path):
    outside = tmp_path / "outside.tflite"
    shutil.copy(manifest_copy / "int8.tflite", outside)
    _set_path(manifest_copy, "int8", str(outside) if path == "ABSOLUTE" else path)
    proc = run_cli("export", "--manifest", manifest_copy / "manifest.json", "--variant", "int8", "--target", "linux",
                   "--out", tmp_path / "exp")
    assert_one_line_error(proc, "outside the manifest's folder")
    assert not (tmp_path / "exp").exists()


def test_a_swapped_model_file_is_refused_by_export(manifest_copy, tmp_path):
    shutil.copy(manifest_copy / "fp32.tflite", manifest_copy / "int8.tflite")  # fp32 bytes under the int8 name
    proc = run_cli("export", "--manifest", manifest_copy / "manifest.json", "--variant", "int8", "--target", "linux",
                   "--out", tmp_path / "exp")
    assert_one_line_error(proc, "int8.tflite is not the file the manifest describes", "sha256")
    assert not (tmp_path / "exp").exists()


def test_select_never_opens_a_file_outside_the_manifest(rpi4_manifest, manifest_copy, tmp_path):
    store = tmp_path / "s.db"
    proc = run_cli("profile", manifest_copy / "int8.tflite", "--board", "local", "--threads", "1", "--runs", "20",
                   "--store", store, env={"HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    _set_path(manifest_copy, "int8", "/etc/passwd")
    # the local board's profile differs from the manifest's (rpi4): select re-checks the file, so it must refuse it
    proc = run_cli("select", "--board", "local", "--store", store, "--manifest", manifest_copy / "manifest.json")
    assert_one_line_error(proc, "outside the manifest's folder")


def test_select_over_two_models_names_the_model_in_every_row(rpi4_manifest, tmp_path):
    """Two manifests from different source models: rows and the choice say which model each variant is."""
    a = tmp_path / "mobilenet"
    b = tmp_path / "effnet"
    for d, name in ((a, "mobilenet"), (b, "effnet")):
        shutil.copytree(rpi4_manifest[1], d)
        m = json.loads((d / "manifest.json").read_text())
        m["source_model"] = {**m["source_model"], "path": f"/models/{name}.keras", "sha256": name * 4}
        (d / "manifest.json").write_text(json.dumps(m))
    store = tmp_path / "s.db"
    proc = run_cli("profile", a / "int8.tflite", "--board", "local", "--threads", "1", "--runs", "20",
                   "--store", store, env={"HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    # the same bytes were converted from the other model too: label by the manifest each candidate comes from
    proc = run_cli("select", "--board", "local", "--store", store, "--manifest", a / "manifest.json",
                   "--manifest", b / "manifest.json", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert all(c["model"] in ("mobilenet", "effnet") for c in d["candidates"])
    proc = run_cli("select", "--board", "local", "--store", store, "--manifest", a / "manifest.json",
                   "--manifest", b / "manifest.json")
    assert "chosen: effnet/int8 t1" in proc.stdout or "chosen: mobilenet/int8 t1" in proc.stdout, proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if "int8 t1" in ln]
    assert rows and all("mobilenet/" in ln or "effnet/" in ln for ln in rows), proc.stdout


def test_read_only_commands_never_alter_a_foreign_sqlite_file(tmp_path):
    foreign = tmp_path / "app.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.execute("INSERT INTO users VALUES ('ada')")
    db.close()
    before = foreign.read_bytes()
    for cmd in (["table"], ["select", "--board", "local"], ["report", "--out", tmp_path / "r"]):
        proc = run_cli(*cmd, "--store", foreign)
        assert_one_line_error(proc, "not an edgekit store")
    proc = run_cli("profile", tmp_path / "none.tflite", "--board", "local", "--store", foreign)
    assert proc.returncode == 2
    assert foreign.read_bytes() == before and not (tmp_path / "app.db-wal").exists()
    with sqlite3.connect(foreign) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["users"]


def test_read_only_commands_do_not_write_an_edgekit_store(rpi4_manifest, tmp_path):
    store = tmp_path / "s.db"
    proc = run_cli("profile", rpi4_manifest[1] / "int8.tflite", "--board", "local", "--threads", "1", "--runs",
                   "10", "--store", store, env={"HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    before = store.read_bytes()
    proc = run_cli("table", "--store", store)
    assert proc.returncode == 0 and "int8" in proc.stdout, proc.stderr
    proc = run_cli("select", "--board", "local", "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert store.read_bytes() == before


def test_a_tflm_crash_is_a_data_point_not_the_end(rpi4_manifest):
    """TFLite Micro segfaults at tiny arenas (seen: <= 128 bytes on the digits int8 model); the probe runs in a
    child, so edgekit lives on and the crash counts as "too small"."""
    from edgekit.export.tflm import _try, measure_arena
    model = (rpi4_manifest[1] / "int8.tflite").read_bytes()
    ok, why = _try(model, 64)
    assert not ok and "crashed (SIGSEGV)" in why
    ok, why = _try(model, 1 << 20)
    assert ok and why is None
    assert 512 < measure_arena(model) < (1 << 20)


def test_a_bad_variant_name_does_not_blame_an_option_never_given(manifest_copy, tmp_path):
    m = json.loads((manifest_copy / "manifest.json").read_text())
    m["variants"][0]["name"] = "int8 v2!"
    (manifest_copy / "manifest.json").write_text(json.dumps(m))
    proc = run_cli("export", "--manifest", manifest_copy / "manifest.json", "--variant", "int8 v2!",
                   "--target", "linux", "--out", tmp_path / "e")
    line = assert_one_line_error(proc, "variant name", "give --name")
    assert "--name 'int8" not in line


def test_shape_errors_print_plain_numbers(digits_model, tmp_path):
    import numpy as np
    np.savez(tmp_path / "cal.npz", x=np.zeros((4, 9, 9, 1), np.float32), y=np.zeros(4, np.int64))
    proc = run_cli("convert-for-device", digits_model, "--device", "local", "--recipe", "int8", "--calibration",
                   tmp_path / "cal.npz", "--out", tmp_path / "o")
    line = assert_one_line_error(proc, "(9, 9, 1)", "(8, 8, 1)")
    assert "np." not in line


def test_a_run_killed_mid_way_keeps_its_variants_and_resumes(digits_model, digits_data, tmp_path):
    """SIGKILL (what the kernel's out-of-memory killer sends: no clean-up runs) after two of three variants: they
    are on disk with their manifest, a plain rerun says so, and --resume builds only the third."""
    import json
    import signal
    import subprocess
    import sys
    import time
    train, test = digits_data
    out = tmp_path / "o"
    args = ["convert-for-device", digits_model, "--device", "local", "--train", train, "--eval", test,
            "--recipe", "fp32", "--recipe", "int8", "--recipe", "pruned-int8", "--out", out, "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    progress = tmp_path / ".o.partial" / "manifest.json"
    deadline = time.monotonic() + 300
    try:
        while not (progress.is_file() and len(json.loads(progress.read_text())["variants"]) == 2):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    rerun = run_cli(*args, "--resume")
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming: 2 variants of an interrupted run" in rerun.stderr
    assert "fp32: reused" in rerun.stderr and "int8: reused" in rerun.stderr
    assert "pruned-int8: reused" not in rerun.stderr and "pruned-int8: prune" in rerun.stderr
    m = json.loads(rerun.stdout)
    assert [v["name"] for v in m["variants"]] == ["fp32", "int8", "pruned-int8"]
    assert all((out / v["path"]).is_file() for v in m["variants"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no staging or interrupted folder left behind


def test_ctrl_c_keeps_what_was_built_and_a_plain_rerun_says_so(digits_model, digits_data, tmp_path):
    """KeyboardInterrupt in the middle of the second recipe (raised from the log line it prints, as Ctrl-C would
    at any point): the first variant is kept beside --out, with its manifest."""
    from edgekit import convert_for_device
    train, test = digits_data
    out, lines = tmp_path / "o", []

    def log(line):
        lines.append(line)
        if "int8: convert" in line:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        convert_for_device(digits_model, "local", ["fp32", "int8"], train=train, eval=test, out=out, log=log)
    kept = tmp_path / ".o.interrupted"
    assert (kept / "fp32.tflite").is_file() and not (kept / "int8.tflite").exists()
    assert json.loads((kept / "manifest.json").read_text())["variants"][0]["name"] == "fp32"
    assert any("finished variants are kept in" in ln and "--resume" in ln for ln in lines)
    lines.clear()
    again = convert_for_device(digits_model, "local", ["fp32", "int8"], train=train, eval=test, out=out,
                               log=lines.append)
    assert any("an interrupted run left 1 finished variants" in ln for ln in lines)
    assert [v.name for v in again.variants] == ["fp32", "int8"] and not kept.exists()


def test_a_conversion_over_its_memory_limit_fails_alone_in_its_child(digits_model, digits_data, tmp_path, monkeypatch):
    """Large models convert in a child process (EDGEKIT_CONVERT_ISOLATED=auto: >= 5M parameters; forced here on the
    digits model): the result is the in-process one, and a conversion over the memory limit is stopped and fails
    alone, its one-line reason in the manifest, while the variant before it is kept.  The limit is lowered (the
    environment is read at each conversion) once the first recipe's conversion has logged its line."""
    import os
    from edgekit import convert_for_device
    train, test = digits_data
    monkeypatch.setenv("EDGEKIT_CONVERT_ISOLATED", "never")
    here = convert_for_device(digits_model, "local", ["int8"], train=train, eval=test, out=tmp_path / "here",
                              log=lambda s: None)
    monkeypatch.setenv("EDGEKIT_CONVERT_ISOLATED", "always")
    lines = []

    def log(line):
        lines.append(line)
        if "[local] int8: convert" in line:
            os.environ["EDGEKIT_CONVERT_MEMORY_MB"] = "150"  # a child needs more just to import TensorFlow
    monkeypatch.setenv("EDGEKIT_CONVERT_MEMORY_MB", "8000")
    child = convert_for_device(digits_model, "local", ["int8", "fp32"], train=train, eval=test,
                               out=tmp_path / "child", log=log)
    (int8,) = child.variants
    assert int8.name == "int8" and int8.accuracy == here.variants[0].accuracy
    assert int8.ops == here.variants[0].ops and abs(int8.bytes - here.variants[0].bytes) < 64  # names differ
    convert_rec = int8.steps[-1] if int8.steps else None
    assert convert_rec and convert_rec["isolated"] and convert_rec["child_peak_rss_mb"] > 150
    # the kernel's first choice if memory runs out between two checks: the child, not the run holding the models
    assert convert_rec["child_oom_score_adj"] == 1000
    (failed,) = child.failed
    assert failed["recipe"] == "fp32" and failed["stage"] == "resources"
    assert "float32 conversion needed more than 150 MB of memory and was stopped" in failed["error"]
    assert "\n" not in failed["error"]
    assert (tmp_path / "child" / "int8.tflite").is_file()


def test_a_conversion_that_would_leave_the_machine_short_of_memory_is_stopped(digits_model, digits_data, tmp_path,
                                                                             monkeypatch):
    """Without a fixed limit the child's follows the machine: it is stopped when the memory still available falls
    under the reserve, whatever else runs beside it (here the reserve is raised above what this machine has, once
    the first conversion is done)."""
    import os
    from edgekit import convert_for_device
    from edgekit.memory import available_mb
    train, test = digits_data
    monkeypatch.setenv("EDGEKIT_CONVERT_ISOLATED", "always")
    monkeypatch.delenv("EDGEKIT_CONVERT_MEMORY_MB", raising=False)
    monkeypatch.setenv("EDGEKIT_CONVERT_RESERVE_MB", "1024")

    def log(line):
        if "[local] int8: convert" in line:
            os.environ["EDGEKIT_CONVERT_RESERVE_MB"] = str(int(available_mb() * 4))
    m = convert_for_device(digits_model, "local", ["int8", "fp32"], train=train, eval=test, out=tmp_path / "o",
                           log=log)
    assert [v.name for v in m.variants] == ["int8"] and m.variants[0].steps[-1]["isolated"]
    (failed,) = m.failed
    assert failed["stage"] == "resources" and "would have left the machine under" in failed["error"]
    assert "\n" not in failed["error"] and (tmp_path / "o" / "int8.tflite").is_file()


def test_a_qat_model_is_rebuilt_and_traced_in_the_child_with_the_same_result(digits_model, digits_data, monkeypatch):
    """A large QAT model is not traced in the process that trained it (ResNet50V2 after PCQAT was killed at 24 GB
    doing that): the child gets the model before QAT and the QAT weights, wraps it again and converts.  Same ops and
    the same outputs as converting in-process."""
    import numpy as np

    from edgekit.convert.tflite import convert
    from edgekit.data import load_data
    from edgekit.modelio import load_keras_model
    from edgekit.optimize import cluster, prune, qat
    from edgekit.optimize.steps import Cluster, Prune, Qat
    from edgekit.validate import predict
    train, _test = digits_data
    data = load_data(train)
    pruned, _ = prune.prune(load_keras_model(digits_model), Prune.of({"target": 0.5, "epochs": 1}), data)
    plain, _ = cluster.cluster(pruned, Cluster.of({"clusters": 8, "epochs": 1}), data, preserve_sparsity=True)
    qmodel, _ = qat.qat(plain, Qat.of({"epochs": 1}), data, "PCQAT")
    monkeypatch.setenv("EDGEKIT_CONVERT_ISOLATED", "never")
    here = convert(qmodel, "int8", "int8", data)
    monkeypatch.setenv("EDGEKIT_CONVERT_ISOLATED", "always")
    stats: dict = {}
    child = convert(qmodel, "int8", "int8", data, stats=stats, rebuild=(plain, "PCQAT"))
    assert stats["isolated"] and stats["qat_rebuilt_in_child"]
    from edgekit.flatbuffer import parse_model
    assert parse_model(child).op_sequence == parse_model(here).op_sequence
    x = data.x[:64]
    assert np.array_equal(predict(child, x), predict(here, x))


def test_qat_that_cannot_fit_in_memory_fails_alone_before_any_training(digits_model, digits_data, tmp_path):
    """QAT's memory grows with the parameters (the cluster-preserving schemes' most): a QAT recipe that would not fit
    fails in the pre-flight with one line, the other recipes are built; the cap is EDGEKIT_MEMORY_MB here (on a real
    machine: what it has available)."""
    train, test = digits_data
    out = tmp_path / "o"
    proc = run_cli("convert-for-device", digits_model, "--device", "local", "--recipe", "int8", "--recipe",
                   "pcqat-int8", "--train", train, "--eval", test, "--out", out, "--json",
                   env={"EDGEKIT_MEMORY_MB": "900"})
    assert proc.returncode == 1, proc.stderr
    m = json.loads(proc.stdout)
    assert [v["name"] for v in m["variants"]] == ["int8"]
    (failed,) = m["failed"]
    assert failed["recipe"] == "pcqat-int8" and failed["stage"] == "preflight"
    error = failed["error"]
    assert "PCQAT training of" in error and "parameters needs about 1,0" in error and "EDGEKIT_MEMORY_MB" in error
    assert "\n" not in error
    assert "prune" not in proc.stderr.split("pcqat-int8: FAILED")[0]  # nothing was trained for it


def test_per_channel_clustering_in_batched_ops_matches_tf_mot_loop():
    """CQAT/PCQAT's per-channel clustering as batched ops (ResNet50V2's training step took 20 GB to trace with TF-MOT's
    loop over channels): the same pulling indices, clustered weights and gradients as TF-MOT's own code."""
    import numpy as np
    from tensorflow_model_optimization.python.core.clustering.keras import clustering_algorithm as ca

    from edgekit._tf import tf
    from edgekit.optimize.qat import vectorize_per_channel_clustering
    rng = np.random.default_rng(0)
    weight = tf.Variable(rng.normal(size=(3, 3, 5, 7)).astype(np.float32))
    centroids = tf.Variable(np.sort(rng.normal(size=(7, 4)).astype(np.float32), axis=1))
    cls = ca.ClusteringAlgorithmPerChannel
    vectorize_per_channel_clustering()
    loop = cls._edgekit_loop  # TF-MOT's own methods
    assert (cls.get_pulling_indices, cls.get_clustered_weight) != loop

    def run(pulling, clustered):
        algo = cls(centroids, ca.GradientAggregation.SUM, "channels_last")
        with tf.GradientTape() as tape:
            idx = pulling(algo, weight)
            out = clustered(algo, idx, weight)
            loss = tf.reduce_sum(out * tf.range(out.shape[-1], dtype=tf.float32))
        return [t.numpy() for t in (idx, out, *tape.gradient(loss, [weight, centroids]))]
    before = run(*loop)
    after = run(cls.get_pulling_indices, cls.get_clustered_weight)
    assert np.array_equal(before[0], after[0]) and after[0].shape == (3, 3, 5, 7)
    for b, a in zip(before[1:], after[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert np.abs(after[3]).sum() > 0  # the centroids do get a gradient


def test_dense_weights_per_tensor_reach_the_child_process(monkeypatch):
    """Dynamic range with one weight scale per dense layer (what tflite-runtime 2.14 loads: FULLY_CONNECTED v9, not
    v12) is converted the same in a child process as in this one."""
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    from edgekit.flatbuffer import parse_model
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    versions = {}
    for where in ("never", "always"):
        monkeypatch.setenv("EDGEKIT_CONVERT_ISOLATED", where)
        for per_tensor in (False, True):
            info = parse_model(convert(m, "dynamic", dense_per_tensor=per_tensor))
            versions[where, per_tensor] = {o["version"] for o in info.ops if o["op"] == "FULLY_CONNECTED"}
    assert versions["never", False] == versions["always", False] == {12}
    assert versions["never", True] == versions["always", True] == {9}


def test_a_killed_run_leaves_no_scratch_folder_behind_and_only_ours_are_swept(monkeypatch, tmp_path):
    """A run killed mid-conversion (the kernel's OOM killer, a user's kill -9) cannot remove its child's SavedModel
    folder (~100 MB for ResNet50V2, memory on a tmpfs).  The next conversion removes it: its marker names a process
    that is gone.  A folder of the same prefix without our marker, and one whose process still runs, stay."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    from edgekit._tf import keras
    from edgekit.convert.tflite import convert
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = ("import sys, time; from edgekit.scratch import scratch\n"
            "with scratch('edgekit-convert-') as p:\n"
            "    (p / 'model').mkdir(); (p / 'model' / 'saved_model.pb').write_bytes(b'x' * 4096)\n"
            "    print(p, flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    killed = Path(proc.stdout.readline().strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "model" / "saved_model.pb").is_file()  # what a killed run leaves
    foreign = tmp_path / "edgekit-convert-not-ours"
    (foreign / "model").mkdir(parents=True)
    from edgekit.scratch import scratch
    with scratch("edgekit-ray-") as live:  # this process's own, still in use
        live_twin = tmp_path / "edgekit-convert-live"
        shutil.copytree(live, live_twin)
        monkeypatch.setenv("EDGEKIT_CONVERT_ISOLATED", "always")
        m = keras.Sequential([keras.layers.Input((8,)), keras.layers.Dense(4)])
        assert len(convert(m, "float32")) > 0  # a real conversion in a child process: it sweeps first
        assert not killed.exists()
        assert foreign.is_dir() and live_twin.is_dir() and live.is_dir()
    left = sorted(p.name for p in tmp_path.glob("edgekit-*"))
    assert left == ["edgekit-convert-live", "edgekit-convert-not-ours"], left
