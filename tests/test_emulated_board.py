"""A Raspberry Pi OS bookworm userland as a board: Debian's arm64 Python 3.11.2 + numpy 1.24.2 and PyPI's aarch64
LiteRT wheels, run under qemu-user behind the loopback sshd (tools/aarch64_userland.py; built once into the user's
cache, ~35 s and ~330 MB cold, instant warm).  The real aarch64 runtimes, not x86 stand-ins."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_cli
from loopback_board import SSHD, LoopbackBoard

pytestmark = [
    pytest.mark.skipif(not Path(SSHD).exists(), reason="openssh-server is not installed (`make test` installs it)"),
    pytest.mark.skipif(not shutil.which("qemu-aarch64-static") or not (shutil.which("debootstrap") or
                                                                       Path("/usr/sbin/debootstrap").exists()),
                       reason="qemu-user-static / debootstrap are not installed (`make test` installs them)"),
]


@pytest.fixture(scope="module")
def pi_pythons():
    """The board's `python` with both runtimes installed, and with tflite-runtime 2.14 alone."""
    from aarch64_userland import UserlandError, python_for
    try:
        both = python_for(("ai-edge-litert==2.3.0", "tflite-runtime==2.14.0"), log=lambda m: print(m, file=sys.stderr))
        old = python_for(("tflite-runtime==2.14.0",), log=lambda m: print(m, file=sys.stderr))
    except UserlandError as e:
        pytest.fail(f"cannot build the aarch64 userland: {e}")
    return {"both": str(both), "old": str(old)}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    b = LoopbackBoard(tmp_path_factory.mktemp("emu-board")).start()
    yield b
    b.kill()


def inventory(tmp_path, board, entries):
    inv = tmp_path / "boards.yaml"
    inv.write_text(yaml.safe_dump({"boards": [board.board_entry(name, profile, python=py,
                                                                workdir=str(tmp_path / f"work-{name}"))
                                              for name, profile, py in entries]}))
    (tmp_path / "kh").write_text(board.known_hosts_line)
    return ["--boards", inv, "--known-hosts", tmp_path / "kh", "--store", tmp_path / "s.db"]


def test_profile_on_the_emulated_pi_records_its_own_fingerprint(tmp_path, board, pi_pythons, rpi4_manifest):
    out = rpi4_manifest[1]
    common = inventory(tmp_path, board, [("pi-emu", "rpi4-bookworm", pi_pythons["both"])])
    proc = run_cli("profile", out / "int8.tflite", "--board", "pi-emu", "--threads", "1", "--runs", "20", "--json",
                   *common)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["measurements"]
    assert row["status"] == "ok" and row["p50_ms"] > 0 and row["emulated"] == 1
    assert (row["runtime_name"], row["runtime_version"]) == ("ai-edge-litert", "2.3.0")
    from edgekit.store import Store
    (raw,) = Store(tmp_path / "s.db").rows(raw=True)
    fp = json.loads(raw["fingerprint"])
    # as the board reports itself: Debian's arm64 Python, detected as emulated by the runner (not told by us)
    assert fp["machine"] == "aarch64" and fp["python"] == "3.11.2" and fp["numpy"] == "1.24.2"
    assert fp["os"] == "Debian GNU/Linux 12 (bookworm)" and fp["emulated"] is True and "x86_64" in fp["emulation"]
    table = run_cli("table", "--store", tmp_path / "s.db")
    assert "pi-emu t1 (emulated)" in table.stdout and "measured under emulation" in table.stdout
    # never chosen unless asked
    sel = run_cli("select", "--board", "pi-emu", "--store", tmp_path / "s.db")
    assert sel.returncode == 2 and "--include-emulated" in sel.stderr
    sel = run_cli("select", "--board", "pi-emu", "--store", tmp_path / "s.db", "--include-emulated", "--json")
    assert sel.returncode == 0, sel.stderr
    chosen = json.loads(sel.stdout)["chosen"]
    assert chosen["variant"] == "int8" and chosen["emulated"] is True
    check = run_cli("boards", "--check", "--json", *common[:4])
    assert check.returncode == 0, check.stderr
    (rep,) = [r for r in json.loads(check.stdout) if r["board"] == "pi-emu"]
    assert rep["emulated"] is True and rep["warnings"] == []  # the software its profile states


