"""The fused MoE decode kernels (backends/transformers/kernels/fused_moe.py) give the stock experts path's outputs.

Triton compiles for GPUs only, so on this CPU its interpreter runs them (TRITON_INTERPRET=1, which must be
set before triton is imported: hence a process of its own). The GPU's speed and agreement are in
benchmarks/moe_decode.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.compiling import run_interpreted

CHECKS = Path(__file__).with_name("fused_moe_interpreted.py")


def test_fused_experts_equal_transformers_grouped_mm_and_the_thinker_replies_alike(tiny_cache):
    printed = run_interpreted(CHECKS)
    assert "router: the same experts in the same order" in printed and "layer: fused == grouped_mm" in printed
    assert "thinker: the same 6 greedy tokens" in printed
    assert "batched thinker: each of three rows as alone" in printed

