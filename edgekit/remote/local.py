"""The `local` board: the same runner in a subprocess on this machine, no SSH."""
from __future__ import annotations

import logging
import os
import selectors
import shutil
import subprocess
import time

from pathlib import Path

from ..errors import ProfileTimeout, RemoteError
from .base import Output, Result, atomic_upload, quote_argv


log = logging.getLogger("edgekit.remote")

class LocalConnection:
    def __init__(self, name: str = "local"):
        self.name = name
        self.bytes_uploaded = 0
        self._running: set[subprocess.Popen] = set()

    def run(self, argv: list[str], timeout: float | None = None, on_line=None) -> Result:
        log.debug("%s: exec %s", self.name, quote_argv([str(a) for a in argv]))
        try:
            # stdin stays an open pipe we never write: the runner ends when it closes (our exit, even a SIGKILL)
            proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except OSError as e:
            raise RemoteError(f"{self.name}: cannot run {argv[0]}: {e.strerror}") from e
        self._running.add(proc)
        out, err = Output(on_line), Output()
        deadline = None if timeout is None else time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None  # both are pipes
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        try:
            while sel.get_map():
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    proc.kill()
                    proc.wait()
                    raise ProfileTimeout(f"{self.name}: command timed out after {timeout:.0f} s")
                for key, _ in sel.select(wait):
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fileobj)
                        continue
                    key.data.feed(data)
            proc.wait()
        finally:
            self._running.discard(proc)
            sel.close()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
        return Result(proc.returncode, out.text(), err.text())

    def put(self, local: Path, remote: str) -> int:
        n = atomic_upload(local, remote, lambda tmp: shutil.copyfile(local, tmp), os.replace)
        log.debug("%s: copied %s -> %s (%d bytes)", self.name, Path(local).name, remote, n)
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
