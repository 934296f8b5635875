"""Decode steps over static KV caches: the thinker's token, the talker's step, the code predictor's frame.

In eager mode each decode step is hundreds of small kernel launches, so the GPU waits on
Python: per 80 ms of speech the talker makes one step and its code predictor fifteen, and
the thinker one per token. Here every step runs over ``StaticCache`` tensors that never
move, from input buffers that never move, so on a GPU each can be compiled
(``torch.compile``, no graph breaks) and captured once as a CUDA graph: one replay per
thinker token, one per talker step, one per frame for all fifteen residual codebooks. On
the CPU the same functions run eagerly (or compiled, in tests), which is how the tests prove
the outputs equal stock ``generate()``'s.

Sampling inside a graph uses the Gumbel-max trick over noise drawn outside it (a graph
can't draw from a ``torch.Generator`` of ours); with constant noise it is argmax.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Iterator

import torch
from transformers import StaticCache
from transformers.modeling_outputs import MoeModelOutputWithPast

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
        self.prompt_last = torch.zeros((1,), device=device, dtype=torch.long)
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
        for layer in self.cache.layers:  # from the start, whatever ran before (capture runs it several times)
            layer.cumulative_length.zero_()
        slots = prompt_mask_slots(self.talker.model.config, length, self.max_tokens)
        out = self.talker.model(inputs_embeds=self.prompt_in[:, :length], past_key_values=self.cache,
                                attention_mask=_prompt_mask(length, slots, self.prompt_in.device),
                                position_ids=self.prompt_positions[..., :length], use_cache=True)
        hidden = out.last_hidden_state.index_select(1, self.prompt_last)
        return self.talker.codec_head(hidden[:, -1]), hidden

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
                    self._step, self._predict = _captured(step, stream=self.capture_stream), \
                        _captured(predict, stream=self.capture_stream)
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
        self._prefills = _captured_each(self._prefill_fn, self.prefill_lengths, self.codec_in.device,
                                        "the talker's prompt pass", self.capture_stream)
        with torch.inference_mode():
            self.cache.reset()
        if on_gpu and self._prefills:
            log.info("the talker's %d captured prompt passes hold %.2f GB", len(self._prefills),
                     (torch.cuda.memory_allocated() - before) / 1e9)


class CapturedVocoder:
    """code2wav for the chunk lengths a speech stream always has, each captured as a CUDA graph.

    Eagerly, code2wav's hundreds of small kernels wait on Python, and the first chunk is on the
    way to the first sound. A shorter length (a reply's last chunk) runs in the next captured one,
    padded; a longer one eagerly. On the CPU the same fixed-buffer functions run without graphs.

    Example::

        vocoder = CapturedVocoder(model.code2wav, frame_counts=(4, 29, 54))
        vocoder.capture()
        wav = vocoder(codes)          # codes (1, num_quantizers, frames) → (1, 1, samples), like code2wav
    """

    def __init__(self, code2wav, frame_counts: tuple[int, ...]):
        self.code2wav = code2wav
        self.device = compute_device(code2wav)
        self.frame_counts = sorted(set(frame_counts))
        self.upsample = int(code2wav.total_upsample)  # samples per frame
        self.codes_in = {n: torch.zeros((1, code2wav.config.num_quantizers, n), device=self.device,
                                        dtype=torch.long) for n in self.frame_counts}
        self._decoders: dict = {}

    def capture(self) -> float:
        started = time.perf_counter()
        self._decoders = _captured_each(lambda n: self.code2wav(self.codes_in[n]), self.frame_counts, self.device,
                                        "code2wav")
        return time.perf_counter() - started

    @torch.inference_mode()
    def __call__(self, codes: torch.Tensor, conv_frames: int | None = None) -> torch.Tensor:
        """decode_tail's signature. A whole decode (``conv_frames`` None or all the frames) runs in the
        shortest captured length that holds it: code2wav is causal (causal convolutions, causal attention), so
        the padding after the codes changes none of their samples, which are cut out. A tail (a later chunk of
        a long reply, after its context) runs eagerly."""
        frames = codes.shape[-1]
        padded = next((n for n in self.frame_counts if n >= frames and n in self._decoders), None)
        if padded is None or (conv_frames is not None and conv_frames < frames):
            return decode_tail(self.code2wav, codes, frames if conv_frames is None else conv_frames)
        self.codes_in[padded][..., :frames].copy_(codes)
        self.codes_in[padded][..., frames:].zero_()
        wav = self._decoders[padded]()
        # code2wav's output for n frames is n * upsample samples less a constant the convolutions trim.
        samples = wav.shape[-1] - (padded - frames) * self.upsample
        return wav[..., :samples].clone()  # the graph's output is overwritten at its next replay


def decode_tail(code2wav, codes: torch.Tensor, conv_frames: int) -> torch.Tensor:
    """``code2wav(codes)`` for its last ``conv_frames`` frames only: (1, 1, conv_frames * upsample - trim).

    code2wav's transformer attends over a window of 72 frames, but its convolutions, which upsample each frame
    to 1920 samples and hold nearly all of its work and activations, reach back 10 frames. So the
    transformer runs over every frame given and the convolutions over the last ``conv_frames``: a streamed
    chunk of 25 new frames with its 84 frames of context upsamples 37 frames, not 109. The steps are
    code2wav.forward's own (transformers 5.19), cut between its transformer and its convolutions."""
    if conv_frames >= codes.shape[-1]:
        return code2wav(codes)
    hidden = code2wav.code_embedding(codes + code2wav.code_offset).mean(1)
    hidden = code2wav.pre_transformer(inputs_embeds=hidden).last_hidden_state
    hidden = hidden[:, -conv_frames:].permute(0, 2, 1)
    for blocks in code2wav.upsample:
        for block in blocks:
            hidden = block(hidden)
    for block in code2wav.decoder:
        hidden = block(hidden)
    return hidden.clamp(min=-1, max=1)


def compute_device(module) -> torch.device:
    """Where ``module`` computes: its weights' device or, for weights offloaded to CPU memory by
    accelerate (their parameters are then "meta"), the GPU its hooks bring them to."""
    device = next(module.parameters()).device
    if device.type != "meta":
        return device
    for part in module.modules():
        execution_device = getattr(getattr(part, "_hf_hook", None), "execution_device", None)
        if execution_device is not None:
            return torch.device(execution_device)
    return torch.device("cuda", torch.cuda.current_device())


def _add_dense_deepstack(hidden_states: torch.Tensor, visual_pos_masks, visual_embeds: torch.Tensor) -> torch.Tensor:
    """transformers' DeepStack step (features added at the visual positions), over dense rows that are
    zero elsewhere: the same sums, with no position selection (a host sync) inside a graph."""
    return hidden_states + visual_embeds


def _prompt_mask(length: int, cache_slots: int, device) -> torch.Tensor:
    """A prompt's causal mask over the first ``cache_slots`` of an emptied static cache (1, 1, length,
    cache_slots), True where a token may attend. Made here from sizes fixed per captured pass, because
    transformers' mask code reads the cache's length on the host, which no CUDA graph can hold; made inside
    the pass, so that it lives only while the pass runs (kept, the thinker's and the talker's took 58 MB)."""
    slots = torch.arange(cache_slots, device=device)
    return (slots[None, :] <= torch.arange(length, device=device)[:, None])[None, None]


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


def _captured(function, pool=None, stream: torch.cuda.Stream | None = None):
    """``function`` (no arguments, fixed buffers) as a replayable CUDA graph; ``pool`` and ``stream``: a memory
    pool and a capture stream shared with graphs that never replay at the same time as this one."""
    # A capture stream of its own: PyTorch keys cuBLAS workspaces by stream, so graphs captured on
    # torch.cuda.graph's one shared stream bake in the same workspace (pytorch/pytorch#193402), and the
    # thinker's and the talker's graphs replay at once, from two threads.
    capture = stream or torch.cuda.Stream()
    capture.wait_stream(torch.cuda.current_stream())
    # Warm up (autotune, allocations) outside the graph, as torch.cuda.graph asks, on the capture stream
    # itself: PyTorch keeps a cuBLAS workspace (32 MiB on Hopper) for every stream cuBLAS has run on, so a
    # warm-up stream per graph would keep 32 MiB per graph for good (37 graphs with the default caches).
    with torch.cuda.stream(capture):
        for _ in range(3):
            function()
    torch.cuda.current_stream().wait_stream(capture)
    graph = torch.cuda.CUDAGraph()
    # thread_local: another thread's CUDA calls (the UI, a loader) must not break the capture.
    with torch.cuda.graph(graph, pool=pool, stream=capture, capture_error_mode="thread_local"):
        outputs = function()

    def replay():
        graph.replay()
        return outputs

    replay.pool = graph.pool()
    return replay


def _captured_each(function, sizes: list[int], device: torch.device, what: str,
                   stream: torch.cuda.Stream | None = None, pool=None, largest_first: bool = True) -> dict:
    """{size: function(size) as a CUDA graph} (on the CPU: the plain function), the graphs sharing one
    memory pool: the sizes are alternatives, so never two replay at once. Empty if a capture fails (the
    caller then runs eagerly). ``stream``: the capture stream (default: one of their own); ``pool``: a
    memory pool to share with other graphs that never replay at the same time as these (default: a new one)."""
    made: dict = {}
    # One capture stream for all: they never replay at once, so they may share its cuBLAS workspace.
    if stream is None and device.type == "cuda":
        stream = torch.cuda.Stream()
    try:
        with torch.inference_mode():
            # Largest first: a smaller graph then fits in the blocks a larger one freed. Smallest first, each
            # larger one needed blocks of new sizes: the thinker's pool grew to 1.9 GB (BENCHMARKS.md).
            for size in sorted(sizes, reverse=largest_first):
                run = (lambda size=size: function(size))
                if device.type == "cuda":
                    before, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
                    run = _captured(run, pool, stream)
                    pool = run.pool
                    # Reserved: the graph's pool also keeps what its replays use and no tensor of ours holds.
                    log.debug("%s of %d: %.3f GB more GPU memory (reserved: %.3f GB more)", what, size,
                              (torch.cuda.memory_allocated() - before) / 1e9,
                              (torch.cuda.memory_reserved() - reserved) / 1e9)
                made[size] = run
    except Exception:
        log.exception("capturing %s failed; it runs eagerly (slower, same output)", what)
        return {}
    return dict(sorted(made.items()))  # callers take the first size that holds an input


THINKER_TOP_K_LIMIT = 256
"""The thinker samples among at most this many likeliest tokens (the UI's top-k goes to 200)."""


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
        decoder.generate(inputs, temperature=0.7, top_k=20, top_p=0.8, max_new_tokens=1024,
                         streamer=streamer, stop=threading.Event(), eos_token_id=..., generator=None)
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
        self.prompt_last = torch.zeros((1,), device=device, dtype=torch.long)
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
    def generate(self, inputs: dict, temperature: float, top_k: int, top_p: float, max_new_tokens: int,
                 streamer, stop, eos_token_id: int, generator: torch.Generator | None,
                 prompt_states: dict | None = None) -> None:
        """Streams the reply's token ids into ``streamer`` (prompt first, as generate() does), the
        last one being ``eos_token_id`` unless ``max_new_tokens`` or ``stop`` ended it first.
        ``temperature`` 0: greedy. ``prompt_states``: gets ``"hidden"``, the prompt's states at
        ``talker_layer``, before the first token (speech.capture_prompt_hidden's dict)."""
        self.replies += 1
        greedy = temperature <= 0
        self.temperature.fill_(1.0 if greedy else temperature)
        self.top_k.fill_(self.limit if greedy else max(1, min(top_k, self.limit)))
        self.top_p.fill_(1.0 if greedy else top_p)
        self.uniform.fill_(0.5)  # the same noise everywhere: argmax
        self.seen.zero_()
        self.seen.scatter_(1, inputs["input_ids"], True)
        self.cache.reset()
        started = time.perf_counter()
        logits = self._prompt_pass(inputs, prompt_states)
        prompt_launched = time.perf_counter()
        # The steps read their 3D rope position as "tokens cached + delta", inside the graph.
        self.rope_delta.copy_(self.thinker.rope_deltas.reshape(1, 1))
        streamer.put(inputs["input_ids"].cpu())
        if not greedy:
            self.uniform.uniform_(generator=generator)
        token = self._sample(logits)
        self._copy_to_host(token)
        for produced in range(1, max_new_tokens + 1):
            launched = self.overlap and produced < max_new_tokens
            if launched:  # the next step reads this token on the GPU: it needn't wait for the host
                token = self._launch_step(token, greedy, generator)
            token_id = self._host_token()
            if produced == 1:
                log.debug("thinker: prompt pass launched in %.1f ms (encoders included), first token on the host "
                          "%.1f ms after it began", (prompt_launched - started) * 1e3,
                          (time.perf_counter() - started) * 1e3)
            streamer.put(torch.tensor([token_id]))
            # An end seen here leaves the launched step's token unread (a step's worth of GPU time per reply).
            if token_id == eos_token_id or produced == max_new_tokens or stop.is_set():
                return
            if not launched:
                token = self._launch_step(token, greedy, generator)
            self._copy_to_host(token)

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
        """The padded prompt pass of ``length``: (the last real position's state, the talker layer's states)."""
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
        for layer in self.cache.layers:  # from the start, whatever ran before (capture runs it several times)
            layer.cumulative_length.zero_()
        slots = prompt_mask_slots(self.thinker.model.config, length, self.max_tokens)
        out = self._text_forward(inputs_embeds=self.prompt_in[:, :length],
                                 attention_mask=_prompt_mask(length, slots, self.prompt_in.device),
                                 position_ids=self.prompt_positions[..., :length], past_key_values=self.cache,
                                 use_cache=True, deepstack_visual_embeds=list(self.deepstack_in[:, :, :length]))
        return out.last_hidden_state.index_select(1, self.prompt_last)

    def _step_fn(self) -> torch.Tensor:
        position = self.cache.layers[0].cumulative_length + self.rope_delta  # (1, 1)
        embeds = self.thinker.get_input_embeddings()(self.token_in)
        hidden = self.thinker.model(inputs_embeds=embeds, past_key_values=self.cache,
                                    position_ids=position.view(1, 1, 1).expand(3, 1, 1),
                                    use_cache=True).last_hidden_state
        return self._sample(self.thinker.lm_head(hidden[:, -1]))

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        """(1, 1) long: repetition penalty, temperature, top-k, top-p, then the Gumbel-max draw (argmax with
        constant noise). The token joins those the penalty applies to."""
        logits = logits.float()
        if self.repetition_penalty != 1.0:
            penalized = torch.where(logits < 0, logits * self.repetition_penalty, logits / self.repetition_penalty)
            logits = torch.where(self.seen, penalized, logits)
        values, indices = (logits / self.temperature).topk(self.limit, dim=-1)  # descending
        ranks = torch.arange(self.limit, device=values.device)
        values = values.masked_fill(ranks >= self.top_k, -math.inf)
        probs = values.softmax(dim=-1)
        # transformers' TopPLogitsWarper drops a token once the likelier ones already hold top_p of the mass.
        values = values.masked_fill((probs.cumsum(dim=-1) - probs >= self.top_p) & (self.top_p < 1), -math.inf)
        gumbel = -torch.log(-torch.log(self.uniform.clamp(1e-10, 1 - 1e-7)))
        token = indices.gather(-1, (values + gumbel).argmax(dim=-1, keepdim=True))
        self.seen.scatter_(1, token, True)
        return token

    def compile(self) -> float:
        """torch.compile the step (fullgraph) and, on CUDA, capture it as a CUDA graph, then capture the
        prompt passes of ``prefill_lengths`` (eager kernels; plain functions on the CPU); returns the seconds
        it took. If that fails, the step stays eager (slower, same tokens)."""
        started = time.perf_counter()
        try:
            step = torch.compile(self._step_fn, fullgraph=True, dynamic=False)
            with torch.inference_mode():
                if self.token_in.device.type == "cuda":
                    self._step = _captured(step, stream=self.capture_stream)
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
        self._prefills = _captured_each(self._prefill_fn, self.prefill_lengths, device, "the thinker's prompt pass",
                                        self.capture_stream)
        if before and self._prefills:
            log.info("the thinker's %d captured prompt passes (%d-slot cache) hold %.2f GB", len(self._prefills),
                     self.max_tokens, (torch.cuda.memory_allocated() - before) / 1e9)
        with torch.inference_mode():
            self.cache.reset()
