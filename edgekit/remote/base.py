"""The connection interface every transport implements."""
from __future__ import annotations

import os
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from collections.abc import Callable


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Connection(Protocol):
    """Run argv lists and move files on a board.  Arguments are never interpreted by a shell unquoted."""

    name: str
    bytes_uploaded: int

    def run(self, argv: list[str], timeout: float | None = None,
            on_line: Callable[[str], None] | None = None) -> Result:
        """`on_line` gets each complete line of standard output as it arrives (results stream in)."""

    def put(self, local: Path, remote: str) -> int: ...

    def size(self, remote: str) -> int | None: ...

    def makedirs(self, remote: str) -> None: ...

    def home(self) -> str: ...

    def close(self) -> None: ...


class Output:
    """A command's output as it arrives: kept whole, and each complete line handed to `on_line` (if given)."""

    def __init__(self, on_line: Callable[[str], None] | None = None):
        self.data, self.on_line, self.pending = bytearray(), on_line, b""

    def feed(self, data: bytes) -> None:
        self.data += data
        if self.on_line is None:
            return
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self.on_line(line.decode("utf-8", "replace"))

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def atomic_upload(local: Path, remote: str, send: Callable[[str], object], rename: Callable[[str, str], object]) -> int:
    """Upload under a temporary name, then rename: a board never sees half a file under the real name.  `send(tmp)`
    copies `local` there, `rename(tmp, remote)` moves it into place; returns the bytes sent."""
    tmp = f"{remote}.tmp-{uuid.uuid4().hex[:8]}"
    send(tmp)
    rename(tmp, remote)
    return os.path.getsize(local)


def quote_argv(argv: list[str]) -> str:
    """One shell command line in which every argument is a single, literal word."""
    return " ".join(shlex.quote(str(a)) for a in argv)
