"""The text attention's query, key and value projections as one matrix product (thinker and talker).

In a decode step each projection is a matrix-vector product, and the key and value ones are small (2 MB of
weights each in the thinker), so they cost about what launching a GEMM costs. Here each layer's three weights
become views of one (q + k + v, hidden) tensor, copied in once (no memory added), and the layer's forward
multiplies once and splits the result. The forward is transformers' own otherwise, line for line (q/k
norms, rope, the cache, the attention interface): only its first three lines change.

Example::

    stock_projections = fuse_attention_projections(model)   # every text attention layer projects once
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
    ALL_ATTENTION_FUNCTIONS,
    Qwen3OmniMoeThinkerTextAttention,
    apply_rotary_pos_emb,
    eager_attention_forward,
)


def _fused_forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                   attention_mask: torch.Tensor | None, past_key_values=None, **kwargs):
    """Qwen3OmniMoeThinkerTextAttention.forward with one product for q, k and v (``self.qkv_weight``)."""
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)
    query, key, value = torch.nn.functional.linear(hidden_states, self.qkv_weight).split(self.qkv_sizes, dim=-1)
    query_states = self.q_norm(query.view(hidden_shape)).transpose(1, 2)
    key_states = self.k_norm(key.view(hidden_shape)).transpose(1, 2)
    value_states = value.view(hidden_shape).transpose(1, 2)

    cos, sin = position_embeddings
    query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
    if past_key_values is not None:
        key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx)
    attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                          eager_attention_forward)
    attn_output, attn_weights = attention_interface(
        self, query_states, key_states, value_states, attention_mask,
        dropout=0.0 if not self.training else self.attention_dropout, scaling=self.scaling,
        sliding_window=self.sliding_window, **kwargs)
    attn_output = attn_output.reshape(*input_shape, -1).contiguous()
    return self.o_proj(attn_output), attn_weights


def _fusable(layer) -> bool:
    projections = (layer.q_proj, layer.k_proj, layer.v_proj)
    return (all(p.bias is None for p in projections)
            and not hasattr(layer, "_hf_hook")  # accelerate's device hooks wrap forward: leave those layers alone
            and len({(p.weight.device, p.weight.dtype, p.in_features) for p in projections}) == 1
            and type(layer).forward.__qualname__ == "Qwen3OmniMoeThinkerTextAttention.forward")


def fuse_attention_projections(module: torch.nn.Module) -> Callable[[], None] | None:
    """Give every text attention layer in ``module`` (thinker, talker) one q/k/v product. Returns a function that
    puts transformers' forward back (the weights stay views: same values), or None when nothing changed (a
    layer with biases, one under accelerate's device hooks, or one whose forward transformers changed since this
    was written)."""
    layers = [m for m in module.modules() if isinstance(m, Qwen3OmniMoeThinkerTextAttention)]
    if not layers or not all(_fusable(layer) for layer in layers):
        return None
    with torch.no_grad():
        for layer in layers:
            projections = (layer.q_proj, layer.k_proj, layer.v_proj)
            if not hasattr(layer, "qkv_weight"):
                fused = torch.cat([p.weight.detach() for p in projections])  # the old weights are freed below
                rows = 0
                for projection in projections:
                    count = projection.weight.shape[0]
                    projection.weight = torch.nn.Parameter(fused[rows:rows + count], requires_grad=False)
                    rows += count
                layer.qkv_weight = fused
                layer.qkv_sizes = [p.weight.shape[0] for p in projections]
            layer.forward = _fused_forward.__get__(layer)

    def stock_projections() -> None:
        for layer in layers:
            del layer.forward
    return stock_projections
