"""The talker's decode step and its code predictor's frame over static KV caches, compiled and captured as
CUDA graphs on a GPU (cuda_graphs.py says why); its prompt passes captured per length."""

from __future__ import annotations

import logging
import math
import time

import torch
from transformers import StaticCache

from backends.transformers.cuda_graphs import (PACK_MAX, captured, captured_each, compute_device,
                                               prompt_mask)
from backends.transformers.kernels.decode_attention import prompt_mask_slots

log = logging.getLogger(__name__)

PREDICTOR_TOP_K = 50
PREDICTOR_TOP_P = 0.8
"""Stock generate()'s code predictor sampling (temperature 1)."""


class TalkerDecoder:
    """Example::

        decoder = TalkerDecoder(model.talker, max_tokens=12_000, prefill_lengths=(64, 128, 256))
        decoder.compile()                    # CUDA: compile + capture; optional
        logits, hidden = decoder.prefill(embeds, talker_input_ids, attention_mask, rope_inputs)
        codes, codec_embeds = decoder.predict(hidden, token_embed, generator=None)   # None: greedy
        logits, hidden = decoder.step(codec_embeds, text_embed)
    """

    def __init__(self, talker, max_tokens: int, prefill_lengths: tuple[int, ...] = ()):
        """``prefill_lengths``: prompt lengths compile() captures a prompt pass for; a prompt runs in the
        shortest that holds it, padded on the right (a causal model's earlier positions never see it)."""
        self.talker, self.predictor = talker, talker.code_predictor
        self.max_tokens = max_tokens
        self.prefill_lengths = sorted(n for n in set(prefill_lengths) if 0 < n < max_tokens)
        self.groups = talker.config.num_code_groups
        device, dtype = compute_device(talker), talker.dtype
        hidden = talker.config.text_config.hidden_size
        self.cache = StaticCache(config=talker.config.text_config, max_cache_len=max_tokens)
        # Two prompt rows (talker state, codebook 0) then 14 single steps.
        self.predictor_cache = StaticCache(config=self.predictor.config, max_cache_len=self.groups)
        # Inputs and outputs of the captured functions live at fixed addresses.
        self.codec_in = torch.zeros((1, 1, hidden), device=device, dtype=dtype)
        self.text_in = torch.zeros((1, 1, hidden), device=device, dtype=dtype)
        self.rope_delta = torch.zeros((1, 1), device=device, dtype=torch.long)
        self.talker_hidden_in = torch.zeros((1, 1, hidden), device=device, dtype=dtype)
        self.token_embed_in = torch.zeros((1, 1, hidden), device=device, dtype=dtype)
        self.uniform = torch.full((self.groups - 1, PREDICTOR_TOP_K), 0.5, device=device)
        longest = max(self.prefill_lengths, default=0)
        self.prompt_in = torch.zeros((1, longest, hidden), device=device, dtype=dtype)
        self.prompt_positions = torch.zeros((3, 1, longest), device=device, dtype=torch.long)
        self.prompt_last = torch.zeros((PACK_MAX,), device=device, dtype=torch.long)
        """The positions whose states a prompt pass returns: its last (repeated), or each packed prompt's."""
        self.prompt_segments = torch.zeros((max_tokens,), device=device, dtype=torch.long)
        """Which prompt each position belongs to: a position attends only to its own prompt's (all 0 but in a
        packed pass: batched/packed.py)."""
        self._prefills: dict = {}
        """Prompt length → its padded prompt pass (captured on CUDA); filled by compile()."""
        # Every predictor position is known in advance, so are its causal masks (the generic mask code
        # branches on the cache's position, which a graph can't).
        causal = torch.ones((self.groups, self.groups), dtype=torch.bool, device=device).tril()
        self.predictor_masks = [causal[None, None, :2]] + [causal[None, None, p : p + 1]
                                                           for p in range(2, self.groups)]
        self._step, self._predict = self._step_fn, self._predict_fn
        self.compiled = False
        # One capture stream for all the talker's graphs (steps, predictor, prompt passes): one thread replays
        # them one after another, so they may share the cuBLAS workspace PyTorch keeps per stream.
        self.capture_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._initialize_caches()

    def fits(self, prompt_tokens: int, frames: int) -> bool:
        return prompt_tokens + frames + 1 <= self.max_tokens

    @torch.inference_mode()
    def prefill(self, embeds: torch.Tensor, talker_input_ids: torch.Tensor, attention_mask: torch.Tensor,
                rope_inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The talker's prompt; returns (logits, last hidden state).

        In a captured pass of the shortest fitting length when compile() made them, else eagerly.
        """
        self.cache.reset()
        # The 3D rope positions walk the media grids on the host: outside any graph.
        positions = self.talker.compute_3d_position_ids(embeds, talker_input_ids=talker_input_ids,
                                                        attention_mask=attention_mask, past_key_values=None,
                                                        **rope_inputs)
        # The decode steps read their 3D rope position as "tokens cached + delta", inside the graph.
        self.rope_delta.copy_(self.talker.rope_deltas.reshape(1, 1))
        length = embeds.shape[1]
        padded = next((n for n in self._prefills if n >= length), None)
        if padded is None:
            hidden = self.talker.model(inputs_embeds=embeds, position_ids=positions, past_key_values=self.cache,
                                       use_cache=True).last_hidden_state[:, -1:]
            return self.talker.codec_head(hidden[:, -1]), hidden
        self.prompt_in[:, :length].copy_(embeds)
        self.prompt_in[:, length:padded].zero_()
        self.prompt_positions[..., :length].copy_(positions)
        self.prompt_positions[..., length:padded].zero_()
        self.prompt_last.fill_(length - 1)
        logits, hidden = self._prefills[padded]()
        logits, hidden = logits[-1:], hidden[:, -1:]
        # The padding's keys sit past the prompt: the next step overwrites them, and masks them until then.
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(length)
        return logits, hidden

    @torch.inference_mode()
    def step(self, codec_embeds: torch.Tensor, text_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One talker step; the outputs stay valid until the next step."""
        self.codec_in.copy_(codec_embeds)
        self.text_in.copy_(text_embed)
        return self._step()

    @torch.inference_mode()
    def predict(self, talker_hidden: torch.Tensor, token_embed: torch.Tensor,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The 15 residual codes of one frame, and the summed codec embedding the talker reads next.

        ``generator`` None: greedy. The outputs stay valid until the next call.
        """
        self.talker_hidden_in.copy_(talker_hidden)
        self.token_embed_in.copy_(token_embed)
        if generator is None:
            self.uniform.fill_(0.5)  # the same noise everywhere: argmax
        else:
            self.uniform.uniform_(generator=generator)
        return self._predict()

    # The functions below read and write only the fixed buffers and caches: they are what gets captured.

    def _prefill_fn(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._prompt_model(self.prompt_in[:, :length], self.prompt_positions[..., :length])

    def _prompt_model(self, embeds: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A prompt (or packed prompts) into the emptied cache: the logits (PACK_MAX, vocab) and states
        (1, PACK_MAX, hidden) at ``prompt_last``."""
        for layer in self.cache.layers:  # from the start, whatever ran before (capture runs it several times)
            layer.cumulative_length.zero_()
        length = embeds.shape[1]
        slots = prompt_mask_slots(self.talker.model.config, length, self.max_tokens)
        segments = self.prompt_segments
        mask = prompt_mask(length, slots, embeds.device) & (segments[:length, None] == segments[None, :slots])
        out = self.talker.model(inputs_embeds=embeds, past_key_values=self.cache, attention_mask=mask,
                                position_ids=positions, use_cache=True)
        hidden = out.last_hidden_state.index_select(1, self.prompt_last)
        return self.talker.codec_head(hidden[0]), hidden

    def _step_fn(self) -> tuple[torch.Tensor, torch.Tensor]:
        position = self.cache.layers[0].cumulative_length + self.rope_delta  # (1, 1)
        out = self.talker.model(inputs_embeds=self.codec_in + self.text_in, past_key_values=self.cache,
                                position_ids=position.view(1, 1, 1).expand(3, 1, 1), use_cache=True)
        hidden = out.last_hidden_state
        return self.talker.codec_head(hidden[:, -1]), hidden

    def _predict_fn(self) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.predictor_cache.layers:  # a new frame: earlier keys are masked out, not erased
            layer.cumulative_length.zero_()
        model = self.predictor.model
        state = model(inputs_embeds=torch.cat([self.talker_hidden_in, self.token_embed_in], dim=1),
                      attention_mask={"full_attention": self.predictor_masks[0]},
                      past_key_values=self.predictor_cache, use_cache=True).last_hidden_state[:, -1]
        embeds, codes = self.token_embed_in, []
        for group in range(self.groups - 1):
            code = _gumbel_pick(self.predictor.lm_head[group](state).float(), self.uniform[group])
            codes.append(code)
            code_embed = model.get_input_embeddings()[group](code)
            embeds = embeds + code_embed
            if group + 2 < self.groups:
                state = model(inputs_embeds=code_embed, attention_mask={"full_attention": self.predictor_masks[group + 1]},
                              past_key_values=self.predictor_cache, use_cache=True).last_hidden_state[:, -1]
        return torch.cat(codes, dim=1), embeds

    def _initialize_caches(self) -> None:
        """StaticCache allocates its tensors on the first write: do it now, outside any graph."""
        with torch.inference_mode():  # (its tensors are inference tensors: touch them only in inference mode)
            self._predict_fn()
            self._step_fn()
            self.cache.reset()

    def compile(self) -> float:
        """torch.compile both decode functions (fullgraph) and, on CUDA, capture each as a CUDA graph; then
        capture_prompt_passes().

        Returns the seconds it took. If that fails, the decoder stays eager (slower, same speech).
        """
        started = time.perf_counter()
        try:
            step = torch.compile(self._step_fn, fullgraph=True, dynamic=False)
            predict = torch.compile(self._predict_fn, fullgraph=True, dynamic=False)
            with torch.inference_mode():
                if self.codec_in.device.type == "cuda":
                    self._step, self._predict = captured(step, stream=self.capture_stream), \
                        captured(predict, stream=self.capture_stream)
                else:
                    step(), predict()  # compile now, not during the first reply
                    self._step, self._predict = step, predict
            self.compiled = True
        except Exception:
            log.exception("compiling the talker failed; it runs eagerly (slower, same speech)")
            self._step, self._predict = self._step_fn, self._predict_fn
        self.capture_prompt_passes()
        return time.perf_counter() - started

    def capture_prompt_passes(self) -> None:
        """The prompt pass of each of ``prefill_lengths``: eager kernels captured as CUDA graphs (plain
        functions on the CPU). A prompt's length varies, so compiling each would cost minutes; captured,
        the pass no longer waits on Python's kernel launches, which is most of its time."""
        on_gpu = self.codec_in.device.type == "cuda"
        before = torch.cuda.memory_allocated() if on_gpu else 0
        self.prompt_last.zero_()  # a shorter pass indexes its last position: not an earlier prompt's
        self._prefills = captured_each(self._prefill_fn, self.prefill_lengths, self.codec_in.device,
                                       "the talker's prompt pass", self.capture_stream)
        with torch.inference_mode():
            self.cache.reset()
        if on_gpu and self._prefills:
            log.info("the talker's %d captured prompt passes hold %.2f GB", len(self._prefills),
                     (torch.cuda.memory_allocated() - before) / 1e9)


def _gumbel_pick(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Top-k 50, top-p 0.8 sampling with the noise given; argmax when the noise is constant. (1, 1) long."""
    values, indices = logits.topk(PREDICTOR_TOP_K, dim=-1)  # descending
    probs = values.softmax(dim=-1)
    more_likely = probs.cumsum(dim=-1) - probs
    # transformers' TopPLogitsWarper drops a token once the likelier ones already hold top_p of the mass.
    values = values.masked_fill(more_likely >= PREDICTOR_TOP_P, -math.inf)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7)))
    choice = (values + gumbel).argmax(dim=-1, keepdim=True)
    return indices.gather(-1, choice)

