"""What a new user installs is exactly the lock: the app's, the test suite's, and what a Space's own pip makes of
requirements.txt. An upstream release must not change any of it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
from importlib import metadata

from tests.conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)", re.M)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(lock: str) -> dict[str, str]:
    return {canonical(name): version for name, version in PIN.findall((ROOT / lock).read_text())}


def test_every_lock_pins_every_package_with_hashes():
    for lock in ("requirements.txt", "requirements-dev.txt", "requirements-vllm.txt"):
        entries = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / lock).read_text().split("\n", 3)[-1].strip())
        requirements = [entry for entry in entries if not entry.startswith("#")]
        assert len(requirements) == len(locked(lock)) > 50, f"{lock}: an entry without an exact == pin"
        assert all("--hash=sha256:" in entry for entry in requirements), f"{lock}: an entry without hashes"


def test_the_tests_run_the_versions_users_install():
    app, dev = locked("requirements.txt"), locked("requirements-dev.txt")
    assert {name: dev.get(name) for name in app} == app


def test_this_environment_holds_exactly_the_dev_lock():
    installed = {canonical(dist.metadata["Name"]): dist.version.split("+")[0] for dist in metadata.distributions()}
    installed.pop("pip", None)  # the venv's own installer, which no lock lists
    assert installed == locked("requirements-dev.txt")


def test_a_plain_pip_install_of_requirements_txt_resolves_to_exactly_the_lock(tmp_path):
    """What Hugging Face Spaces and ModelScope do: their own pip, `pip install -r requirements.txt`, dependencies
    resolved. pip's dry run resolves (and checks every hash) without putting gigabytes of CUDA wheels on disk."""
    venv.create(tmp_path / "venv", with_pip=True)
    report = tmp_path / "report.json"
    subprocess.run([str(tmp_path / "venv/bin/python"), "-m", "pip", "install", "-q", "--no-cache-dir",
                    "--dry-run", "--report", str(report), "-r", str(ROOT / "requirements.txt")],
                   check=True, capture_output=True, text=True, timeout=600)
    chosen = {canonical(item["metadata"]["name"]): item["metadata"]["version"]
              for item in json.loads(report.read_text())["install"]}
    assert chosen == locked("requirements.txt")
    assert sys.version_info[:2] == (3, 11), "the locks are made for Python 3.11"
