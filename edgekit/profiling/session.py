"""One board, connected: content-addressed deployment of the runner and models, probing, measuring."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import RemoteError
from ..remote.connect import connect
from ..remote.inventory import Board

RUNNER = Path(__file__).with_name("runner.py")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_json_line(text: str, board: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise RemoteError(f"board {board}: runner printed no result ({text.strip()[-200:] or 'no output'})")


class BoardSession:
    def __init__(self, board: Board, conn):
        self.board, self.conn = board, conn
        home = conn.home()
        wd = board.workdir or ".cache/edgekit"
        self.cache = wd if wd.startswith("/") else f"{home.rstrip('/')}/{wd}"
        conn.makedirs(self.cache)
        self.verified: set[str] = set()
        self.runner_sha = sha256_file(RUNNER)
        self.runner = self.ensure(RUNNER, self.runner_sha, ".py", prefix="runner-")
        self.probe = self._probe()
        if self.probe.get("runner_sha256") != self.runner_sha:  # damaged copy on the board: replace it once
            self.ensure(RUNNER, self.runner_sha, ".py", prefix="runner-", force=True)
            self.probe = self._probe()
            if self.probe.get("runner_sha256") != self.runner_sha:
                raise RemoteError(f"board {board.name}: the runner on the board does not match after re-upload")

    @classmethod
    def open(cls, board: Board, **connect_args) -> "BoardSession":
        conn = connect(board, **connect_args)
        try:
            return cls(board, conn)
        except BaseException:
            conn.close()
            raise

    def ensure(self, local: Path, sha: str, suffix: str, prefix: str = "", force: bool = False) -> str:
        """Upload `local` as <cache>/<prefix><sha><suffix> unless it is already there; atomic."""
        remote = f"{self.cache}/{prefix}{sha}{suffix}"
        if not force and remote in self.verified:
            return remote
        if force or self.conn.size(remote) != local.stat().st_size:
            self.conn.put(local, remote)
        self.verified.add(remote)
        return remote

    def forget(self, remote: str) -> None:
        self.verified.discard(remote)

    def _probe(self) -> dict:
        res = self.conn.run([self.board.python, self.runner, "--probe"], timeout=60)
        if res.returncode == 127 or (res.returncode != 0 and not res.stdout.strip()):
            raise RemoteError(f"board {self.board.name}: cannot run {self.board.python!r} "
                              f"({(res.stderr.strip().splitlines() or ['exit ' + str(res.returncode)])[-1]})")
        return parse_json_line(res.stdout, self.board.name)

    @property
    def runtime(self) -> dict | None:
        """The runtime the runner will pick (first found, or the board's forced one)."""
        found = self.probe.get("runtimes") or []
        if self.board.runtime != "auto":
            found = [r for r in found if r["module"] == self.board.runtime]
        return found[0] if found else None

    def run_runner(self, args: list[str], timeout: float) -> dict:
        argv = [self.board.python, self.runner, "--runtime", self.board.runtime, *args]
        res = self.conn.run(argv, timeout=timeout)
        return parse_json_line(res.stdout + "\n" + res.stderr, self.board.name) if res.stdout.strip() == "" \
            else parse_json_line(res.stdout, self.board.name)

    def close(self) -> None:
        self.conn.close()
