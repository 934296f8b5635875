"""The decode-attention kernel (backends/transformers/kernels/decode_attention.py) gives sdpa's outputs.

Triton compiles for GPUs only, so on this CPU its interpreter runs it (TRITON_INTERPRET=1, which must be set
before triton is imported: hence a process of its own). Its speed on a GPU: benchmarks/decode_attention.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.compiling import run_interpreted

CHECKS = Path(__file__).with_name("decode_attention_interpreted.py")


def test_decode_attention_equals_sdpa_and_the_thinker_replies_alike(tiny_cache):
    printed = run_interpreted(CHECKS)
    assert "kernel: sdpa's outputs in 8 cases" in printed and "empty slots unread" in printed
    assert "thinker: the same 12 greedy tokens" in printed
    assert "rows: each row as alone; the batched thinker's replies equal each reply alone" in printed
    assert "a kernel that fails or disagrees: the layers keep sdpa" in printed

