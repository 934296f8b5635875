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
    assert "a kernel that fails or disagrees: the layers keep sdpa" in done.stdout


def test_a_talker_that_wont_compile_with_the_kernel_compiles_again_with_sdpa(tiny_cache, monkeypatch):
    """The talker's steps, like the thinker's, must not stay eager on our kernel when they fail to compile
    with it (the eager path would launch the same kernel): sdpa goes back and the talker compiles again."""
    from backends import build_backend
    from backends.checkpoints import resolve_checkpoint
    from backends.decoding import TalkerDecoder, ThinkerDecoder

    tries = []

    def compile_fails_first(self):
        tries.append(1)
        self.compiled = len(tries) > 1
        return 0.0

    monkeypatch.setattr(TalkerDecoder, "compile", compile_fails_first)
    monkeypatch.setattr(ThinkerDecoder, "compile", lambda self: setattr(self, "compiled", True) or 0.0)
    with build_backend("transformers", resolve_checkpoint("tiny"), compile="on", small_cache_tokens=0,
                       max_speech_seconds=1.0) as backend:
        assert backend._stock_attention is None, "no Triton kernels without a GPU"
        restored = []
        backend._stock_attention = lambda: restored.append("attention")
        backend.warm_up()
        assert restored == ["attention"] and backend._stock_attention is None
        assert len(tries) == 2 and backend.talker_decoder.compiled and backend.compiled