def test_the_runtime_follows_the_profile_and_the_fit_check_uses_the_boards_version(tmp_path, board, pi_pythons,
                                                                                    rpi4_manifest, too_new_model):
    """One userland with ai-edge-litert 2.3.0 and tflite-runtime 2.14.0 installed: profile rpi4 (tflite-runtime first)
    runs tflite-runtime and refuses the dynamic-range model (FULLY_CONNECTED v12 needs TFLite 2.17) unrun; profile
    rpi4-bookworm (ai-edge-litert first) runs both models on ai-edge-litert.  A board with tflite-runtime alone
    refuses it too."""
    out = rpi4_manifest[1]
    common = inventory(tmp_path, board, [("pi-old", "rpi4", pi_pythons["both"]),
                                         ("pi-new", "rpi4-bookworm", pi_pythons["both"]),
                                         ("pi-only", "rpi4-bookworm", pi_pythons["old"])])
    proc = run_cli("profile", out / "int8.tflite", too_new_model, "--board", "pi-old", "--board", "pi-new",
                   "--board", "pi-only", "--threads", "1", "--runs", "5", "--json", *common)
    assert proc.returncode == 2, proc.stderr  # refused ones count as missing measurements
    rows = {(r["board"], r["model_name"]): r for r in json.loads(proc.stdout)["measurements"]}
    assert rows[("pi-old", "int8")]["status"] == "ok"
    assert rows[("pi-old", "int8")]["runtime_name"] == "tflite-runtime"
    for b in ("pi-old", "pi-only"):
        dyn = rows[(b, "dynamic")]
        assert dyn["status"] == "failed" and dyn.get("n_runs") is None
        assert "not run: tflite-runtime 2.14.0 cannot load" in dyn["error"] and "FULLY_CONNECTED v12" in dyn["error"]
        assert not list((tmp_path / f"work-{b}").glob(f"{dyn['model_sha256']}*"))  # never uploaded
    assert rows[("pi-only", "int8")]["status"] == "ok"
    for v in ("int8", "dynamic"):
        assert rows[("pi-new", v)]["status"] == "ok"
        assert (rows[("pi-new", v)]["runtime_name"], rows[("pi-new", v)]["runtime_version"]) == ("ai-edge-litert",
                                                                                                  "2.3.0")


@pytest.mark.parametrize("variant", ["int8", "fp32"])
def test_linux_export_predicts_on_the_pi_as_on_x86(tmp_path, board, pi_pythons, rpi4_manifest, digits_data, variant):
    from edgekit.data import load_data
    from edgekit.remote.inventory import load_boards
    from edgekit.remote.connect import connect
    from edgekit.validate import predict
    model = rpi4_manifest[1] / f"{variant}.tflite"
    bundle = tmp_path / "bundle"
    proc = run_cli("export", model, "--target", "linux", "--out", bundle)
    assert proc.returncode == 0, proc.stderr
    x = load_data(digits_data[1]).x[:1]
    np.save(tmp_path / "x.npy", x[0])
    common = inventory(tmp_path, board, [("pi-emu", "rpi4-bookworm", pi_pythons["both"])])
    (b,) = load_boards(common[1])
    conn = connect(b, known_hosts=str(common[3]))
    try:
        remote = f"{tmp_path}/on board; $(touch pwned)"  # a hostile folder name: every argument is quoted
        conn.makedirs(remote)
        for f in [*bundle.iterdir(), tmp_path / "x.npy"]:
            if f.is_file():
                conn.put(f, f"{remote}/{f.name}")
        res = conn.run([b.python, f"{remote}/predict.py", f"{remote}/x.npy", "--top", "10"], timeout=300)
    finally:
        conn.close()
    assert res.returncode == 0, res.stderr
    assert not (Path.cwd() / "pwned").exists() and not Path("pwned").exists()
    on_pi = {d["label"]: d["score"] for d in json.loads(res.stdout)}
    ref = predict(model.read_bytes(), x)[0].reshape(-1).astype(np.float64)  # dequantized, on x86
    from edgekit.validate import _interpreter
    scale = _interpreter(model.read_bytes()).get_output_details()[0]["quantization"][0]
    step = scale if scale else 1e-5
    assert len(on_pi) == ref.size
    assert max(on_pi, key=on_pi.get) == str(int(np.argmax(ref)))
    # the aarch64 kernels agree with the x86 ones to one output step (int8) / float rounding (fp32)
    assert max(abs(on_pi[str(i)] - ref[i]) for i in range(ref.size)) <= step * 1.01
