"""Attention for one new token over a static KV cache (a decode step), reading only the filled slots.

transformers' sdpa path attends over every slot of a ``StaticCache``, filled or not (the mask hides the
empty ones), and with a mask it first copies the keys and values out to one per query head (GQA:
``repeat_kv``). On an H200 a thinker step spent 1.05 ms of its 5.76 ms of kernels there with a
2048-slot cache and 4.0 of 8.5 ms with an 8192-slot one, for prompts of a few hundred tokens
(BENCHMARKS.md). Here one Triton kernel splits the cache into blocks; a block whose mask is all
false is skipped before its keys are read, so a step costs what the conversation holds, not what the
cache could. Each program serves one key/value head with all the query heads that share it (no
copies). Partial softmaxes of the splits are combined after (flash-decoding). Per layer on the H200, 400
tokens in an 8192-slot cache: 30 µs against sdpa's 185; the thinker alone went from 113 to 173 tok/s.

Rounding follows flash attention's: scores and softmax in fp32, the probabilities in bf16 for the
product with the values, the sum in fp32. Prompt passes (many tokens), other devices and anything
unusual keep transformers' sdpa.

Example::

    stock_attention = use_decode_attention(model.thinker)   # its decode steps now take this path
"""

from __future__ import annotations

import logging
import os
from typing import Callable

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

log = logging.getLogger(__name__)

DECODE_ATTENTION = "omni_decode_attention"
"""The name registered in transformers' AttentionInterface (and, with sdpa's masks, its mask interface)."""

try:  # triton comes with CUDA builds of torch; without it sdpa serves
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - a CPU-only torch build
    triton = None

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
"""Triton's interpreter runs the kernel on CPU tensors (slowly): how the CPU tests check it."""

BLOCK = 64
"""Cache slots per step of a program's loop (and the granularity at which empty slots are skipped)."""
MAX_SPLITS = 32
"""Programs per key/value head: enough to fill an H200's 132 SMs for long conversations."""
INTERLEAVED = True
"""How a cache's blocks are dealt to the splits: round-robin, so a short conversation's few blocks land on as
many programs as there are blocks whatever the cache's size; False, each split a contiguous run (400 filled
slots of 8192 are then 2 runs of 4 blocks). On an H200 per layer, 400 of 8192 slots: 30.2 µs against 37.8;
the talker's cache, 29.6 against 42.6; 2048 slots: the same (benchmarks/decode_attention.py, BENCHMARKS.md)."""

