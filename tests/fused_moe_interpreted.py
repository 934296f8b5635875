"""Checks of backends/transformers/kernels/fused_moe.py on CPU tensors through Triton's interpreter; tests/test_fused_moe.py runs
this file in a process of its own with TRITON_INTERPRET=1 (set before triton is imported)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from backends.transformers.kernels import fused_moe  # noqa: E402


def layer_matches_stock() -> None:
    """Sizes that fill no tile exactly, one token and a batched step's few: the outputs of transformers'
    grouped_mm path, up to bf16 rounding."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTextConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerTextSparseMoeBlock

    config = Qwen3OmniMoeTextConfig(hidden_size=96, moe_intermediate_size=40, num_experts=16, num_experts_per_tok=4,
                                    norm_topk_prob=True)
    config._experts_implementation = "grouped_mm"
    torch.manual_seed(0)
    layer = Qwen3OmniMoeThinkerTextSparseMoeBlock(config).to(torch.bfloat16)
    for param in layer.parameters():
        param.data.normal_(0, 0.05)
    inputs = [torch.randn((1, tokens, 96), dtype=torch.bfloat16) for tokens in (1, 3, 8)]
    with torch.inference_mode():
        stock = [layer(x) for x in inputs]
        assert fused_moe.use_fused_decode_experts(layer)
        fused = [layer(x) for x in inputs]
        experts = layer.experts
        for blocks in ({**fused_moe.BLOCKS, "down_split": True, "down_rows": 4, "down_k": 16},  # several k steps
                       {**fused_moe.BLOCKS, "down_split": False, "gate_up_rows": 2, "gate_up_k": 32}):
            for x, f in zip(inputs[:2], fused[:2]):  # other tiles, with or without a program per expert: alike
                _, weights, ids = layer.gate(x.view(-1, 96))
                routed = fused_moe.fused_decode_experts(x.view(-1, 96), ids, weights, experts.gate_up_proj,
                                                        experts.down_proj, blocks)
                torch.testing.assert_close(routed.view_as(f), f, rtol=2 ** -7, atol=1e-4)
        prompt = torch.randn((1, fused_moe.FUSED_MAX_TOKENS + 1, 96), dtype=torch.bfloat16)  # a prompt: stock
        assert torch.equal(layer(prompt), _with(layer, "grouped_mm", prompt))
        # An engine of 16 slots raises the bound, so that every batched step of its takes the kernels (a step
        # compiled for a symbolic batch of 2..16 rows must not branch on the number of rows).
        restore = fused_moe.use_fused_decode_experts(layer, max_tokens=16)
        calls = []
        original = fused_moe.fused_decode_experts
        fused_moe.fused_decode_experts = lambda x, *args, **kwargs: calls.append(x.shape[0]) or original(x, *args,
                                                                                                      **kwargs)
        try:
            step = torch.randn((1, 9, 96), dtype=torch.bfloat16)
            torch.testing.assert_close(layer(step), _with(layer, "grouped_mm", step), rtol=2 ** -7, atol=1e-4)
        finally:
            fused_moe.fused_decode_experts = original
            restore()
        assert calls == [9], calls
    for s, f in zip(stock, fused):
        # fp32 sums in another order: at most a bf16 rounding step apart, and mostly the same bits.
        torch.testing.assert_close(f, s, rtol=2 ** -7, atol=1e-4)
        assert (f == s).float().mean() > 0.9
    print("layer: fused == grouped_mm on", len(inputs), "tokens (within one bf16 rounding step)")


