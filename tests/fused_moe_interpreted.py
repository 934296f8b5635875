"""Checks of backends/fused_moe.py on CPU tensors through Triton's interpreter; tests/test_fused_moe.py runs
this file in a process of its own with TRITON_INTERPRET=1 (set before triton is imported)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from backends import fused_moe  # noqa: E402


def layer_matches_stock() -> None:
    """Sizes that fill no tile exactly: the outputs of transformers' grouped_mm path, up to bf16 rounding."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTextConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerTextSparseMoeBlock

    config = Qwen3OmniMoeTextConfig(hidden_size=96, moe_intermediate_size=40, num_experts=16, num_experts_per_tok=4,
                                    norm_topk_prob=True)
    config._experts_implementation = "grouped_mm"
    torch.manual_seed(0)
    layer = Qwen3OmniMoeThinkerTextSparseMoeBlock(config).to(torch.bfloat16)
    for param in layer.parameters():
        param.data.normal_(0, 0.05)
    inputs = [torch.randn((1, 1, 96), dtype=torch.bfloat16) for _ in range(5)]
    with torch.inference_mode():
        stock = [layer(x) for x in inputs]
        assert fused_moe.use_fused_decode_experts(layer)
        fused = [layer(x) for x in inputs]
        prompt = torch.randn((1, 7, 96), dtype=torch.bfloat16)  # many tokens: still the stock path
        assert torch.equal(layer(prompt), _with(layer, "grouped_mm", prompt))
    for s, f in zip(stock, fused):
        # fp32 sums in another order: at most a bf16 rounding step apart, and mostly the same bits.
        torch.testing.assert_close(f, s, rtol=2 ** -7, atol=1e-4)
        assert (f == s).float().mean() > 0.9
    print("layer: fused == grouped_mm on", len(inputs), "tokens (within one bf16 rounding step)")


def _with(layer, implementation: str, x):
    previous = layer.experts.config._experts_implementation
    layer.experts.config._experts_implementation = implementation
    try:
        return layer(x)
    finally:
        layer.experts.config._experts_implementation = previous


def thinker_replies_alike() -> None:
    """The tiny thinker in bf16, greedy through ThinkerDecoder: the same 12 tokens with the fused experts, and
    every decode step went through them."""
    from backends.checkpoints import resolve_checkpoint
    from backends.conversation import build_prompt_inputs
    from backends.decoding import ThinkerDecoder
    from backends.request import ChatRequest, Turn
    from backends.transformers_backend import TransformersBackend, TransformersOptions
    from tests.streams import decoded_tokens

    backend = TransformersBackend(resolve_checkpoint("tiny-captioner"), TransformersOptions(compile="off"))
    thinker = backend.model.thinker.to(torch.bfloat16)
    inputs = backend.encode(build_prompt_inputs(ChatRequest(turns=(Turn.user("Tell me something."),))))

    def reply() -> list[int]:
        return decoded_tokens(ThinkerDecoder(thinker, 64), inputs)

    stock = reply()
    calls = []
    original = fused_moe.fused_decode_experts
    fused_moe.fused_decode_experts = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    try:
        assert fused_moe.use_fused_decode_experts(thinker)
        fused = reply()
    finally:
        fused_moe.fused_decode_experts = original
        backend.close()
    layers = thinker.config.text_config.num_hidden_layers
    assert len(stock) == 12 and fused == stock, (stock, fused)
    # 11 decode steps, and the one the decoder's constructor runs to allocate its cache.
    assert len(calls) == 12 * layers, f"{len(calls)} fused calls for 12 steps x {layers} layers"
    print("thinker: the same 12 greedy tokens;", len(calls), "fused expert calls")


if __name__ == "__main__":
    layer_matches_stock()
    thinker_replies_alike()
