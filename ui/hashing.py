"""Files' SHA-256, remembered: feedback and evaluation exports name each medium by its hash.

Hashing reads the whole file: call ``file_hash`` on a worker thread (Gradio runs plain functions on one),
never on the event loop. A file is read once while its size and mtime stay the same.
"""

from __future__ import annotations

import hashlib
import os
import threading

HASHES_KEPT = 4096
_hashes: dict[tuple, str] = {}
_hashes_lock = threading.Lock()


def file_hash(path: str) -> str | None:
    """The file's SHA-256 (None if it can't be read); remembered while its size and mtime stay the same."""
    try:
        stat = os.stat(path)
        key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
        with _hashes_lock:
            known = _hashes.get(key)
        if known is not None:
            return known
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    hexdigest = digest.hexdigest()
    with _hashes_lock:
        if len(_hashes) >= HASHES_KEPT:
            _hashes.pop(next(iter(_hashes)))  # the oldest
        _hashes[key] = hexdigest
    return hexdigest
