#!/usr/bin/env python3
"""A real sshd on 127.0.0.1 acting as a test board: own host key, own client key, free port.

Used by the test suite and the benchmarks; also handy by hand:

    python tools/loopback_board.py --name pi-test     # prints a boards.yaml entry and waits (Ctrl-C stops it)
    python tools/loopback_board.py --arch aarch64      # the same board running an emulated Raspberry Pi OS bookworm
                                                       # userland (tools/aarch64_userland.py; built once, cached)
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   capture_output=True)
    return path


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class LoopbackBoard:
    def __init__(self, root: Path, client_key: Path | None = None, port: int | None = None,
                 host_key: Path | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host_key = host_key or keygen(self.root / "host_ed25519")
        self.client_key = client_key or keygen(self.root / "client_ed25519")
        self.user = os.environ.get("USER") or __import__("getpass").getuser()
        self.proc: subprocess.Popen | None = None

    @property
    def known_hosts_line(self) -> str:
        kind, b64 = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {b64}\n"

    def write_config(self) -> Path:
        auth = self.root / "authorized_keys"
        auth.write_text(Path(f"{self.client_key}.pub").read_text())
        cfg = self.root / "sshd_config"
        cfg.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {auth}", f"PidFile {self.root / 'sshd.pid'}", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin yes", "StrictModes no", "Subsystem sftp internal-sftp", "LogLevel ERROR",
            "MaxStartups 50", "MaxSessions 50", ""]))
        return cfg

    def start(self, timeout: float = 10.0) -> LoopbackBoard:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        cfg = self.write_config()
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(cfg), "-E", str(self.root / "sshd.log")])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.root / 'sshd.log').read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening")

    def kill(self) -> None:
        """Stop sshd and every session it forked (a board that drops off the network)."""
        if self.proc is None:
            return
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def board_entry(self, name: str, profile: str = "local", python: str | None = None,
                    workdir: str | None = None) -> dict:
        entry = {"name": name, "host": "127.0.0.1", "port": self.port, "user": self.user,
                 "identity": str(self.client_key), "profile": profile, "python": python or sys.executable}
        if workdir:
            entry["workdir"] = workdir
        return entry


def main():
    import argparse
    import tempfile
    import yaml
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="loopback")
    ap.add_argument("--profile", help="device profile (default: local, or rpi4-bookworm with --arch aarch64)")
    ap.add_argument("--arch", choices=("x86_64", "aarch64"), default="x86_64",
                    help="aarch64: the board's python is Debian bookworm's arm64 Python under qemu-user")
    ap.add_argument("--runtime", action="append", help="with --arch aarch64: pip requirement of a runtime to "
                    "install on the board (repeatable; default: ai-edge-litert==2.3.0 and tflite-runtime==2.14.0)")
    args = ap.parse_args()
    python = None
    if args.arch == "aarch64":
        from aarch64_userland import DEFAULT_RUNTIMES, UserlandError, python_for
        try:
            python = str(python_for(tuple(args.runtime or DEFAULT_RUNTIMES), log=lambda m: print(m, file=sys.stderr)))
        except UserlandError as e:
            print(f"loopback_board: error: {e}", file=sys.stderr)
            return 2
    profile = args.profile or ("rpi4-bookworm" if args.arch == "aarch64" else "local")
    root = Path(tempfile.mkdtemp(prefix="edgekit-board-"))
    board = LoopbackBoard(root).start()
    (root / "known_hosts").write_text(board.known_hosts_line)
    print(yaml.safe_dump({"boards": [board.board_entry(args.name, profile, python=python)]}, sort_keys=False))
    print(f"# known_hosts: {root / 'known_hosts'}  (pass --known-hosts)", flush=True)
    try:
        while board.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        board.kill()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
