"""The thinker's reply over a static KV cache: its prompt passes captured per length, then one compiled and
captured step per token (cuda_graphs.py says why)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from transformers import StaticCache
from transformers.modeling_outputs import MoeModelOutputWithPast

from backends.transformers.cuda_graphs import (PACK_MAX, captured, captured_each, compute_device,
                                               prompt_mask)
from backends.transformers.kernels.decode_attention import prompt_mask_slots

log = logging.getLogger(__name__)

THINKER_TOP_K_LIMIT = 256
"""The thinker samples among at most this many likeliest tokens (the UI's top-k goes to 200)."""


@dataclass(frozen=True)
class ThinkerSampling:
    """How ThinkerDecoder.generate draws a reply and when it ends: ``temperature`` 0 is greedy; the reply ends
    at ``eos_token_id`` or after ``max_new_tokens``. ``generator``: the source of the sampling noise (None:
    torch's default)."""

    temperature: float
    top_k: int
    top_p: float
    max_new_tokens: int
    eos_token_id: int
    generator: torch.Generator | None = None


class ThinkerDecoder:
    """The thinker's reply over a static KV cache: the prompt eagerly, then one captured step per token.

    A step is the token's embedding, the text model, ``lm_head`` and sampling, in one graph: in
    stock ``generate()`` the Python around each compiled step (input preparation, logits
    processors, stopping checks) took longer than the GPU's kernels (BENCHMARKS.md). Here the
    host only reads each token. Sampling is temperature, then top-k, then top-p, as
    ``generate()`` orders them, drawn with the Gumbel-max trick over noise from outside the graph;
    the checkpoint's repetition penalty, if it sets one, comes first, as in ``generate()``.

    Example::

        decoder = ThinkerDecoder(model.thinker, max_tokens=8192)
        decoder.compile()                               # CUDA: compile + capture; optional
        sampling = ThinkerSampling(temperature=0.7, top_k=20, top_p=0.8, max_new_tokens=1024, eos_token_id=...)
        decoder.generate(inputs, sampling, streamer=streamer, stop=threading.Event())
    """

    def __init__(self, thinker, max_tokens: int, prefill_lengths: tuple[int, ...] = (),
                 talker_layer: int | None = None):
        """``prefill_lengths``: prompt lengths compile() captures the text model's prompt pass for (the
        encoders stay eager); a prompt runs in the shortest that holds it, padded on the right.
        ``talker_layer``: the layer (1-based) whose prompt states the talker reads; a captured pass keeps them."""
        self.thinker, self.max_tokens = thinker, max_tokens
        device = compute_device(thinker)
        self.cache = StaticCache(config=thinker.config.text_config, max_cache_len=max_tokens)
        self.prefill_lengths = sorted(n for n in set(prefill_lengths) if 0 < n < max_tokens)
        self.talker_layer = talker_layer
        text_config = thinker.config.text_config
        longest = max(self.prefill_lengths, default=0)
        self.prompt_in = torch.zeros((1, longest, text_config.hidden_size), device=device, dtype=thinker.dtype)
        self.prompt_positions = torch.zeros((3, 1, longest), device=device, dtype=torch.long)
        self.prompt_last = torch.zeros((PACK_MAX,), device=device, dtype=torch.long)
        """The positions whose states a pass returns: a prompt's last (repeated), or each packed prompt's."""
        self.prompt_segments = torch.zeros((max_tokens,), device=device, dtype=torch.long)
        """Which prompt each position belongs to: a position attends only to its own prompt's (all 0 but in
        a packed pass)."""
        # DeepStack's vision features, added to the first layers' states at image and video positions: here
        # as dense rows (zeros elsewhere), because selecting those positions in a graph is a host sync.
        deepstack_layers = len(getattr(thinker.config.vision_config, "deepstack_visual_indexes", ()) or ())
        # The talker layer's prompt states, one buffer for every captured length (else each graph keeps its own).
        self.talker_states_out = torch.zeros((1, longest, text_config.hidden_size), device=device,
                                             dtype=thinker.dtype) if talker_layer is not None else None
        self.deepstack_in = torch.zeros((deepstack_layers, 1, longest, text_config.hidden_size), device=device,
                                        dtype=thinker.dtype)
        self._text_forward = thinker.model.forward  # the real one, while a prompt pass stands in for it
        self._prefills: dict = {}
        """Prompt length → its padded prompt pass (captured on CUDA); filled by compile()."""
        self.limit = min(THINKER_TOP_K_LIMIT, thinker.config.text_config.vocab_size)
        # Inputs of the captured step live at fixed addresses.
        self.token_in = torch.zeros((1, 1), device=device, dtype=torch.long)
        self.rope_delta = torch.zeros((1, 1), device=device, dtype=torch.long)
        self.temperature = torch.ones((1, 1), device=device)
        self.top_k = torch.full((1, 1), self.limit, device=device, dtype=torch.long)
        self.top_p = torch.ones((1, 1), device=device)
        self.uniform = torch.full((1, self.limit), 0.5, device=device)
        self.seen = torch.zeros((1, thinker.config.text_config.vocab_size), device=device, dtype=torch.bool)
        """Tokens of the prompt and the reply so far: the ones the repetition penalty applies to."""
        self.repetition_penalty = float(getattr(thinker.generation_config, "repetition_penalty", None) or 1.0)
        self._step = self._step_fn
        self.compiled = False
        # One capture stream for the step and the prompt passes (replayed one after another by one thread):
        # they share the cuBLAS workspace PyTorch keeps per stream.
        self.capture_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.replies = 0
        """Replies decoded so far (which cache served a turn)."""
        self.overlap = True
        """Launch each step before the host reads the token before it (the GPU computes while the host streams)."""
        on_gpu = device.type == "cuda"
        self.token_out = torch.zeros((1, 1), dtype=torch.long, pin_memory=on_gpu)
        self._token_copied = torch.cuda.Event() if on_gpu else None
        with torch.inference_mode():  # StaticCache allocates on its first write: now, outside any graph
            self._step_fn()
            self.cache.reset()

    def fits(self, prompt_tokens: int, max_new_tokens: int) -> bool:
        return prompt_tokens + max_new_tokens <= self.max_tokens

    @torch.inference_mode()
    def generate(self, inputs: dict, sampling: ThinkerSampling, streamer, stop,
                 prompt_states: dict | None = None) -> None:
        """Streams the reply's token ids into ``streamer`` (prompt first, as generate() does), the
        last one being ``sampling.eos_token_id`` unless its ``max_new_tokens`` or ``stop`` ended it first.
        ``prompt_states``: gets ``"hidden"``, the prompt's states at ``talker_layer``, before the first
        token (speech.capture_prompt_hidden's dict)."""
        started = time.perf_counter()
        token = self.begin(inputs, sampling, prompt_states)
        prompt_launched = time.perf_counter()
        streamer.put(inputs["input_ids"].cpu())
        greedy = sampling.temperature <= 0
        self._copy_to_host(token)
        for produced in range(1, sampling.max_new_tokens + 1):
            launched = self.overlap and produced < sampling.max_new_tokens
            if launched:  # the next step reads this token on the GPU: it needn't wait for the host
                token = self._launch_step(token, greedy, sampling.generator)
            token_id = self._host_token()
            if produced == 1:
                log.debug("thinker: prompt pass launched in %.1f ms (encoders included), first token on the host "
                          "%.1f ms after it began", (prompt_launched - started) * 1e3,
                          (time.perf_counter() - started) * 1e3)
            streamer.put(torch.tensor([token_id]))
            # An end seen here leaves the launched step's token unread (a step's worth of GPU time per reply).
            if token_id == sampling.eos_token_id or produced == sampling.max_new_tokens or stop.is_set():
                return
            if not launched:
                token = self._launch_step(token, greedy, sampling.generator)
            self._copy_to_host(token)

    @torch.inference_mode()
    def begin(self, inputs: dict, sampling: ThinkerSampling, prompt_states: dict | None = None) -> torch.Tensor:
        """A reply's prompt pass with ``sampling``'s settings: its first token, (1, 1) on the device. Then
        ``advance`` gives one more per call (the batched loop drives a lone reply so; generate() does too)."""
        self.replies += 1
        greedy = sampling.temperature <= 0
        self.temperature.fill_(1.0 if greedy else sampling.temperature)
        self.top_k.fill_(self.limit if greedy else max(1, min(sampling.top_k, self.limit)))
        self.top_p.fill_(1.0 if greedy else sampling.top_p)
        self.uniform.fill_(0.5)  # the same noise everywhere: argmax
        self.seen.zero_()
        self.seen.scatter_(1, inputs["input_ids"], True)
        self.cache.reset()
        logits = self._prompt_pass(inputs, prompt_states)
        # The steps read their 3D rope position as "tokens cached + delta", inside the graph.
        self.rope_delta.copy_(self.thinker.rope_deltas.reshape(1, 1))
        if not greedy:
            self.uniform.uniform_(generator=sampling.generator)
        return self._sample(logits)

    @torch.inference_mode()
    def advance(self, token: torch.Tensor, sampling: ThinkerSampling) -> torch.Tensor:
        """The token after ``token`` (begin()'s or the last advance()'s), (1, 1) on the device; valid until the
        next call."""
        return self._launch_step(token, sampling.temperature <= 0, sampling.generator)

    @property
    def filled(self) -> torch.Tensor:
        """Tokens in the cache (a 0-d tensor on the device)."""
        return self.cache.layers[0].cumulative_length

    def _launch_step(self, token: torch.Tensor, greedy: bool, generator: torch.Generator | None) -> torch.Tensor:
        self.token_in.copy_(token)
        if not greedy:
            self.uniform.uniform_(generator=generator)
        return self._step()  # the graph's output buffer: its next replay overwrites it

    def _copy_to_host(self, token: torch.Tensor) -> None:
        """Queue the token's copy to the host behind the step that makes it (before the next step overwrites it)."""
        self.token_out.copy_(token, non_blocking=self._token_copied is not None)
        if self._token_copied is not None:
            self._token_copied.record()

    def _host_token(self) -> int:
        if self._token_copied is not None:
            self._token_copied.synchronize()
        return int(self.token_out)

    def _prompt_pass(self, inputs: dict, prompt_states: dict | None) -> torch.Tensor:
        """The prompt into the cache; returns the last position's logits (1, vocab).

        The thinker's own forward runs (encoders, merging media into the embeddings, 3D rope), and
        when a captured length holds the prompt, its text model is that captured pass.
        """
        length = inputs["input_ids"].shape[1]
        padded = next((n for n in self._prefills if n >= length), None)
        if padded is None:
            return self.thinker(**inputs, past_key_values=self.cache, use_cache=True).logits[:, -1]
        kept: dict = {}

        def captured_text_model(inputs_embeds, position_ids, deepstack_visual_embeds=None, visual_pos_masks=None,
                                **_):
            self.prompt_in[:, :length].copy_(inputs_embeds)
            self.prompt_in[:, length:padded].zero_()
            self.prompt_positions[..., :length].copy_(position_ids)
            self.prompt_positions[..., length:padded].zero_()
            self.deepstack_in.zero_()
            for layer, embeds in enumerate(deepstack_visual_embeds or ()):
                self.deepstack_in[layer, :, :length][visual_pos_masks] = embeds.to(self.deepstack_in.dtype)
            self.prompt_last.fill_(length - 1)
            hidden, kept["layer"] = self._prefills[padded]()
            hidden = hidden[:, -1:]
            for cache_layer in self.cache.layers:  # the padding's keys: overwritten by the steps, masked until then
                cache_layer.cumulative_length.fill_(length)
            return MoeModelOutputWithPast(last_hidden_state=hidden)  # the last position: all the logits needed

        text_model = self.thinker.model
        text_model.forward = captured_text_model  # an instance attribute: the thinker's forward calls it
        try:
            logits = self.thinker(**inputs, past_key_values=self.cache, use_cache=True).logits[:, -1]
        finally:
            del text_model.forward
        if prompt_states is not None and kept["layer"] is not None and "hidden" not in prompt_states:
            prompt_states["hidden"] = kept["layer"][:, :length].clone()  # the graph overwrites its own
        return logits

    # The functions below read and write only the fixed buffers and the cache: they get captured.

    def _prefill_fn(self, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The padded prompt pass of ``length``: (the states at ``prompt_last``, (1, PACK_MAX, hidden): a lone
        prompt's last position repeated, or each packed prompt's; the talker layer's states)."""
        kept: dict = {}
        handle = None
        if self.talker_layer is not None:
            def keep(module, args, output):
                kept["layer"] = output[0] if isinstance(output, tuple) else output

            handle = self.thinker.model.layers[self.talker_layer - 1].register_forward_hook(keep)
        try:
            with self.dense_deepstack():
                hidden = self._text_pass(length)
        finally:
            if handle is not None:
                handle.remove()
        layer = kept.get("layer")
        if layer is not None and self.talker_states_out is not None:
            layer = self.talker_states_out[:, :length].copy_(layer)
        return hidden, layer

    @contextlib.contextmanager
    def dense_deepstack(self) -> Iterator[None]:
        """The text model adds DeepStack's features as dense rows (``deepstack_in``) meanwhile."""
        self.thinker.model._deepstack_process = _add_dense_deepstack
        try:
            yield
        finally:
            del self.thinker.model._deepstack_process

    def _text_pass(self, length: int) -> torch.Tensor:
        return self._text_model(self.prompt_in[:, :length], self.prompt_positions[..., :length],
                                list(self.deepstack_in[:, :, :length]))

    def _text_model(self, embeds: torch.Tensor, positions: torch.Tensor, deepstack: list) -> torch.Tensor:
        """The text model over a prompt (or packed prompts) into the emptied cache: the states at
        ``prompt_last``, (1, PACK_MAX, hidden)."""
        for layer in self.cache.layers:  # from the start, whatever ran before (capture runs it several times)
            layer.cumulative_length.zero_()
        length = embeds.shape[1]
        slots = prompt_mask_slots(self.thinker.model.config, length, self.max_tokens)
        segments = self.prompt_segments
        mask = prompt_mask(length, slots, embeds.device) & (segments[:length, None] == segments[None, :slots])
        out = self._text_forward(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                 past_key_values=self.cache, use_cache=True, deepstack_visual_embeds=deepstack)
        return out.last_hidden_state.index_select(1, self.prompt_last)

    def _step_fn(self) -> torch.Tensor:
        position = self.cache.layers[0].cumulative_length + self.rope_delta  # (1, 1)
        embeds = self.thinker.get_input_embeddings()(self.token_in)
        hidden = self.thinker.model(inputs_embeds=embeds, past_key_values=self.cache,
                                    position_ids=position.view(1, 1, 1).expand(3, 1, 1),
                                    use_cache=True).last_hidden_state
        return self._sample(self.thinker.lm_head(hidden[:, -1]))

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        """(1, 1) long; the token joins those the repetition penalty applies to."""
        return sample_rows(logits, self.seen, self.temperature, self.top_k, self.top_p, self.uniform, self.limit,
                           self.repetition_penalty)

    def compile(self) -> float:
        """torch.compile the step (fullgraph) and, on CUDA, capture it as a CUDA graph, then capture the
        prompt passes of ``prefill_lengths`` (eager kernels; plain functions on the CPU); returns the seconds
        it took. If that fails, the step stays eager (slower, same tokens)."""
        started = time.perf_counter()
        try:
            step = torch.compile(self._step_fn, fullgraph=True, dynamic=False)
            with torch.inference_mode():
                if self.token_in.device.type == "cuda":
                    self._step = captured(step, stream=self.capture_stream)
                else:
                    step()  # compile now, not during the first reply
                    self._step = step
            self.compiled = True
        except Exception:
            log.exception("compiling the thinker's step failed; it runs eagerly (slower, same answers)")
            self._step = self._step_fn
        self.capture_prompt_passes()
        return time.perf_counter() - started

    @property
    def prompt_pool(self):
        """The memory pool of the captured prompt passes (None if none are captured): graphs replayed by this
        thread just before a prompt pass, like the encoders', may share it."""
        return next((getattr(run, "pool", None) for run in self._prefills.values()), None)

    def capture_prompt_passes(self) -> None:
        """The text model's prompt pass for each of ``prefill_lengths``: eager kernels captured as CUDA graphs
        (plain functions on the CPU), like the talker's (TalkerDecoder.capture_prompt_passes says why)."""
        device = self.token_in.device
        before = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        self.prompt_last.zero_()  # a shorter pass indexes its last position: not an earlier prompt's
        self._prefills = captured_each(self._prefill_fn, self.prefill_lengths, device, "the thinker's prompt pass",
                                       self.capture_stream)
        if before and self._prefills:
            log.info("the thinker's %d captured prompt passes (%d-slot cache) hold %.2f GB", len(self._prefills),
                     self.max_tokens, (torch.cuda.memory_allocated() - before) / 1e9)
        with torch.inference_mode():
            self.cache.reset()


def sample_rows(logits: torch.Tensor, seen: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                top_p: torch.Tensor, uniform: torch.Tensor, limit: int, repetition_penalty: float) -> torch.Tensor:
    """One token per row, (rows, 1) long: repetition penalty over ``seen``, temperature, top-k, top-p, then the
    Gumbel-max draw over ``uniform`` (argmax with constant noise), each row with its own settings (rows, 1).
    The token joins ``seen``. A batched step and a lone reply draw with this same function, so a row's token
    depends only on its own logits and noise."""
    logits = logits.float()
    if repetition_penalty != 1.0:
        penalized = torch.where(logits < 0, logits * repetition_penalty, logits / repetition_penalty)
        logits = torch.where(seen, penalized, logits)
    values, indices = (logits / temperature).topk(limit, dim=-1)  # descending
    ranks = torch.arange(limit, device=values.device)
    values = values.masked_fill(ranks >= top_k, -math.inf)
    probs = values.softmax(dim=-1)
    # transformers' TopPLogitsWarper drops a token once the likelier ones already hold top_p of the mass.
    values = values.masked_fill((probs.cumsum(dim=-1) - probs >= top_p) & (top_p < 1), -math.inf)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7)))
    token = indices.gather(-1, (values + gumbel).argmax(dim=-1, keepdim=True))
    seen.scatter_(1, token, True)
    return token


def _add_dense_deepstack(hidden_states: torch.Tensor, visual_pos_masks, visual_embeds: torch.Tensor) -> torch.Tensor:
    """transformers' DeepStack step (features added at the visual positions), over dense rows that are
    zero elsewhere: the same sums, with no position selection (a host sync) inside a graph."""
    return hidden_states + visual_embeds