if triton is not None:
    from backends.transformers.kernels.fused_moe import round_to_bf16

    @triton.jit
    def _attend_split(q_ptr, k_ptr, v_ptr, mask_ptr, acc_ptr, max_ptr, sum_ptr, slots,
                      q_batch_stride, q_head_stride, k_batch_stride, k_head_stride, k_slot_stride,
                      v_batch_stride, v_head_stride, v_slot_stride, mask_batch_stride, mask_stride,
                      SCALE: tl.constexpr, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                      DIM_PAD: tl.constexpr, SPLIT: tl.constexpr, BLOCK_N: tl.constexpr,
                      INTERLEAVE: tl.constexpr, KV_HEADS: tl.constexpr):
        # SCALE is a constant: a float argument arrives as fp64 inside torch.compile, and so would the scores.
        # Program axis 0 is (row of the batch, key/value head); the partial sums are laid out the same way.
        pair = tl.program_id(0)
        row_of_batch = pair // KV_HEADS
        kv_head = pair % KV_HEADS
        q_ptr += row_of_batch * q_batch_stride
        k_ptr += row_of_batch * k_batch_stride
        v_ptr += row_of_batch * v_batch_stride
        mask_ptr += row_of_batch * mask_batch_stride
        split = tl.program_id(1)
        splits = tl.num_programs(1)
        rows = tl.arange(0, GROUP_PAD)  # the query heads of this key/value head (padded: tl.dot wants 16)
        dims = tl.arange(0, DIM_PAD)
        dim_ok = dims < HEAD_DIM
        # fp32 operands for tl.dot: exact for bf16 values (tf32 keeps their 8 bits), and the interpreter
        # has no bf16 arithmetic.
        q = tl.load(q_ptr + (kv_head * GROUP + rows)[:, None] * q_head_stride + dims[None, :],
                    mask=(rows[:, None] < GROUP) & dim_ok[None, :], other=0.0).to(tl.float32)
        best = tl.full([GROUP_PAD], float("-inf"), dtype=tl.float32)
        total = tl.zeros([GROUP_PAD], dtype=tl.float32)
        acc = tl.zeros([GROUP_PAD, DIM_PAD], dtype=tl.float32)
        keys = k_ptr + kv_head * k_head_stride
        values = v_ptr + kv_head * v_head_stride
        if INTERLEAVE:  # blocks split, split + splits, ...
            first, end, stride = split * BLOCK_N, slots, splits * BLOCK_N
        else:  # the split's own run of blocks
            first, end, stride = split * SPLIT, split * SPLIT + SPLIT, BLOCK_N
        for start in range(first, end, stride):
            slot = start + tl.arange(0, BLOCK_N)
            seen = tl.load(mask_ptr + slot * mask_stride, mask=slot < slots, other=0) != 0
            if tl.max(seen.to(tl.int32), axis=0) > 0:  # an empty block costs its mask only
                k = tl.load(keys + slot[:, None] * k_slot_stride + dims[None, :],
                            mask=seen[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
                scores = tl.dot(q, tl.trans(k)) * SCALE
                scores = tl.where(seen[None, :], scores, float("-inf"))
                new_best = tl.maximum(best, tl.max(scores, axis=1))
                rescale = tl.exp(best - new_best)
                p = tl.exp(scores - new_best[:, None])
                total = total * rescale + tl.sum(p, axis=1)
                v = tl.load(values + slot[:, None] * v_slot_stride + dims[None, :],
                            mask=seen[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)
                acc = acc * rescale[:, None] + tl.dot(round_to_bf16(p), v)
                best = new_best
        part = (pair * splits + split) * GROUP_PAD + rows
        tl.store(acc_ptr + part[:, None] * DIM_PAD + dims[None, :], acc, mask=rows[:, None] < GROUP)
        tl.store(max_ptr + part, best)
        tl.store(sum_ptr + part, total)

    @triton.jit
    def _combine_splits(acc_ptr, max_ptr, sum_ptr, out_ptr, SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr,
                        GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr):
        """One query head's output from its key/value head's splits: their partial sums rescaled to the
        largest score seen. A split that attended to nothing (-inf, 0) is skipped before its sums are read."""
        kv_head = tl.program_id(0)
        row = tl.program_id(1)
        splits = tl.arange(0, SPLITS_PAD)
        parts = (kv_head * SPLITS + splits) * GROUP_PAD + row
        best = tl.load(max_ptr + parts, mask=splits < SPLITS, other=float("-inf"))
        top = tl.max(best, axis=0)
        total = tl.sum(tl.load(sum_ptr + parts, mask=splits < SPLITS, other=0.0) * tl.exp(best - top), axis=0)
        dims = tl.arange(0, DIM_PAD)
        out = tl.zeros([DIM_PAD], dtype=tl.float32)
        for split in range(0, SPLITS):
            part = (kv_head * SPLITS + split) * GROUP_PAD + row
            split_best = tl.load(max_ptr + part)
            if split_best > float("-inf"):
                out += tl.exp(split_best - top) * tl.load(acc_ptr + part * DIM_PAD + dims)
        tl.store(out_ptr + (kv_head * GROUP + row) * HEAD_DIM + dims, round_to_bf16(out / total).to(tl.bfloat16),
                 mask=dims < HEAD_DIM)


def decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, seen: torch.Tensor,
                     scale: float, interleaved: bool | None = None) -> torch.Tensor:
    """``query`` (heads, head_dim) of one token, bf16; ``key``/``value`` (kv_heads, slots, head_dim), the whole
    cache; ``seen`` (slots,) bool, the slots it may attend to → (heads, head_dim). ``interleaved``: the
    blocks' order (default INTERLEAVED)."""
    return decode_attention_rows(query[None], key[None], value[None], seen[None], scale, interleaved)[0]


def decode_attention_rows(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, seen: torch.Tensor,
                          scale: float, interleaved: bool | None = None) -> torch.Tensor:
    """``decode_attention`` for a batch of rows, each one token over its own cache and mask: ``query`` (rows,
    heads, head_dim), ``key``/``value`` (rows, kv_heads, slots, head_dim), ``seen`` (rows, slots) → (rows,
    heads, head_dim)."""
    rows, heads, head_dim = query.shape
    kv_heads, slots = key.shape[1], key.shape[2]
    group = heads // kv_heads
    group_pad, dim_pad = max(16, _power_of_two_above(group)), max(16, _power_of_two_above(head_dim))
    splits = min(MAX_SPLITS, -(-slots // BLOCK))
    split = -(-slots // (splits * BLOCK)) * BLOCK
    acc = torch.empty((rows * kv_heads, splits, group_pad, dim_pad), device=query.device, dtype=torch.float32)
    best = torch.empty((rows * kv_heads, splits, group_pad), device=query.device, dtype=torch.float32)
    total = torch.empty_like(best)
    _attend_split[(rows * kv_heads, splits)](
        query, key, value, seen, acc, best, total, slots, query.stride(0), query.stride(1), key.stride(0),
        key.stride(1), key.stride(2), value.stride(0), value.stride(1), value.stride(2), seen.stride(0),
        seen.stride(1), SCALE=scale, GROUP=group, GROUP_PAD=group_pad, HEAD_DIM=head_dim, DIM_PAD=dim_pad,
        SPLIT=split, BLOCK_N=BLOCK, INTERLEAVE=INTERLEAVED if interleaved is None else interleaved,
        KV_HEADS=kv_heads)
    out = torch.empty((rows, heads, head_dim), device=query.device, dtype=query.dtype)
    _combine_splits[(rows * kv_heads, group)](acc, best, total, out, SPLITS=splits,
                                              SPLITS_PAD=_power_of_two_above(splits), GROUP=group,
                                              GROUP_PAD=group_pad, HEAD_DIM=head_dim, DIM_PAD=dim_pad)
    return out


def _power_of_two_above(n: int) -> int:
    """The smallest power of two ≥ n (plain Python, which torch.compile traces)."""
    return 1 << (n - 1).bit_length()


def prompt_mask_slots(config, length: int, cache_slots: int) -> int:
    """How many cache slots a prompt pass of ``length`` tokens into an emptied cache should give its mask: its
    own when this module serves ``config``'s attention (sdpa then reads only those keys), else the whole cache
    (sdpa's masks span every slot)."""
    return length if config._attn_implementation == DECODE_ATTENTION else cache_slots


def _attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None,
                       **kwargs):
    """transformers' attention-function signature: one token per row attending to a bool-masked cache (on a
    GPU; a batched step's rows each to their own slot) takes the kernel; everything else goes to sdpa, over only the first slots when the mask spans fewer
    than the cache (a prompt pass, prompt_mask_slots)."""
    if (query.shape[2] == 1 and (query.is_cuda or INTERPRETED)
            and query.dtype == torch.bfloat16  # the kernel writes bf16
            and query.stride(-1) == key.stride(-1) == value.stride(-1) == 1  # the kernel's loads assume it
            and isinstance(attention_mask, torch.Tensor) and attention_mask.dtype == torch.bool
            and attention_mask.shape[-1] == key.shape[2] and attention_mask.shape[-2] == 1
            and attention_mask.shape[0] == query.shape[0] and attention_mask.shape[1] == 1
            and not dropout and sliding_window is None and not kwargs.get("softcap")):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out = decode_attention_rows(query[:, :, 0], key, value, attention_mask[:, 0, 0], scale)
        return out[:, None], None  # (batch, tokens, heads, head_dim), as sdpa's
    if isinstance(attention_mask, torch.Tensor) and attention_mask.shape[-1] < key.shape[2]:
        key, value = key[:, :, :attention_mask.shape[-1]], value[:, :, :attention_mask.shape[-1]]
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  sliding_window=sliding_window, **kwargs)


def _kernel_agrees(layer) -> bool:
    """Whether the kernel builds on this GPU and gives sdpa's output for ``layer``'s head layout (a cache
    whose splits hold several blocks each, with empty slots and holes): else the layers keep sdpa rather
    than fail in a reply."""
    config = layer.config
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, layer.head_dim
    device = next(layer.parameters()).device
    generator = torch.Generator(device=device).manual_seed(0)
    slots = 40 * BLOCK  # more blocks than splits: each split rescales across blocks, as a real cache's do
    query, key, value = (torch.randn(shape, generator=generator, device=device, dtype=torch.bfloat16)
                         for shape in ((heads, head_dim), (kv_heads, slots, head_dim), (kv_heads, slots, head_dim)))
    seen = (torch.arange(slots, device=device) < 30 * BLOCK + 7) & (torch.arange(slots, device=device) % 5 != 3)
    try:
        with torch.inference_mode():
            ours = decode_attention(query, key, value, seen, layer.scaling).float()
            group = heads // kv_heads
            expected = torch.nn.functional.scaled_dot_product_attention(
                query[:, None].float(), key.repeat_interleave(group, 0).float(),
                value.repeat_interleave(group, 0).float(), attn_mask=seen, scale=layer.scaling)[:, 0]
    except Exception:  # noqa: BLE001 - any failure to build or run the kernel: sdpa serves
        log.warning("the decode-attention kernel does not run here; decode steps keep sdpa", exc_info=True)
        return False
    if not torch.allclose(ours, expected, rtol=2 ** -7, atol=1e-2):
        log.warning("the decode-attention kernel disagrees with sdpa here (%.3g); decode steps keep sdpa",
                    (ours - expected).abs().max().item())
        return False
    return True


def use_decode_attention(module: torch.nn.Module) -> Callable[[], None] | None:
    """Route the text attention layers of ``module`` (the thinker, the talker) that use sdpa through
    ``_attention_forward``. Returns a function that puts sdpa back, or None when nothing changed (no
    triton, no such layer on the current GPU, or a kernel that fails its check against sdpa here)."""
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerTextAttention

    layers = [m for m in module.modules() if isinstance(m, Qwen3OmniMoeThinkerTextAttention)]
    # One layer per config (the thinker's, the talker's): what gets checked, and switched.
    served = {id(layer.config): layer for layer in layers
              if layer.config._attn_implementation in ("sdpa", DECODE_ATTENTION)}.values()
    if triton is None or not served:
        return None
    current = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    if not INTERPRETED and {p.device for layer in layers for p in layer.parameters()} != {current}:
        return None  # Triton launches on the current device: layers spread over GPUs keep sdpa
    if not all(_kernel_agrees(layer) for layer in served):
        return None
    configs = [layer.config for layer in served]
    AttentionInterface.register(DECODE_ATTENTION, _attention_forward)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    for config in configs:
        config._attn_implementation = DECODE_ATTENTION

    def stock_attention() -> None:
        for config in configs:
            config._attn_implementation = "sdpa"
    return stock_attention
