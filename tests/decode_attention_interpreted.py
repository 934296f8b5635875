"""Checks of backends/transformers/kernels/decode_attention.py on CPU tensors through Triton's interpreter;
tests/test_decode_attention.py runs this file in a process of its own with TRITON_INTERPRET=1 (set before
triton is imported)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

from backends.transformers.kernels import decode_attention  # noqa: E402


def sdpa(query, key, value, seen, scale):
    """transformers' path for the same step: keys and values repeated per query head, a bool mask."""
    group = query.shape[0] // key.shape[0]
    key, value = key.repeat_interleave(group, 0), value.repeat_interleave(group, 0)
    out = torch.nn.functional.scaled_dot_product_attention(query[:, None].float(), key.float(), value.float(),
                                                           attn_mask=seen[None, None, :], scale=scale)
    return out[:, 0].to(query.dtype)


def kernel_matches_sdpa() -> None:
    """The real thinker's and talker's head layouts and the tiny ones', caches that fill no block or split
    exactly, a few slots filled or most, and a mask with holes (slots written but hidden)."""
    torch.manual_seed(0)
    cases = 0
    # Every layout with a small cache and a big one, every size with two layouts (a check in the interpreter
    # costs seconds); the last is the one the NaN check below reads.
    layouts = ((32, 4, 128), (16, 2, 128), (2, 1, 32), (2, 2, 16))
    sizes = ((200, 137), (4096, 700), (200, 1), (2100, 2100), (200, 137), (2100, 2100), (200, 1), (4096, 700))
    for n, (slots, filled) in enumerate(sizes):
        heads, kv_heads, head_dim = layouts[n // 2]
        query = torch.randn((heads, head_dim), dtype=torch.bfloat16)
        key = torch.randn((kv_heads, slots, head_dim), dtype=torch.bfloat16)
        value = torch.randn((kv_heads, slots, head_dim), dtype=torch.bfloat16)
        seen = torch.arange(slots) < filled
        if filled > 100:
            seen[torch.randint(0, filled - 1, (20,))] = False  # the current token (the last) stays seen
        expected = sdpa(query, key, value, seen, head_dim ** -0.5)
        for interleaved in (False, True):  # both orders of the blocks over the splits
            out = decode_attention.decode_attention(query, key, value, seen, head_dim ** -0.5, interleaved)
            torch.testing.assert_close(out, expected, rtol=2 ** -7, atol=2e-3)
        cases += 1
    # What it reads: an empty slot's keys can be anything, even NaN, and change nothing.
    key[:, 700:] = float("nan")
    value[:, 700:] = float("nan")
    for interleaved in (False, True):
        out = decode_attention.decode_attention(query, key, value, seen, head_dim ** -0.5, interleaved)
        assert torch.isfinite(out).all()
    print(f"kernel: sdpa's outputs in {cases} cases (within one bf16 rounding step); empty slots unread")


def thinker_replies_alike() -> None:
    """The tiny thinker in bf16, greedy through ThinkerDecoder (a static cache, a padded prompt pass): the same
    12 tokens with the kernel (the prompt pass on sdpa over its own slots only), and every decode step's
    layers went through it. (The talker's layout is among kernel_matches_sdpa's; here it is only switched.)"""
    from backends.checkpoints import resolve_checkpoint
    from backends.conversation import build_prompt_inputs
    from backends.transformers.thinker_decoder import ThinkerDecoder
    from backends.request import ChatRequest, Turn
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.options import TransformersOptions
    from tests.streams import decoded_tokens

    backend = TransformersBackend(resolve_checkpoint("tiny"), TransformersOptions(compile="off"))
    thinker = backend.model.thinker.to(torch.bfloat16)
    # Over two blocks of prompt, in a cache of 10 splits: the steps combine several splits' partial softmaxes.
    inputs = backend.encode(build_prompt_inputs(ChatRequest(turns=(Turn.user("Tell me something. " * 15),))))

    def reply() -> list[int]:
        decoder = ThinkerDecoder(thinker, 640, prefill_lengths=(256,))
        decoder.capture_prompt_passes()  # the padded prompt pass (on the CPU: a plain function)
        assert 128 < inputs["input_ids"].shape[1] <= 256, "the prompt spans blocks and takes the padded pass"
        return decoded_tokens(decoder, inputs)

    stock = reply()
    calls, prompt_keys = [], []
    original, original_sdpa = decode_attention.decode_attention_rows, decode_attention.sdpa_attention_forward
    decode_attention.decode_attention_rows = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    decode_attention.sdpa_attention_forward = lambda module, query, key, *args, **kwargs: (
        prompt_keys.append(key.shape[2]) or original_sdpa(module, query, key, *args, **kwargs))
    try:
        restore = decode_attention.use_decode_attention(thinker)
        assert restore and thinker.model.config._attn_implementation == decode_attention.DECODE_ATTENTION
        assert decode_attention.prompt_mask_slots(thinker.model.config, 40, 200) == 40
        calls.clear()  # (enabling checked the kernel once against sdpa)
        ours = reply()
        step_calls = len(calls)
        talker_layers = decode_attention.use_decode_attention(backend.model.talker)
        assert talker_layers, "the talker's text layers take the kernel too"
        predictor = backend.model.talker.code_predictor.config
        assert predictor._attn_implementation == "sdpa", "the code predictor (another attention class) keeps sdpa"
        restore()
        assert reply() == stock
    finally:
        decode_attention.decode_attention_rows, decode_attention.sdpa_attention_forward = original, original_sdpa
        backend.close()
    assert set(prompt_keys[:2]) == {256}, f"the prompt pass read {prompt_keys[:2]} keys, not its own 256 slots"
    layers = thinker.config.text_config.num_hidden_layers
    assert len(stock) == 12 and ours == stock, (stock, ours)
    # 11 decode steps, and the one the decoder's constructor runs to allocate its cache.
    assert step_calls == 12 * layers, f"{step_calls} kernel calls for 12 steps x {layers} layers"
    print("thinker: the same 12 greedy tokens;", step_calls, "kernel calls")


def rows_attend_each_to_their_own_slot() -> None:
    """A batched step's rows (issue 25): each row's output equals the kernel's for that row alone, bit for bit,
    whatever the other rows hold; and the tiny thinker's batched replies (ThinkerBatch, three prompts of
    different lengths, bf16, greedy) equal each reply decoded alone, with every batched layer in the kernel."""
    torch.manual_seed(1)
    heads, kv_heads, head_dim, slots = 32, 4, 128, 700
    query = torch.randn((3, heads, head_dim), dtype=torch.bfloat16)
    key = torch.randn((3, kv_heads, slots, head_dim), dtype=torch.bfloat16)
    value = torch.randn((3, kv_heads, slots, head_dim), dtype=torch.bfloat16)
    seen = torch.arange(slots)[None, :] < torch.tensor([[1], [300], [700]])
    rows = decode_attention.decode_attention_rows(query, key, value, seen, head_dim ** -0.5)
    for row in range(3):
        alone = decode_attention.decode_attention(query[row], key[row], value[row], seen[row], head_dim ** -0.5)
        assert torch.equal(rows[row], alone)

    from backends.checkpoints import resolve_checkpoint
    from backends.conversation import build_prompt_inputs
    from backends.request import ChatRequest, Turn
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.batched.thinker import ThinkerBatch
    from backends.transformers.options import TransformersOptions
    from backends.transformers.thinker_decoder import ThinkerDecoder, ThinkerSampling
    from tests.streams import decoded_tokens

    backend = TransformersBackend(resolve_checkpoint("tiny"), TransformersOptions(compile="off"))
    thinker = backend.model.thinker.to(torch.bfloat16)
    prompts = [backend.encode(build_prompt_inputs(ChatRequest(turns=(Turn.user(text),))))
               for text in ("Hi", "Tell me something. " * 8, "What is two plus two?")]
    restore = decode_attention.use_decode_attention(thinker)
    calls = []
    original = decode_attention.decode_attention_rows
    decode_attention.decode_attention_rows = lambda query, *args, **kwargs: (
        calls.append(query.shape[0]) or original(query, *args, **kwargs))
    try:
        alone = [decoded_tokens(ThinkerDecoder(thinker, 256), inputs, max_new_tokens=5) for inputs in prompts]
        batch = ThinkerBatch(thinker, ThinkerDecoder(thinker, 256), slots=4, batch_sizes=(4,))
        replies = {}
        for inputs in prompts:
            row, first = batch.admit(inputs, ThinkerSampling(0.0, 20, 1.0, 5, -1))
            replies[row.slot] = [first]
        calls.clear()
        for _ in range(4):
            for slot, token in batch.step().items():
                replies[slot].append(token)
    finally:
        decode_attention.decode_attention_rows = original
        restore()
        backend.close()
    assert [replies[slot] for slot in sorted(replies)] == alone, (replies, alone)
    layers = thinker.config.text_config.num_hidden_layers
    assert calls == [4] * (4 * layers), "every batched layer should attend in the kernel, four rows at a time"
    print("rows: each row as alone; the batched thinker's replies equal each reply alone")


def a_kernel_that_fails_its_check_leaves_sdpa() -> None:
    """Where the kernel can't be built or disagrees with sdpa (another GPU, another Triton), the layers keep
    sdpa instead of failing in a reply."""
    from backends.checkpoints import resolve_checkpoint
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.options import TransformersOptions

    backend = TransformersBackend(resolve_checkpoint("tiny"), TransformersOptions(compile="off"))
    thinker = backend.model.thinker.to(torch.bfloat16)
    original = decode_attention.decode_attention
    try:
        for broken in (lambda *args: 1 / 0, lambda query, *args: torch.zeros_like(query)):
            decode_attention.decode_attention = broken
            assert decode_attention.use_decode_attention(thinker) is None
            assert thinker.model.config._attn_implementation == "sdpa"
    finally:
        decode_attention.decode_attention = original
        backend.close()
    print("a kernel that fails or disagrees: the layers keep sdpa")


if __name__ == "__main__":
    kernel_matches_sdpa()
    thinker_replies_alike()
    rows_attend_each_to_their_own_slot()
    a_kernel_that_fails_its_check_leaves_sdpa()
