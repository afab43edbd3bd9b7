"""`pip install .` from a clean tree must ship device_profiles/ and converters/ inside the wheel."""
import os
import shutil
import subprocess
import sys
import zipfile

from conftest import REPO


def test_wheel_ships_profiles_and_recipes_and_the_command_works(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "demo-out",
                                                             "__pycache__", ".pytest_cache"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist,
                    src], check=True, capture_output=True)
    wheel = next(dist.glob("edgekit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgekit/device_profiles/coral-usb.yaml" in names and "edgekit/converters/pcqat-int8.yaml" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edgekit = edgekit.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target))
    code = "import edgekit, sys; from edgekit.cli import main; print(edgekit.__file__); sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "devices"], cwd=elsewhere, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith(str(target))
    assert "jetson-orin-nano" in proc.stdout and "coral-devboard" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", code, "recipes"], cwd=elsewhere, env=env, capture_output=True,
                          text=True)
    assert "pcqat-int8-edgetpu" in proc.stdout
