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
def captured_stderr():
    """Redirect fd 2 (and warnings) into a temp file; `.text` holds what was written."""
    cap = Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield cap
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            cap.text = tmp.read().decode("utf-8", "replace")
