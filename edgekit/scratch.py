"""Scratch folders under the system's temporary folder that outlive no crash: each carries a marker naming the
process that made it, and making a new one first removes those whose process is gone (killed by the kernel's
out-of-memory killer, or by a user: a ResNet50V2 SavedModel left in /tmp is ~100 MB, and on a tmpfs it is memory).

Only folders that prove to be ours are removed: the prefix is edgekit's, the marker is a regular file written by
this module, its owner is this user, and the process it names no longer exists (the same pid running again is
told apart by its start time).  Anything else is left alone.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MARKER = ".edgekit-scratch"


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks (Linux), '' where /proc cannot tell, None when it does not exist."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # exists, another user's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command's closing parenthesis


def _orphaned(folder: Path) -> bool:
    marker = folder / MARKER
    try:
        if folder.is_symlink() or not folder.is_dir() or marker.is_symlink() or not marker.is_file():
            return False
        if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():
            return False
        owner = json.loads(marker.read_text())
        pid, started = int(owner["pid"]), str(owner["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    now = _started(pid)
    return now is None or (bool(now) and bool(started) and now != started)


def sweep(prefix: str) -> list[Path]:
    """Remove the scratch folders named `prefix`* whose process is gone; returns them."""
    gone = []
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        if _orphaned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    return gone


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder (removed on exit, as tempfile's), after sweeping the orphans of earlier processes."""
    if not prefix.startswith("edgekit-"):
        raise ValueError(f"scratch folders are edgekit's own: {prefix!r}")
    sweep(prefix)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        path = Path(tmp)
        (path / MARKER).write_text(json.dumps({"pid": os.getpid(), "started": _started(os.getpid()) or ""}))
        yield path
