"""The connection interface every transport implements."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Connection(Protocol):
    """Run argv lists and move files on a board.  Arguments are never interpreted by a shell unquoted."""

    name: str
    bytes_uploaded: int

    def run(self, argv: list[str], timeout: float | None = None) -> Result: ...

    def put(self, local: Path, remote: str) -> int: ...

    def size(self, remote: str) -> int | None: ...

    def makedirs(self, remote: str) -> None: ...

    def home(self) -> str: ...

    def close(self) -> None: ...


def quote_argv(argv: list[str]) -> str:
    """One shell command line in which every argument is a single, literal word."""
    return " ".join(shlex.quote(str(a)) for a in argv)
