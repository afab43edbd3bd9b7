"""`pip install .` from a clean tree: the built wheel alone (not the checkout, not the editable install) must carry
every package, the device profiles and the recipes, and every command must start from it."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import REPO

# The child interpreter sees only the installed wheel plus the dependencies' folder, added as a plain path: `-S`
# skips site processing, so the editable install's .pth finder (which would find the checkout) never loads.
PROBE = """
import json, sys
from edgekit.cli import build_parser, main
import edgekit
sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
if sys.argv[1] == "--list":
    print(json.dumps(sorted(sub.choices)))
    sys.exit(0)
code = main(sys.argv[1:])
loaded = [m.__file__ for n, m in list(sys.modules.items()) if n.startswith("edgekit") and getattr(m, "__file__", None)]
print("EDGEKIT-FILES " + json.dumps(loaded))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "demo-out",
                                                             "__pycache__", ".pytest_cache", "*.tflite", "*.db"))
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist,
                    src], check=True, capture_output=True)
    wheel = next(dist.glob("edgekit-*.whl"))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
                   check=True, capture_output=True)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return wheel, target, elsewhere


def run_installed(installed, *args):
    _, target, elsewhere = installed
    deps = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(target), deps])
    proc = subprocess.run([sys.executable, "-S", "-c", PROBE, *map(str, args)], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc


def loaded_files(proc):
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("EDGEKIT-FILES "))
    return json.loads(line.split(" ", 1)[1])


def test_wheel_holds_every_package_and_the_data(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgekit/device_profiles/coral-usb.yaml" in names and "edgekit/converters/pcqat-int8.yaml" in names
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "edgekit").rglob("__init__.py")}
    for pkg in packages:  # every sub-package of the source tree, e.g. edgekit/compress, edgekit/export
        assert f"{pkg}/__init__.py" in names, f"{pkg} is missing from the wheel"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edgekit = edgekit.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_every_command_starts_from_the_installed_wheel(installed, rpi4_manifest):
    _, target, elsewhere = installed
    commands = json.loads(run_installed(installed, "--list").stdout)
    assert {"convert-for-device", "profile", "select", "export", "inspect", "devices"} <= set(commands)
    for cmd in commands:
        proc = run_installed(installed, cmd, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout, (cmd, proc.stderr)
    proc = run_installed(installed, "devices")
    assert proc.returncode == 0, proc.stderr
    assert "jetson-orin-nano" in proc.stdout and "coral-devboard" in proc.stdout
    proc = run_installed(installed, "recipes")
    assert proc.returncode == 0 and "pcqat-int8-edgetpu" in proc.stdout, proc.stderr
    model = rpi4_manifest[1] / "int8.tflite"
    proc = run_installed(installed, "inspect", model, "--device", "coral-usb", "--json")
    assert proc.returncode == 0, proc.stderr
    for target_kind in ("linux", "c-array"):
        out = elsewhere / f"export-{target_kind}"
        proc = run_installed(installed, "export", model, "--target", target_kind, "--out", out, "--json")
        assert proc.returncode == 0, (target_kind, proc.stderr)
        assert any(out.iterdir())
    files = loaded_files(proc)
    assert any("/export/" in f for f in files)
    assert all(f.startswith(str(target)) for f in files), [f for f in files if not f.startswith(str(target))]
