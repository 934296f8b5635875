"""The decode-attention kernel (backends/decode_attention.py) gives sdpa's outputs.

Triton compiles for GPUs only, so on this CPU its interpreter runs it (TRITON_INTERPRET=1, which must be set
before triton is imported: hence a process of its own). The GPU's speed is in benchmarks/speech_latency.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKS = Path(__file__).with_name("decode_attention_interpreted.py")


def test_decode_attention_equals_sdpa_and_the_thinker_replies_alike(tiny_cache):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(CHECKS)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kernel: sdpa's outputs in 16 layouts" in done.stdout and "empty slots unread" in done.stdout
    assert "thinker: the same 12 greedy tokens" in done.stdout
