"""The profiler against a real sshd on loopback (no paramiko mocks)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from loopback_board import SSHD, LoopbackBoard, keygen

pytestmark = pytest.mark.skipif(not Path(SSHD).exists(),
                                reason="openssh-server is not installed (`make test` installs it when root)")


@pytest.fixture
def board(tmp_path):
    b = LoopbackBoard(tmp_path / "b1").start()
    yield b
    b.kill()


@pytest.fixture
def models(rpi4_manifest):
    out = rpi4_manifest[1]
    return [out / "int8.tflite", out / "fp32.tflite"]


def setup(tmp_path, *boards, names=None, known=True, **entry_kw):
    names = names or [f"pi{i + 1}" for i in range(len(boards))]
    inv = tmp_path / "boards.yaml"
    entries = []
    for b, n in zip(boards, names):
        kw = dict(entry_kw)
        kw.setdefault("workdir", str(tmp_path / f"work-{n}"))  # a fresh board cache per test
        entries.append(b.board_entry(n, **kw))
    inv.write_text(yaml.safe_dump({"boards": entries}))
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(b.known_hosts_line for b in boards) if known else "")
    return ["--boards", inv, "--known-hosts", kh, "--store", tmp_path / "s.db"]


def profile(*args, **kw):
    return run_cli("profile", *args, **kw)


def errors(proc):
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("edgekit: error:")]


def test_profile_over_ssh_end_to_end(tmp_path, board, models):
    common = setup(tmp_path, board)
    proc = profile(*models, "--board", "pi1", "--threads", "1", "--runs", "50", "--json", *common)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    rows = out["measurements"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert {r["variant"] for r in rows} == {"int8", "fp32"} and all(r["manifest_path"] for r in rows)
    assert all(r["p50_ms"] > 0 and r["n_runs"] >= 50 and r["runtime_name"] == "ai-edge-litert" for r in rows)
    assert out["bytes_uploaded"]["pi1"] >= sum(m.stat().st_size for m in models)
    from edgekit.store import Store
    raw = Store(tmp_path / "s.db").rows(raw=True)
    assert len(json.loads(raw[0]["latencies_ms"])) == raw[0]["n_runs"]
    fp = json.loads(raw[0]["fingerprint"])
    assert fp["hostname"] and fp["python"] and fp["runtime"]["name"] == "ai-edge-litert"
    assert "identity" not in raw[0] and str(board.client_key) not in json.dumps(raw)
    sha = raw[0]["model_sha256"]
    assert (tmp_path / "work-pi1" / f"{sha}.tflite").exists()  # content-addressed on the board
    table = run_cli("table", "--store", tmp_path / "s.db")
    assert "pi1 t1" in table.stdout and "int8" in table.stdout

    # same models again, forced: nothing is uploaded a second time
    proc = profile(*models, "--board", "pi1", "--threads", "1", "--runs", "20", "--force", "--json", *common)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["bytes_uploaded"]["pi1"] == 0
    # and without --force the store answers
    proc = profile(*models, "--board", "pi1", "--threads", "1", "--runs", "20", *common)
    assert proc.returncode == 0 and proc.stderr.count("already in the store") == 2


def test_unknown_host_is_refused_until_accepted(tmp_path, board, models):
    common = setup(tmp_path, board, known=False)
    proc = profile(models[0], "--board", "pi1", "--runs", "5", "--threads", "1", *common)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = errors(proc)
    assert "not in" in line and "--accept-new-host" in line and "SHA256:" in line
    proc = profile(models[0], "--board", "pi1", "--runs", "5", "--threads", "1", "--accept-new-host", *common)
    assert proc.returncode == 0, proc.stderr
    assert f"[127.0.0.1]:{board.port} ssh-ed25519" in (tmp_path / "known_hosts").read_text()
    proc = profile(models[0], "--board", "pi1", "--runs", "5", "--threads", "1", "--force", *common)
    assert proc.returncode == 0, proc.stderr


def test_changed_host_key_is_always_refused(tmp_path, board, models):
    common = setup(tmp_path, board)
    other = keygen(tmp_path / "other_host")
    kind, b64 = Path(f"{other}.pub").read_text().split()[:2]
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{board.port} {kind} {b64}\n")
    proc = profile(models[0], "--board", "pi1", "--runs", "5", "--accept-new-host", *common)
    assert proc.returncode == 2
    (line,) = errors(proc)
    assert "HOST KEY CHANGED" in line


def test_wrong_client_key_is_refused(tmp_path, board, models):
    common = setup(tmp_path, board)
    inv = yaml.safe_load((tmp_path / "boards.yaml").read_text())
    inv["boards"][0]["identity"] = str(keygen(tmp_path / "stranger"))
    (tmp_path / "boards.yaml").write_text(yaml.safe_dump(inv))
    proc = profile(models[0], "--board", "pi1", "--runs", "5", *common)
    assert proc.returncode == 2
    (line,) = errors(proc)
    assert "authentication failed" in line


def test_ssh_agent_key_is_used_when_no_identity_is_given(tmp_path, board, models):
    import shutil
    if not shutil.which("ssh-agent"):
        pytest.skip("ssh-agent (openssh-client) is not installed")
    common = setup(tmp_path, board)
    inv = yaml.safe_load((tmp_path / "boards.yaml").read_text())
    del inv["boards"][0]["identity"]  # only the agent holds the board's key
    (tmp_path / "boards.yaml").write_text(yaml.safe_dump(inv))
    home = tmp_path / "home"  # no ~/.ssh keys to fall back on
    home.mkdir()
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        env = {"HOME": str(home), "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(board.client_key)], env={**os.environ, **env}, check=True,
                       capture_output=True)
        proc = profile(models[0], "--board", "pi1", "--threads", "1", "--runs", "5", "--json", *common, env=env)
        assert proc.returncode == 0, proc.stderr
        assert [r["status"] for r in json.loads(proc.stdout)["measurements"]] == ["ok"]
        without = profile(models[0], "--board", "pi1", "--threads", "1", "--runs", "5", "--force", *common,
                          env={"HOME": str(home), "SSH_AUTH_SOCK": str(tmp_path / "no-agent")})
        (line,) = errors(without)  # refused at once, not retried: a missing key is not a network problem
        assert without.returncode == 2 and "authentication failed" in line and "no key to offer" in line
        assert "attempts" not in line
    finally:
        agent.kill()
        agent.wait()


def test_unreachable_board(tmp_path, models):
    from loopback_board import free_port
    inv = tmp_path / "boards.yaml"
    inv.write_text(yaml.safe_dump({"boards": [{"name": "gone", "host": "127.0.0.1", "port": free_port(),
                                               "profile": "rpi4"}]}))
    proc = profile(models[0], "--board", "gone", "--retries", "1", "--threads", "1", "--boards", inv,
                   "--store", tmp_path / "s.db")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = errors(proc)
    assert "cannot connect" in line and "after 2 attempts" in line


def test_hostile_file_names_and_workdir(tmp_path, board, models):
    hostile = "a b'c\"; touch PWNED1; $(touch PWNED2) `touch PWNED3`"
    d = tmp_path / hostile
    d.mkdir()
    model = d / f"{hostile}.tflite"
    model.write_bytes(models[0].read_bytes())
    common = setup(tmp_path, board, workdir=str(tmp_path / f"work {hostile}"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = profile(model, "--board", "pi1", "--runs", "5", "--threads", "1", "--json", *common, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["measurements"][0]["status"] == "ok"
    assert list((tmp_path / f"work {hostile}").glob("*.tflite"))
    home = Path.home()
    for where in (tmp_path, cwd, home, d):
        assert not list(where.glob("PWNED*")), where
    from edgekit.remote.ssh import SSHConnection
    conn = SSHConnection("pi1", "127.0.0.1", board.port, board.user, str(board.client_key),
                         known_hosts=tmp_path / "known_hosts")
    try:
        res = conn.run(["printf", "%s", hostile])
        assert res.returncode == 0 and res.stdout == hostile
    finally:
        conn.close()


def _windows(rows):
    from datetime import datetime
    return [(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in rows]


def test_two_boards_run_in_parallel(tmp_path, models):
    b1 = LoopbackBoard(tmp_path / "b1").start()
    b2 = LoopbackBoard(tmp_path / "b2", client_key=b1.client_key).start()
    try:
        common = setup(tmp_path, b1, b2)
        proc = profile(models[0], "--all-boards", "--threads", "1", "--runs", "10", "--min-seconds", "1.5",
                       "--json", *common)
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout)["measurements"]
        assert sorted(r["board"] for r in rows) == ["pi1", "pi2"] and all(r["status"] == "ok" for r in rows)
        (s1, e1), (s2, e2) = _windows(rows)
        assert s1 < e2 and s2 < e1, "the two boards' measurements should overlap in time"
    finally:
        b1.kill()
        b2.kill()


def test_board_killed_mid_run_is_recorded_and_resumed(tmp_path, models):
    b1 = LoopbackBoard(tmp_path / "b1").start()
    b2 = LoopbackBoard(tmp_path / "b2", client_key=b1.client_key).start()
    common = setup(tmp_path, b1, b2)
    args = [*models, "--all-boards", "--threads", "1", "--runs", "5", "--warmup", "300000", "--retries", "1",
            *common]
    from edgekit.store import Store
    try:
        env = dict(os.environ)
        p = subprocess.Popen([sys.executable, "-m", "edgekit", "profile", *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until pi1 is in the middle of its second model
            if (tmp_path / "s.db").exists() and Store(tmp_path / "s.db").rows(board="pi1"):
                break
            time.sleep(0.1)
        time.sleep(0.8)
        b1.kill()
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 2, err
        assert "Traceback" not in err
        store = Store(tmp_path / "s.db")
        assert len(store.rows(board="pi2")) == 2  # the other board completed
        ok1 = store.rows(board="pi1")
        failed1 = store.rows(board="pi1", status="failed")
        assert len(ok1) == 1 and len(failed1) == 1
        assert "connection lost" in failed1[0]["error"] or "cannot connect" in failed1[0]["error"]
        # the board comes back: a rerun measures only what is missing
        b1 = LoopbackBoard(tmp_path / "b1", client_key=b1.client_key, port=b1.port, host_key=b1.host_key).start()
        proc = profile(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout)["measurements"]
        assert [r["board"] for r in rows] == ["pi1"] and rows[0]["status"] == "ok"
        assert len(Store(tmp_path / "s.db").rows(board="pi1")) == 2
    finally:
        b1.kill()
        b2.kill()


def test_boards_check_over_ssh(tmp_path, board):
    common = setup(tmp_path, board)
    proc = run_cli("boards", "--check", "--json", "--boards", common[1], "--known-hosts", common[3])
    assert proc.returncode == 0, proc.stderr
    reports = {r["board"]: r for r in json.loads(proc.stdout)}
    pi = reports["pi1"]
    assert pi["reachable"] and pi["runtime"].startswith("ai-edge-litert") and pi["cores"] >= 1
    assert pi["delegates"] == [] and pi["python"]


def test_adhoc_host_through_an_ssh_config_alias(tmp_path, board, models):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(f"Host bench-pi\n  HostName 127.0.0.1\n  Port {board.port}\n"
                                          f"  User {board.user}\n  IdentityFile {board.client_key}\n")
    (home / ".ssh" / "known_hosts").write_text(board.known_hosts_line)
    proc = profile(models[0], "--host", "bench-pi", "--profile", "local", "--python", sys.executable, "--threads",
                   "1", "--runs", "5", "--store", tmp_path / "s.db", "--json", env={"HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["measurements"]
    assert row["status"] == "ok" and row["board"] == "bench-pi" and row["host"] == "bench-pi"


def test_uploaded_npy_input(tmp_path, board, models):
    import numpy as np
    common = setup(tmp_path, board)
    npy = tmp_path / "digit.npy"
    np.save(npy, np.full((1, 8, 8, 1), 0.5, np.float32))
    proc = profile(models[1], "--board", "pi1", "--threads", "1", "--runs", "5", "--input", npy, "--json", *common)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["measurements"]
    assert row["status"] == "ok" and row["input"] != "random" and len(row["input"]) == 64
    assert (tmp_path / "work-pi1" / f"{row['input']}.npy").exists()


# -- trust: known_hosts as OpenSSH reads it, no leftovers on the board, no secrets stored ---------------------------

def test_known_hosts_markers_and_a_bad_line_are_handled_as_openssh_does(tmp_path, board, models):
    common = setup(tmp_path, board)
    kh = tmp_path / "known_hosts"
    kind, b64 = board.known_hosts_line.split()[1:3]
    kh.write_text("# comment\n@cert-authority *.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAb+0MRPTOXWm0O2nn\n"
                  "this line is not a host key\n"
                  "badhost ssh-ed25519 !!!notbase64!!!\n" + board.known_hosts_line)
    proc = profile(models[0], "--board", "pi1", "--threads", "1", "--runs", "5", "--json", *common)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["measurements"][0]["status"] == "ok"
    warnings = [ln for ln in proc.stderr.splitlines() if "known_hosts" in ln]
    assert any("line 3" in w for w in warnings) and any("line 4" in w for w in warnings), proc.stderr
    assert "Traceback" not in proc.stderr
    check = run_cli("boards", "--check", "--json", "--boards", common[1], "--known-hosts", kh)
    assert check.returncode == 0, check.stderr

    # the board's own key marked @revoked: refused even though it is also listed as known
    kh.write_text(f"@revoked * {kind} {b64}\n" + board.known_hosts_line)
    proc = profile(models[0], "--board", "pi1", "--threads", "1", "--runs", "5", "--force", *common)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert any("REVOKED HOST KEY" in ln for ln in errors(proc)), proc.stderr
    from edgekit.store import Store
    failed = Store(tmp_path / "s.db").rows(board="pi1", status="failed")
    assert failed and "REVOKED" in failed[-1]["error"]
    proc = profile(models[0], "--board", "pi1", "--threads", "1", "--runs", "5", "--force", "--accept-new-host",
                   *common)
    assert proc.returncode == 2 and any("REVOKED HOST KEY" in ln for ln in errors(proc)), proc.stderr


def _runners(workdir: Path) -> list[str]:
    """Processes on the (loopback) board whose command line runs something from this test's board cache."""
    out = subprocess.run(["pgrep", "-af", str(workdir)], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "runner-" in ln]


