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


def test_a_thinker_that_wont_compile_with_our_kernels_compiles_again_with_transformers_own(tiny_cache,
                                                                                             monkeypatch):
    """On a GPU the backend turns the fused experts and the decode attention on before compiling; if the
    thinker's step then fails to compile (a kernel dynamo can't trace, say) it must not stay eager: the stock
    experts and sdpa go back, and it compiles again. The first try fails here on purpose; the CPU never turns
    the kernels on by itself."""
    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint
    from backends.decoding import TalkerDecoder, ThinkerDecoder

    tries = []

    def compile_fails_first(self):
        tries.append(self.max_tokens)
        self.compiled = len(tries) > 1
        return 0.0

    monkeypatch.setattr(ThinkerDecoder, "compile", compile_fails_first)
    monkeypatch.setattr(TalkerDecoder, "compile", lambda self: setattr(self, "compiled", True) or 0.0)
    with build_backend("transformers", resolve_checkpoint("tiny"), compile="on", small_cache_tokens=0,
                       max_speech_seconds=1.0) as backend:
        assert backend._stock_experts is None and backend._stock_attention is None, "no Triton kernels without a GPU"
        restored = []
        backend._stock_experts = lambda: restored.append("experts")
        backend._stock_attention = lambda: restored.append("attention")
        backend.warm_up()
        assert restored == ["experts", "attention"]
        assert backend._stock_experts is None and backend._stock_attention is None
        assert len(tries) == 2 and all(decoder.compiled for decoder in backend.thinker_decoders)
        assert backend.compiled and backend.warming_up is None
