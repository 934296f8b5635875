"""The fused MoE decode kernels (backends/fused_moe.py) give the stock experts path's outputs.

Triton compiles for GPUs only, so on this CPU its interpreter runs them (TRITON_INTERPRET=1, which must be
set before triton is imported: hence a process of its own). The GPU's speed and agreement are in
benchmarks/moe_decode.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKS = Path(__file__).with_name("fused_moe_interpreted.py")


def test_fused_experts_equal_transformers_grouped_mm_and_the_thinker_replies_alike(tiny_cache):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(CHECKS)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "layer: fused == grouped_mm" in done.stdout and "thinker: the same 12 greedy tokens" in done.stdout