@pytest.mark.parametrize("how", ["sigint", "sigkill", "timeout"])
def test_no_runner_survives_on_the_board(tmp_path, board, models, how):
    import signal
    common = setup(tmp_path, board)
    work = tmp_path / "work-pi1"
    args = [models[0], "--board", "pi1", "--threads", "1", "--runs", "5", "--warmup", "50000000", "--retries", "0",
            *common]
    if how == "timeout":
        t0 = time.monotonic()
        proc = profile(*args, "--timeout", "4")
        assert proc.returncode == 2 and "timed out" in proc.stderr, proc.stderr
        assert time.monotonic() - t0 < 60
    else:
        # SIGINT restored in the child: a CI that starts the suite with SIGINT ignored must not make Ctrl-C vanish
        p = subprocess.Popen([sys.executable, "-m", "edgekit", "profile", *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 90
        while not _runners(work) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _runners(work), "the runner never started"
        time.sleep(1.0)  # well into the warm-up
        p.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        if how == "sigint":
            assert p.returncode == 130 and "interrupted" in err and "done" not in err, err
    deadline = time.monotonic() + 15
    while _runners(work) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _runners(work), f"left running on the board after {how}: {_runners(work)}"


def test_timeout_covers_the_start_up_probe(tmp_path, board, models):
    hang = tmp_path / "hanging-python"
    hang.write_text("#!/bin/sh\nexec sleep 299.25\n")
    hang.chmod(0o755)
    common = setup(tmp_path, board, python=str(hang))
    t0 = time.monotonic()
    proc = profile(models[0], "--board", "pi1", "--threads", "1", "--retries", "0", "--timeout", "3", *common)
    took = time.monotonic() - t0
    assert proc.returncode == 2 and "timed out after 3 s" in proc.stderr, proc.stderr
    assert took < 40, f"--timeout 3 took {took:.0f} s (the probe must obey it)"
    # (not checked: that the hung `sleep` is gone. edgekit sends SIGKILL through SSH's "signal" request, but
    # OpenSSH refuses signals in root sessions, which is what this loopback board is; the runner itself watches
    # its stdin, as the test above shows)
    subprocess.run(["pkill", "-f", "sleep 299.25"])


def test_a_missing_identity_path_is_never_stored_or_printed(tmp_path, board, models):
    secret = tmp_path / "keys" / "id_secret_deploy_key"
    common = setup(tmp_path, board)
    inv = yaml.safe_load(Path(common[1]).read_text())
    inv["boards"][0]["identity"] = str(secret)
    Path(common[1]).write_text(yaml.safe_dump(inv))
    proc = profile(models[0], "--board", "pi1", "--threads", "1", "--retries", "0", *common)
    assert proc.returncode == 2 and "identity key file" in proc.stderr, proc.stderr
    assert "id_secret_deploy_key" not in proc.stderr + proc.stdout
    import sqlite3
    with sqlite3.connect(tmp_path / "s.db") as db:
        dump = "\n".join(db.iterdump())
    assert "does not exist" in dump and "id_secret_deploy_key" not in dump
