"""The thinker's MoE layer for the few tokens of a decode step (one reply's, or one per reply of a batched
step), in Triton kernels.

transformers' ``grouped_mm`` experts path is built for many tokens: for one token it sorts the 8
expert ids, counts them per expert (``histc``), gathers, runs two grouped GEMMs over all 128
experts' offsets and scatters back, about ten kernels per layer, and its GEMMs were the largest
kernel of a decode step. With one token each expert's projection is a matrix-vector product, so here,
for each token (the kernels' programs cover every token's chosen experts at once):

1. ``_route``: the router's softmax, top-k and renormalization (after its logits' GEMM), one kernel
   instead of softmax, top-k, the top-k's sort and a division (12 µs a layer on an H200);
2. ``_gate_up_act``: for each chosen expert, ``silu(x @ gate.T) * (x @ up.T)``;
3. ``_down_each``: for each chosen expert and output row, the routing-weighted ``h_e @ down_e.T``, summed
   over the experts after (``_down_sum``: the sum in the kernel, fewer programs).

Expert ids are read on the GPU, so the kernels can sit inside a CUDA graph. Rounding follows
the stock path (bf16 after each projection, the activation and the product; the sum over experts in
fp32), so outputs agree within bf16 noise. With several tokens, an expert two of them chose is read
by the programs of both, at about the same time (program order puts the same output rows of every
(token, expert) pair together, so the second read tends to hit the L2 cache); grouped_mm reads each
expert once but pays its sorting and grouping. Above a bound (``FUSED_MAX_TOKENS``, or the engine's batch
slots if more: ``use_fused_decode_experts``), as in prompt passes, and on the CPU, transformers' own
implementation serves. On an H200, compiled and captured as in a decode step, a layer took
50.0 µs of kernels against grouped_mm's 74.4 µs with the first tiles; the experts 27 µs with today's
(BENCHMARKS.md, benchmarks/moe_decode.py).

Example::

    use_fused_decode_experts(model.thinker)   # the thinker's decode steps now take this path
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, grouped_mm_experts_forward

FUSED_EXPERTS = "omni_fused_decode"
"""The name our implementation is registered under in transformers' ExpertsInterface."""


try:  # triton comes with CUDA builds of torch; without it the stock experts path serves
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - a CPU-only torch build
    triton = None

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
"""Triton's interpreter runs the kernels on CPU tensors (slowly): how the CPU tests check them."""

