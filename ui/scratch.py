"""Where sessions keep their files: one folder per app process, removed when the process exits.

A session's own folder goes when the session ends, expires or is cleared; this parent folder
catches what sessions still open at shutdown leave, so restarts don't pile files up in /tmp.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading

_lock = threading.Lock()
_process_folder: str | None = None


def process_folder() -> str:
    """This process's folder (made on first use)."""
    global _process_folder
    with _lock:
        if _process_folder is None or not os.path.isdir(_process_folder):
            _process_folder = tempfile.mkdtemp(prefix="qwen3-omni-app-")
            atexit.register(shutil.rmtree, _process_folder, True)
        return _process_folder


def session_folder(prefix: str) -> str:
    """A new, private folder for one session's files (``prefix`` says whose, e.g. "omni-replies-")."""
    return tempfile.mkdtemp(prefix=prefix, dir=process_folder())
