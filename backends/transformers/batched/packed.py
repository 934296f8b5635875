"""Several waiting replies' prompt passes as one pass of the thinker's (or the talker's) text model.

The thinker's prompts: each first runs the thinker's own forward up to its text model (``prompt_parts``: its
encoders, its media merged into the embeddings, its 3D rope positions), one prompt at a time. Their text then
goes through the text model packed into one sequence (``pack``): each position attends only to its own
prompt's earlier ones (the decoder's ``prompt_segments`` shape its mask) at its own rope positions, so each
prompt's keys, values and states are those of a pass of its own (the same values on the CPU; on a GPU, up to
the rounding of products of other shapes), and the MoE layers read their experts once for all the prompts
instead of once per prompt. The pass is one of the decoder's captured passes when one holds the packed
length, else eager. Each prompt's keys and values are then copied from its stretch of the decoder's cache
into its slot (``ThinkerBatch.admit_packed``). The talker's prompts likewise (``pack_talker``), once each
one's embeddings and 3D rope positions are known.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import MoeModelOutputWithPast

from backends.transformers.cuda_graphs import PACK_MAX
from backends.transformers.talker_decoder import TalkerDecoder
from backends.transformers.thinker_decoder import ThinkerDecoder


@dataclass
class PromptParts:
    """A prompt's text-model inputs: embeddings (1, n, hidden), 3D rope positions (3, 1, n), DeepStack's
    features as dense rows (layers, 1, n, hidden) and the rope offset its decode steps add."""

    embeds: torch.Tensor
    positions: torch.Tensor
    deepstack: torch.Tensor
    rope_delta: torch.Tensor

    @property
    def length(self) -> int:
        return self.embeds.shape[1]


@torch.inference_mode()
def prompt_parts(decoder: ThinkerDecoder, inputs: dict) -> PromptParts:
    """A prompt's text-model inputs: the thinker's own forward up to its text model (encoders, media merged
    into the embeddings, 3D rope positions), for ``pack``."""
    kept: dict = {}
    deepstack_layers = decoder.deepstack_in.shape[0]

    def text_model(inputs_embeds, position_ids, deepstack_visual_embeds=None, visual_pos_masks=None, **_):
        dense = inputs_embeds.new_zeros((deepstack_layers, *inputs_embeds.shape))
        for layer, embeds in enumerate(deepstack_visual_embeds or ()):
            dense[layer][visual_pos_masks] = embeds.to(dense.dtype)
        kept.update(embeds=inputs_embeds, positions=position_ids, deepstack=dense)
        return MoeModelOutputWithPast(last_hidden_state=inputs_embeds[:, -1:])  # the logits aren't used

    decoder.thinker.model.forward = text_model
    try:
        decoder.thinker(**inputs, use_cache=False)
    finally:
        del decoder.thinker.model.forward
    return PromptParts(kept["embeds"], kept["positions"], kept["deepstack"],
                       decoder.thinker.rope_deltas.reshape(-1)[0].clone())


@torch.inference_mode()
def pack(decoder: ThinkerDecoder, parts: list[PromptParts]) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    """Several prompts' text in one pass of ``decoder``'s text model into its cache, one after another, each
    attending only to itself at its own positions: (their last positions' logits (prompts, vocab), the
    talker layer's states over the pass (1, tokens, hidden) or None, where each prompt starts). A captured
    pass serves when one holds them all, else it runs eagerly."""
    try:  # whatever fails, the decoder's next lone prompt must find one segment again (the finally below)
        starts, total = mark_segments(decoder, [part.length for part in parts])
        embeds = torch.cat([part.embeds for part in parts], dim=1)
        positions = torch.cat([part.positions for part in parts], dim=2)
        deepstack = torch.cat([part.deepstack for part in parts], dim=2)
        padded = next((n for n in decoder._prefills if n >= total), None)
        if padded is not None:
            decoder.prompt_in[:, :total].copy_(embeds)
            decoder.prompt_in[:, total:padded].zero_()
            decoder.prompt_positions[..., :total].copy_(positions)
            decoder.prompt_positions[..., total:padded].zero_()
            decoder.deepstack_in.zero_()
            decoder.deepstack_in[:, :, :total].copy_(deepstack)
            hidden, layer = decoder._prefills[padded]()
            layer = layer[:, :total].clone() if layer is not None else None
        else:
            kept: dict = {}
            handle = None
            if decoder.talker_layer is not None:
                handle = decoder.thinker.model.layers[decoder.talker_layer - 1].register_forward_hook(
                    lambda module, args, output: kept.update(layer=output[0] if isinstance(output, tuple)
                                                             else output))
            try:
                with decoder.dense_deepstack():
                    hidden = decoder._text_model(embeds, positions, list(deepstack))
            finally:
                if handle is not None:
                    handle.remove()
            layer = kept.get("layer")
    finally:
        decoder.prompt_segments.zero_()  # a lone prompt is one segment
        decoder.prompt_last.zero_()
    return decoder.thinker.lm_head(hidden[0, :len(parts)]), layer, starts


@torch.inference_mode()
def pack_talker(decoder: TalkerDecoder, embeds: list[torch.Tensor], positions: list[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Several talker prompts (embeddings (1, n, hidden), 3D rope positions (3, 1, n)) in one pass of
    ``decoder``'s talker into its cache, as ``pack`` does the thinker's: (their last positions' logits
    (prompts, vocab), states (prompts, 1, hidden), where each prompt starts)."""
    try:  # as in pack: the segments are reset whatever fails
        starts, total = mark_segments(decoder, [e.shape[1] for e in embeds])
        joined, joined_positions = torch.cat(embeds, dim=1), torch.cat(positions, dim=2)
        padded = next((n for n in decoder._prefills if n >= total), None)
        if padded is not None:
            decoder.prompt_in[:, :total].copy_(joined)
            decoder.prompt_in[:, total:padded].zero_()
            decoder.prompt_positions[..., :total].copy_(joined_positions)
            decoder.prompt_positions[..., total:padded].zero_()
            logits, hidden = decoder._prefills[padded]()
        else:
            logits, hidden = decoder._prompt_model(joined, joined_positions)
    finally:
        decoder.prompt_segments.zero_()
        decoder.prompt_last.zero_()
    count = len(embeds)
    return logits[:count].clone(), hidden[0, :count, None].clone(), starts  # the graphs' outputs get reused


def mark_segments(decoder: ThinkerDecoder | TalkerDecoder, lengths: list[int]) -> tuple[list[int], int]:
    """Prompts of ``lengths``, one after another, for the decoder's next prompt pass: each position's prompt
    (``prompt_segments``) and each prompt's last position (``prompt_last``), the cache emptied; returns where
    each prompt starts, and their length in all."""
    assert 0 < len(lengths) <= PACK_MAX
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    total = sum(lengths)
    assert total <= decoder.max_tokens
    device = decoder.prompt_segments.device
    segments = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    decoder.prompt_segments[:total].copy_(segments)
    decoder.prompt_segments[total:].fill_(len(lengths))
    lasts = [start + length - 1 for start, length in zip(starts, lengths)]
    decoder.prompt_last.copy_(torch.tensor(lasts + lasts[-1:] * (PACK_MAX - len(lasts)), device=device))
    decoder.cache.reset()
    return starts, total
