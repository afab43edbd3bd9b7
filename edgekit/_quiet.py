"""Silence the C++ chatter TensorFlow / LiteRT write straight to file descriptor 2, keeping it for errors."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings


class Captured:
    text = ""


@contextlib.contextmanager
def captured_stderr(fds: tuple[int, ...] = (2,)):
    """Redirect file descriptors (default: 2) and warnings into a temp file; `.text` holds what was written."""
    cap = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        for fd in fds:
            os.dup2(tmp.fileno(), fd)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield cap
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            cap.text = tmp.read().decode("utf-8", "replace")
