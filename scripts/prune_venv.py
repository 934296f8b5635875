"""Uninstall what a lock doesn't list, so a reused .venv holds exactly the locked set (pip itself stays).

Usage: .venv/bin/python scripts/prune_venv.py requirements-dev.txt
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

KEEP = {"pip"}  # the installer itself: the venv's own, the one Python ships


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_names(lock_path: str) -> set[str]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", open(lock_path).read(), flags=re.M)
    return {canonical(name) for name in pins}


def main(lock_path: str) -> None:
    installed = {canonical(dist.metadata["Name"]) for dist in metadata.distributions()}
    extra = sorted(installed - locked_names(lock_path) - KEEP)
    if extra:
        print(f">> not in {lock_path}, uninstalled: {' '.join(extra)}")
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True)


if __name__ == "__main__":
    main(sys.argv[1])