def router_matches_stock() -> None:
    """For one token and a batched step's few, the router's kernel picks transformers' experts in
    transformers' order, with the same weights (bf16), for expert and pick counts that fill no power of two;
    more tokens keep the stock router."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTextConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerTextSparseMoeBlock

    for experts, top_k, normalize in ((20, 6, True), (16, 4, False)):
        config = Qwen3OmniMoeTextConfig(hidden_size=64, moe_intermediate_size=32, num_experts=experts,
                                        num_experts_per_tok=top_k, norm_topk_prob=normalize)
        config._experts_implementation = "grouped_mm"
        torch.manual_seed(experts)
        layer = Qwen3OmniMoeThinkerTextSparseMoeBlock(config).to(torch.bfloat16)
        for param in layer.parameters():
            param.data.normal_(0, 0.1)
        tokens = torch.randn((40, 64), dtype=torch.bfloat16)
        with torch.inference_mode():
            stock = [layer.gate(token[None]) for token in tokens]
            assert fused_moe.use_fused_decode_experts(layer) and "forward" in vars(layer.gate)
            ours = [layer.gate(token[None]) for token in tokens]
            assert torch.equal(layer.gate(tokens)[2], torch.cat([ids for _, _, ids in stock]))  # stock: many
            _, step_weights, step_ids = layer.gate(tokens[:5])  # a step of five rows: one kernel
            assert torch.equal(step_ids, torch.cat([ids for _, _, ids in stock[:5]]))
            torch.testing.assert_close(step_weights, torch.cat([w for _, w, _ in stock[:5]]), rtol=2 ** -7, atol=0)
        for (_, stock_weights, stock_ids), (_, weights, ids) in zip(stock, ours):
            assert torch.equal(ids, stock_ids), (ids, stock_ids)
            assert weights.dtype == stock_weights.dtype
            torch.testing.assert_close(weights, stock_weights, rtol=2 ** -7, atol=0)
    print("router: the same experts in the same order on", len(tokens), "tokens")


def _with(layer, implementation: str, x):
    previous = layer.experts.config._experts_implementation
    layer.experts.config._experts_implementation = implementation
    try:
        return layer(x)
    finally:
        layer.experts.config._experts_implementation = previous


def thinker_replies_alike() -> None:
    """The tiny thinker in bf16, greedy through ThinkerDecoder: the same 6 tokens with the fused experts, and
    every decode step went through them (each step costs seconds in Triton's interpreter)."""
    from backends.checkpoints import resolve_checkpoint
    from backends.conversation import build_prompt_inputs
    from backends.transformers.thinker_decoder import ThinkerDecoder
    from backends.request import ChatRequest, Turn
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.options import TransformersOptions
    from tests.streams import decoded_tokens

    backend = TransformersBackend(resolve_checkpoint("tiny-captioner"), TransformersOptions(compile="off"))
    thinker = backend.model.thinker.to(torch.bfloat16)
    inputs = backend.encode(build_prompt_inputs(ChatRequest(turns=(Turn.user("Tell me something."),))))

    def reply() -> list[int]:
        return decoded_tokens(ThinkerDecoder(thinker, 64), inputs, max_new_tokens=6)

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
    assert len(stock) == 6 and fused == stock, (stock, fused)
    # 5 decode steps, and the one the decoder's constructor runs to allocate its cache.
    assert len(calls) == 6 * layers, f"{len(calls)} fused calls for 6 steps x {layers} layers"
    print("thinker: the same 6 greedy tokens;", len(calls), "fused expert calls")


def batched_thinker_replies_alike() -> None:
    """The tiny thinker in bf16, three greedy replies decoded together in a batch of four rows: each equals its
    reply alone, and every batched step's MoE layers went through the kernels four tokens at a time."""
    from backends.checkpoints import resolve_checkpoint
    from backends.conversation import build_prompt_inputs
    from backends.request import ChatRequest, Turn
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.batched.thinker import ThinkerBatch
    from backends.transformers.options import TransformersOptions
    from backends.transformers.thinker_decoder import ThinkerDecoder, ThinkerSampling
    from tests.streams import decoded_tokens

    backend = TransformersBackend(resolve_checkpoint("tiny-captioner"), TransformersOptions(compile="off"))
    thinker = backend.model.thinker.to(torch.bfloat16)
    prompts = [backend.encode(build_prompt_inputs(ChatRequest(turns=(Turn.user(text),))))
               for text in ("Hi", "Tell me something. " * 6, "What is two plus two?")]
    restore = fused_moe.use_fused_decode_experts(thinker)
    assert restore
    calls = []
    original = fused_moe.fused_decode_experts
    fused_moe.fused_decode_experts = lambda x, *args, **kwargs: calls.append(x.shape[0]) or original(x, *args, **kwargs)
    try:
        alone = [decoded_tokens(ThinkerDecoder(thinker, 256), inputs, max_new_tokens=3) for inputs in prompts]
        batch = ThinkerBatch(thinker, ThinkerDecoder(thinker, 256), slots=4, batch_sizes=(4,))
        replies = {}
        for inputs in prompts:
            row, first = batch.admit(inputs, ThinkerSampling(0.0, 20, 1.0, 3, -1))
            replies[row.slot] = [first]
        calls.clear()
        for _ in range(2):
            for slot, token in batch.step().items():
                replies[slot].append(token)
    finally:
        fused_moe.fused_decode_experts = original
        restore()
        backend.close()
    assert [replies[slot] for slot in sorted(replies)] == alone, (replies, alone)
    layers = thinker.config.text_config.num_hidden_layers
    assert calls == [4] * (2 * layers), f"{calls}: every batched MoE layer should take the kernels, 4 rows at once"
    print("batched thinker: each of three rows as alone;", len(calls), "fused expert calls of 4 tokens")


if __name__ == "__main__":
    router_matches_stock()
    layer_matches_stock()
    thinker_replies_alike()
    batched_thinker_replies_alike()