if triton is not None:
    @triton.jit
    def round_to_bf16(x):
        """fp32 rounded to the nearest bf16 (ties to even), kept in fp32: the stock path's rounding after each
        op. Done on the bits, because Triton's interpreter (the CPU tests) truncates in casts."""
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def _gate_up_act(x_ptr, weight_ptr, ids_ptr, h_ptr, hidden: tl.constexpr, inter: tl.constexpr,
                     TOP_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        slot = tl.program_id(0)  # which (token, chosen expert) pair: the token's TOP_K pairs are consecutive
        rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        x_ptr += (slot // TOP_K) * hidden
        expert = tl.load(ids_ptr + slot).to(tl.int64)
        gate_rows = weight_ptr + expert * (2 * inter * hidden) + rows[:, None] * hidden
        up_rows = gate_rows + inter * hidden
        row_ok = rows[:, None] < inter
        gate = tl.zeros([BLOCK_N], dtype=tl.float32)
        up = tl.zeros([BLOCK_N], dtype=tl.float32)
        for start in range(0, hidden, BLOCK_K):
            cols = start + tl.arange(0, BLOCK_K)
            ok = row_ok & (cols[None, :] < hidden)
            x = tl.load(x_ptr + cols, mask=cols < hidden, other=0.0).to(tl.float32)[None, :]
            gate += tl.sum(tl.load(gate_rows + cols[None, :], mask=ok, other=0.0).to(tl.float32) * x, axis=1)
            up += tl.sum(tl.load(up_rows + cols[None, :], mask=ok, other=0.0).to(tl.float32) * x, axis=1)
        gate = round_to_bf16(gate)
        h = round_to_bf16(round_to_bf16(gate * tl.sigmoid(gate)) * round_to_bf16(up))
        tl.store(h_ptr + slot * inter + rows, h.to(tl.bfloat16), mask=rows < inter)

    @triton.jit
    def _down_part(h_ptr, weight_ptr, ids_ptr, routing_ptr, slot, rows, hidden: tl.constexpr, inter: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        """One chosen expert's routing-weighted down projection for ``rows``, rounded as the stock path does."""
        expert = tl.load(ids_ptr + slot).to(tl.int64)
        weight_rows = weight_ptr + expert * (hidden * inter) + rows[:, None] * inter
        row_ok = rows[:, None] < hidden
        part = tl.zeros([BLOCK_M], dtype=tl.float32)
        for start in range(0, inter, BLOCK_K):
            cols = start + tl.arange(0, BLOCK_K)
            h = tl.load(h_ptr + slot * inter + cols, mask=cols < inter, other=0.0).to(tl.float32)[None, :]
            w = tl.load(weight_rows + cols[None, :], mask=row_ok & (cols[None, :] < inter), other=0.0)
            part += tl.sum(w.to(tl.float32) * h, axis=1)
        routing = tl.load(routing_ptr + slot).to(tl.float32)
        return round_to_bf16(round_to_bf16(part) * routing)

    @triton.jit
    def _down_sum(h_ptr, weight_ptr, ids_ptr, routing_ptr, out_ptr, hidden: tl.constexpr, inter: tl.constexpr,
                  TOP_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        token = tl.program_id(1)
        total = tl.zeros([BLOCK_M], dtype=tl.float32)
        for pick in tl.static_range(TOP_K):
            total += _down_part(h_ptr, weight_ptr, ids_ptr, routing_ptr, token * TOP_K + pick, rows, hidden, inter,
                                BLOCK_M, BLOCK_K)
        tl.store(out_ptr + token * hidden + rows, round_to_bf16(total).to(tl.bfloat16), mask=rows < hidden)

    @triton.jit
    def _down_each(h_ptr, weight_ptr, ids_ptr, routing_ptr, parts_ptr, hidden: tl.constexpr, inter: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
        """``_down_sum`` with each chosen expert in programs of its own (top_k times as many in flight): the
        fp32 parts are summed after."""
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        slot = tl.program_id(1)
        part = _down_part(h_ptr, weight_ptr, ids_ptr, routing_ptr, slot, rows, hidden, inter, BLOCK_M, BLOCK_K)
        tl.store(parts_ptr + slot * hidden + rows, part, mask=rows < hidden)

    @triton.jit
    def _route(logits_ptr, weights_ptr, ids_ptr, experts: tl.constexpr, BLOCK: tl.constexpr, TOP_K: tl.constexpr,
               TOP_BLOCK: tl.constexpr, NORMALIZE: tl.constexpr):
        """A token's router after its logits (a program per token): softmax in fp32, the TOP_K likeliest experts
        (likeliest first, the lower id first on ties) and their probabilities, renormalized to sum to 1 when
        NORMALIZE."""
        token = tl.program_id(0)
        logits_ptr += token * experts
        weights_ptr += token * TOP_K
        ids_ptr += token * TOP_K
        lanes = tl.arange(0, BLOCK)
        logits = tl.load(logits_ptr + lanes, mask=lanes < experts, other=-float("inf")).to(tl.float32)
        exps = tl.exp(logits - tl.max(logits, axis=0))
        probs = tl.where(lanes < experts, exps / tl.sum(exps, axis=0), -1.0)
        picks = tl.arange(0, TOP_BLOCK)
        top = tl.zeros([TOP_BLOCK], dtype=tl.float32)
        for pick in tl.static_range(TOP_K):
            best = tl.argmax(probs, axis=0, tie_break_left=True)
            top = tl.where(picks == pick, tl.max(probs, axis=0), top)
            tl.store(ids_ptr + pick, best.to(tl.int64))
            probs = tl.where(lanes == best, -1.0, probs)
        if NORMALIZE:
            top = top / tl.sum(top, axis=0)
        tl.store(weights_ptr + picks, round_to_bf16(top).to(tl.bfloat16), mask=picks < TOP_K)


FUSED_MAX_TOKENS = 8
"""Tokens a layer call may have for the kernels by default (a batched decode step has one per row: 8 rows by
default); more (a prompt pass) go to grouped_mm, which reads each chosen expert once for all its tokens."""

BLOCKS = {"gate_up_rows": 4, "gate_up_k": 1024, "gate_up_warps": 4,
          "down_rows": 4, "down_k": 256, "down_warps": 4, "down_split": True}
"""Tiles and launch sizes: rows of output per program (one token: many small programs keep every SM reading),
the inner loop's width, warps per program, and whether each chosen expert's down projection gets programs
of its own (summed after) or one program sums all of them. The fastest of a sweep on an H200
(``benchmarks/moe_decode.py --sweep``, BENCHMARKS.md): 27 µs of kernels per layer against 34 for 8/256/4 rows
and no split."""


def fused_decode_experts(hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor,
                         gate_up_proj: torch.Tensor, down_proj: torch.Tensor, blocks: dict = BLOCKS) -> torch.Tensor:
    """A few tokens' experts: ``hidden_states`` (tokens, hidden), ``top_k_index``/``top_k_weights`` (tokens,
    top_k), ``gate_up_proj`` (experts, 2 * inter, hidden), ``down_proj`` (experts, hidden, inter) → (tokens,
    hidden)."""
    tokens, top_k = top_k_index.shape
    inter, hidden = down_proj.shape[-1], hidden_states.shape[-1]
    x = hidden_states.contiguous()
    ids = top_k_index.reshape(-1).contiguous()
    routing = top_k_weights.reshape(-1).to(hidden_states.dtype).contiguous()
    pairs = tokens * top_k
    h = torch.empty((pairs, inter), device=x.device, dtype=x.dtype)
    _gate_up_act[(pairs, -(-inter // blocks["gate_up_rows"]))](
        x, gate_up_proj, ids, h, hidden, inter, TOP_K=top_k, BLOCK_N=blocks["gate_up_rows"],
        BLOCK_K=blocks["gate_up_k"], num_warps=blocks["gate_up_warps"])
    row_blocks = -(-hidden // blocks["down_rows"])
    if blocks["down_split"]:
        parts = torch.empty((pairs, hidden), device=x.device, dtype=torch.float32)
        _down_each[(row_blocks, pairs)](h, down_proj, ids, routing, parts, hidden, inter,
                                        BLOCK_M=blocks["down_rows"], BLOCK_K=blocks["down_k"],
                                        num_warps=blocks["down_warps"])
        # fp32, rounded once (compiled: fused into what follows)
        return parts.view(tokens, top_k, hidden).sum(dim=1).to(x.dtype)
    out = torch.empty((tokens, hidden), device=x.device, dtype=x.dtype)
    _down_sum[(row_blocks, tokens)](h, down_proj, ids, routing, out, hidden, inter, TOP_K=top_k,
                                    BLOCK_M=blocks["down_rows"], BLOCK_K=blocks["down_k"],
                                    num_warps=blocks["down_warps"])
    return out


def supports_fused(experts) -> bool:
    """Whether ``experts`` has the layout, dtype and activation the kernels assume, and serves through
    transformers' grouped_mm (the path every other shape keeps)."""
    return (experts.gate_up_proj.dtype == torch.bfloat16 and getattr(experts, "has_gate", False)
            and not getattr(experts, "has_bias", True) and not getattr(experts, "is_transposed", True)
            and getattr(experts, "is_concatenated", False) and getattr(experts.config, "hidden_act", None) == "silu"
            and experts.config._experts_implementation in ("grouped_mm", FUSED_EXPERTS))


def _experts_forward(experts, hidden_states, top_k_index, top_k_weights):
    """transformers' experts-forward signature: the fused kernels for a decode step's tokens on a GPU, else
    grouped_mm."""
    if hidden_states.shape[0] <= experts.fused_max_tokens and (hidden_states.is_cuda or INTERPRETED) \
            and triton is not None:
        return fused_decode_experts(hidden_states, top_k_index, top_k_weights, experts.gate_up_proj,
                                    experts.down_proj)
    return grouped_mm_experts_forward(experts, hidden_states, top_k_index, top_k_weights)


def decode_route(router, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """transformers' TopKRouter.forward: (logits, top_k weights, top_k ids). For a decode step's tokens on a GPU
    the softmax, top-k and renormalization run in one kernel (``_route``) instead of four, sort included."""
    hidden_states = hidden_states.reshape(-1, router.hidden_dim)
    tokens = hidden_states.shape[0]
    if tokens > router.fused_max_tokens or not (hidden_states.is_cuda or INTERPRETED):
        return type(router).forward(router, hidden_states)
    logits = torch.nn.functional.linear(hidden_states, router.weight).contiguous()
    weights = torch.empty((tokens, router.top_k), device=logits.device, dtype=logits.dtype)
    ids = torch.empty((tokens, router.top_k), device=logits.device, dtype=torch.long)
    _route[(tokens,)](logits, weights, ids, router.num_experts, BLOCK=triton.next_power_of_2(router.num_experts),
                 TOP_K=router.top_k, TOP_BLOCK=triton.next_power_of_2(router.top_k), NORMALIZE=router.norm_topk_prob)
    return logits, weights, ids


def _routes_alike(router) -> bool:
    """A router with the layout, dtype and forward ``decode_route`` stands in for."""
    return (type(router).forward.__qualname__.endswith("TopKRouter.forward")
            and not hasattr(router, "_hf_hook")  # accelerate's device hooks wrap forward: leave those alone
            and getattr(router, "weight", None) is not None and router.weight.dtype == torch.bfloat16
            and all(hasattr(router, name) for name in ("top_k", "num_experts", "norm_topk_prob", "hidden_dim")))


def use_fused_decode_experts(module: torch.nn.Module, max_tokens: int = FUSED_MAX_TOKENS) -> Callable[[], None] | None:
    """Route the MoE layers in ``module`` (e.g. the thinker) through ``decode_route`` and ``_experts_forward``,
    which take the kernels for calls of up to ``max_tokens`` tokens. A batched step compiled with a symbolic
    batch needs every batch size on the same side of that bound (else torch.compile refuses the range it was
    given): the engine passes at least its batch slots.

    Returns a function that puts transformers' router and grouped_mm back, or None (nothing changed) when
    triton is missing or a layer doesn't fit the kernels' assumptions.
    """
    experts = [m for m in module.modules() if hasattr(m, "gate_up_proj") and hasattr(m, "down_proj")]
    routers = [m.gate for m in module.modules() if getattr(m, "experts", None) in experts]
    if triton is None or not experts or not all(supports_fused(e) for e in experts) \
            or len(routers) != len(experts) or not all(_routes_alike(r) for r in routers):
        return None
    # Triton launches on the current device: layers spread over several GPUs keep the stock path.
    current = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    if not INTERPRETED and {e.gate_up_proj.device for e in experts} != {current}:
        return None
    ALL_EXPERTS_FUNCTIONS.register(FUSED_EXPERTS, _experts_forward)
    for part in experts + routers:
        part.fused_max_tokens = max_tokens
    for e in experts:
        e.config._experts_implementation = FUSED_EXPERTS
    for router in routers:
        router.forward = decode_route.__get__(router)

    def stock_experts() -> None:
        for e in experts:
            e.config._experts_implementation = "grouped_mm"
        for router in routers:
            del router.forward
    return stock_experts
