import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run `python -m edgekit ARGS` in a subprocess; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgekit: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])
    return lines[0]


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """The suite never reads or writes the user's ~/.cache/edgekit: a search remembered there from another run
    would change what the tests see."""
    if "EDGEKIT_CACHE" not in os.environ:
        os.environ["EDGEKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory):
    from edgekit.examples import write_digits_npz
    return write_digits_npz(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    from edgekit.examples import train_digits_model
    return train_digits_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def rpi4_manifest(tmp_path_factory, digits_model, digits_data):
    """The rpi4 default recipe set, and `dynamic` named by hand (a user may), converted once."""
    from edgekit import convert_for_device
    from edgekit.profiles import load_profile
    out = tmp_path_factory.mktemp("conv") / "rpi4"
    train, test = digits_data
    recipes = [*load_profile("rpi4").default_recipes, "dynamic"]
    manifest = convert_for_device(digits_model, "rpi4", recipes, train=train, eval=test, out=out, log=lambda m: None)
    return manifest, out


@pytest.fixture(scope="session")
def too_new_model(tmp_path_factory, digits_model):
    """The digits model in dynamic range as the converter writes it by default: per-channel dense weights
    (FULLY_CONNECTED v12), which tflite-runtime 2.14 cannot load.  (For a device whose runtime is that old, edgekit
    builds the dynamic recipe with per-tensor dense weights instead.)"""
    from edgekit.convert.tflite import convert
    from edgekit.modelio import load_keras_model
    path = tmp_path_factory.mktemp("v12") / "dynamic.tflite"
    path.write_bytes(convert(load_keras_model(digits_model), "dynamic"))
    return path
