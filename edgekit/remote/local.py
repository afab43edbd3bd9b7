"""The `local` board: the same runner in a subprocess on this machine, no SSH."""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from ..errors import ProfileTimeout, RemoteError
from .base import Result


class LocalConnection:
    def __init__(self, name: str = "local"):
        self.name = name
        self.bytes_uploaded = 0
        self._running: set[subprocess.Popen] = set()

    def run(self, argv: list[str], timeout: float | None = None) -> Result:
        try:
            proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        except OSError as e:
            raise RemoteError(f"{self.name}: cannot run {argv[0]}: {e.strerror}") from e
        self._running.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            proc.kill()
            proc.communicate()
            raise ProfileTimeout(f"{self.name}: command timed out after {timeout:.0f} s") from e
        finally:
            self._running.discard(proc)
        return Result(proc.returncode, out, err)

    def put(self, local: Path, remote: str) -> int:
        tmp = f"{remote}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copyfile(local, tmp)
        os.replace(tmp, remote)
        n = Path(remote).stat().st_size
        self.bytes_uploaded += n
        return n

    def size(self, remote: str) -> int | None:
        try:
            return os.stat(remote).st_size
        except OSError:
            return None

    def makedirs(self, remote: str) -> None:
        os.makedirs(remote, exist_ok=True)

    def home(self) -> str:
        return str(Path.home())

    def close(self) -> None:
        """Stop anything still running (Ctrl-C): nothing is left measuring in the background."""
        for proc in list(self._running):
            proc.kill()
