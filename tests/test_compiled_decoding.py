"""The compiled path (static caches, torch.compile, fullgraph) speaks exactly like the eager one.

On the CPU torch.compile runs without CUDA graphs (and here with ``aot_eager``: tests/compiling.py), but
with ``fullgraph=True`` a compile that succeeds has no graph break, which is what lets the GPU capture each
step as one graph.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from backends import build_backend
from backends.checkpoints import resolve_checkpoint
from backends.transformers.talker_decoder import PREDICTOR_TOP_K, PREDICTOR_TOP_P, TalkerDecoder, _gumbel_pick
from backends.transformers.thinker_decoder import ThinkerDecoder, ThinkerSampling
from backends.events import AudioChunk, Notice
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from tests.compiling import traced_without_inductor
from tests.streams import TokenCollector, collect, decoded_tokens, errors_of, text_of

GREEDY = Sampling(temperature=0, max_new_tokens=12)
SMALL_CACHE = 48
"""A smaller thinker cache in these tests: a text turn (13 prompt + 12 reply tokens) fits it."""


@pytest.fixture(scope="module")
def warm_up_run(tiny_cache, speech_path):
    """A backend compiled on the CPU (with aot_eager: tests/compiling.py), and what a turn sent while it
    was still compiling got."""
    with traced_without_inductor():
        backend = build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=2.0,
                                talker_do_sample=False, compile="on")
        assert backend.warming_up, "the header should say the engine is not ready yet"
        warming = threading.Thread(target=backend.warm_up)
        warming.start()
        early = collect(backend, ChatRequest(turns=(Turn.user(MediaPart("audio", str(speech_path)), "Hi"),),
                                             sampling=GREEDY))
        warming.join()
    yield backend, early
    backend.close()


def test_a_turn_sent_while_compiling_is_told_and_then_answered(warm_up_run):
    backend, early = warm_up_run
    notices = [e.message for e in early if isinstance(e, Notice)]
    assert any("warming up" in note for note in notices)
    assert text_of(early) and any(isinstance(e, AudioChunk) for e in early) and not errors_of(early)
    assert backend.warming_up is None and backend.compiled
    assert backend.talker_decoder.compiled


@pytest.mark.parametrize("with_media", [False, True])
def test_compiled_reply_equals_the_eager_reply(warm_up_run, instruct_backend, talker_frames, speech_path, image_path,
                                               with_media):
    compiled, _ = warm_up_run
    assert compiled._stock_projections, "the compiled path projects q, k and v in one product (the eager one: three)"
    assert compiled._stock_encoders, "the compiled path encodes media in padded passes (what a GPU captures)"
    parts = (MediaPart("audio", str(speech_path)), MediaPart("image", str(image_path))) if with_media else ()
    request = ChatRequest(turns=(Turn.user(*parts, "What is this?"),), sampling=GREEDY, speaker="chelsie")
    eager_events = collect(instruct_backend, request)
    eager_frames = list(talker_frames)
    talker_frames.clear()
    served_before = [decoder.replies for decoder in compiled.thinker_decoders]
    compiled_events = collect(compiled, request)
    served = [decoder.replies - before for decoder, before in zip(compiled.thinker_decoders, served_before)]
    assert served == [1], "the compiled decoder serves the turn"
    assert text_of(compiled_events) == text_of(eager_events)
    assert len(talker_frames) == len(eager_frames) > 3
    assert all(torch.equal(a, b) for a, b in zip(talker_frames, eager_frames))
    audio = [np.concatenate([e.samples for e in events if isinstance(e, AudioChunk)])
             for events in (eager_events, compiled_events)]
    assert audio[0].shape == audio[1].shape
    assert np.abs(audio[0] - audio[1]).max() <= 1e-4 * np.abs(audio[0]).max()


def test_sampled_codes_follow_the_seed_in_both_paths(warm_up_run):
    compiled, _ = warm_up_run
    talker = compiled.model.talker
    eager = TalkerDecoder(talker, compiled.talker_decoder.max_tokens)
    hidden = torch.randn(1, 1, talker.config.text_config.hidden_size, generator=torch.Generator().manual_seed(3))
    codes = []
    for decoder in (eager, compiled.talker_decoder):
        with torch.inference_mode():
            decoder.prefill(hidden.repeat(1, 5, 1), torch.ones((1, 5), dtype=torch.long),
                            torch.ones((1, 5), dtype=torch.long), {})
            frame, _ = decoder.predict(hidden, hidden, torch.Generator().manual_seed(7))
            codes.append(frame.clone())
    assert torch.equal(codes[0], codes[1])
    with torch.inference_mode():
        greedy, _ = eager.predict(hidden, hidden, None)
    assert not torch.equal(greedy, codes[0]), "sampling should not always pick the top code"


def test_the_predictor_samples_top_p_of_top_k_in_proportion():
    logits = torch.full((1, 2048), -30.0)  # only four codes are plausible
    logits[0, :4] = torch.tensor([3.0, 2.0, 1.0, 0.5])
    expected = torch.softmax(logits[0, :4], dim=0)
    keep = (torch.cumsum(expected, 0) - expected) < PREDICTOR_TOP_P  # transformers' top-p rule
    expected = torch.where(keep, expected, 0)
    expected = expected / expected.sum()
    draws = 20_000
    uniform = torch.rand(draws, PREDICTOR_TOP_K, generator=torch.Generator().manual_seed(0))
    picks = torch.stack([_gumbel_pick(logits, uniform[i]) for i in range(draws)]).flatten()
    assert set(picks.tolist()) == set(torch.nonzero(keep).flatten().tolist())
    frequencies = torch.bincount(picks, minlength=4)[:4].float() / draws
    assert torch.allclose(frequencies, expected, atol=0.015)


def _thinker_inputs(backend, text: str) -> dict:
    from backends.conversation import build_prompt_inputs

    return backend.encode(build_prompt_inputs(ChatRequest(turns=(Turn.user(text),))))


def test_the_thinker_loop_follows_the_seed_and_top_k_1_is_greedy_in_either_cache(warm_up_run):
    compiled, _ = warm_up_run
    inputs = _thinker_inputs(compiled, "Tell me something.")
    [large] = compiled.thinker_decoders
    assert large.max_tokens == compiled.options.static_cache_tokens
    small = ThinkerDecoder(compiled.model.thinker, SMALL_CACHE)
    greedy = decoded_tokens(small, inputs)
    assert decoded_tokens(large, inputs) == greedy  # the cache's size changes no token
    first, again, other = (decoded_tokens(small, inputs, temperature=1.0, top_k=200, seed=seed) for seed in (1, 1, 2))
    assert len(first) == 12 and first == again and first != other
    assert decoded_tokens(small, inputs, temperature=1.0, top_k=1, seed=3) == greedy


def test_the_thinker_samples_like_generates_processors_and_warpers():
    from transformers import RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn((1, 64), generator=torch.Generator().manual_seed(5)) * 2
    said = torch.tensor([[int(logits.argmax()), 7, 9]])  # the likeliest token was said already
    temperature, top_k, top_p, penalty = 0.7, 6, 0.8, 1.5
    decoder = object.__new__(ThinkerDecoder)  # only the sampling buffers, no model
    decoder.limit, decoder.repetition_penalty = 16, penalty
    decoder.temperature, decoder.top_k, decoder.top_p = (torch.tensor([[temperature]]), torch.tensor([[top_k]]),
                                                         torch.tensor([[top_p]]))
    penalized = RepetitionPenaltyLogitsProcessor(penalty)(said, logits.clone())
    stock = TopPLogitsWarper(top_p)(said, TopKLogitsWarper(top_k)(said, TemperatureLogitsWarper(temperature)(
        said, penalized.clone())))
    expected = torch.softmax(stock, dim=-1)[0]
    draws, generator = 20_000, torch.Generator().manual_seed(0)
    picks = []
    for _ in range(draws):
        decoder.seen = torch.zeros((1, 64), dtype=torch.bool).scatter_(1, said, True)
        decoder.uniform = torch.rand((1, 16), generator=generator)
        picks.append(int(decoder._sample(logits)))
    frequencies = torch.bincount(torch.tensor(picks), minlength=64).float() / draws
    assert set(torch.nonzero(frequencies).flatten().tolist()) == set(torch.nonzero(expected).flatten().tolist())
    assert torch.allclose(frequencies, expected, atol=0.015)
    # Greedy (constant noise, no warpers): the argmax of the penalized logits, which is not the said token.
    decoder.temperature, decoder.top_k, decoder.top_p = torch.ones((1, 1)), torch.tensor([[16]]), torch.ones((1, 1))
    decoder.seen = torch.zeros((1, 64), dtype=torch.bool).scatter_(1, said, True)
    decoder.uniform = torch.full((1, 16), 0.5)
    assert int(decoder._sample(logits)) == int(penalized.argmax()) != int(logits.argmax())


def test_a_prompt_padded_to_a_captured_length_decodes_like_the_exact_one(instruct_backend):
    talker = instruct_backend.model.talker
    exact = TalkerDecoder(talker, 64)
    padded = TalkerDecoder(talker, 64, prefill_lengths=(8, 16))
    padded.capture_prompt_passes()  # on the CPU: the same fixed-buffer functions, run without graphs
    hidden_size = talker.config.text_config.hidden_size
    prompt = torch.randn((1, 11, hidden_size), generator=torch.Generator().manual_seed(1))
    ids = torch.ones((1, 11), dtype=torch.long)
    runs = []
    for decoder in (exact, padded):
        with torch.inference_mode():
            logits, hidden = decoder.prefill(prompt, ids, torch.ones_like(ids), {})
            run = [(logits.clone(), hidden.clone())]
            for step in range(4):  # the steps write over the padding's keys, which stay masked until then
                codes, codec_embeds = decoder.predict(hidden, talker.get_input_embeddings()(logits.argmax(-1, True)),
                                                      None)
                logits, hidden = decoder.step(codec_embeds, prompt[:, step:step + 1])
                run.append((logits.clone(), hidden.clone()))
        runs.append(run)
    assert int(padded.cache.layers[0].cumulative_length) == 11 + 4
    # No graph break (nothing read back to the host, such as the cache's length): what a GPU capture needs.
    with torch.inference_mode():
        torch.compile(padded._prefill_fn, fullgraph=True, dynamic=False, backend="aot_eager")(16)
    for (logits, hidden), (padded_logits, padded_hidden) in zip(*runs):
        assert torch.allclose(logits, padded_logits, atol=1e-4) and torch.allclose(hidden, padded_hidden, atol=1e-4)
        assert torch.equal(logits.argmax(-1), padded_logits.argmax(-1))


def test_a_captured_vocoder_streams_the_same_waveform(instruct_backend, monkeypatch):
    from backends.transformers import vocoder as vocoder_module
    from backends.transformers.vocoder import CONV_REACH_FRAMES, CapturedVocoder, StreamingVocoder

    code2wav = instruct_backend.model.code2wav
    left_context = StreamingVocoder.default_left_context(code2wav)
    counts = StreamingVocoder.chunk_frame_counts(4, 25, left_context)
    assert counts == (4, 29, 54, 79, 104, 109)  # the context fills at 84 frames, then every chunk is 109
    # As the backend: the first sound and the chunk after it whole; the later chunks' tails
    tails = StreamingVocoder.tail_shapes(4, 25, left_context)
    assert tails == tuple((count, 25 + CONV_REACH_FRAMES) for count in counts[2:])
    captured = CapturedVocoder(code2wav, counts[:2], tails)
    captured.capture()
    tail_runs = []
    captured._tail_decoders = {shape: (lambda run=run, shape=shape: tail_runs.append(shape) or run())
                               for shape, run in captured._tail_decoders.items()}
    eager = []  # (frames decoded, frames upsampled) of each decode outside the captured graphs
    original = vocoder_module.decode_tail
    monkeypatch.setattr(vocoder_module, "decode_tail", lambda model, codes, conv_frames: eager.append(
        (codes.shape[-1], conv_frames)) or original(model, codes, conv_frames))
    codes = torch.randint(0, code2wav.config.codebook_size, (code2wav.config.num_quantizers, 160),
                          generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        whole = code2wav(codes[None])[0, 0]
    vocoder = StreamingVocoder(code2wav, 4, 25, decode=captured)
    pieces = [vocoder.push(codes[:, i]) for i in range(160)] + [vocoder.flush()]
    streamed = torch.cat([p for p in pieces if p is not None])
    assert streamed.shape == whole.shape
    assert (streamed - whole).abs().max() <= 1e-4 * whole.abs().max()
    # Chunks end at 4, 29, 54, …, 154 and 160 frames. The first two run whole in their graphs; each later one
    # runs the transformer over its context and upsamples only its new frames and the convolutions' reach, in
    # its captured tail; only the last, shorter one runs eagerly.
    reach = CONV_REACH_FRAMES
    assert tail_runs == [(54, 25 + reach), (79, 25 + reach), (104, 25 + reach), (109, 25 + reach),
                         (109, 25 + reach)]
    # (On the CPU a "captured" tail is the plain function: its decode_tail calls are recorded too.)
    assert eager[:-1] == tail_runs and eager[-1] == (160 - (154 - left_context), 6 + reach)
    # A whole decode shorter than a captured length runs in it, padded: code2wav is causal, so the padding
    # changes none of the samples kept.
    eager.clear()
    alone = captured(codes[None, :, :17])
    with torch.inference_mode():
        own = code2wav(codes[None, :, :17])
    assert eager == [] and alone.shape == own.shape and (alone - own).abs().max() <= 1e-5 * own.abs().max()


@pytest.mark.parametrize("with_media", [False, True])
def test_the_thinkers_captured_prompt_pass_answers_like_the_eager_one(instruct_backend, speech_path, image_path,
                                                                      with_media):
    """The text model's prompt pass, padded to a fixed length (on a GPU: a CUDA graph), gives the same reply and
    the same states for the talker; with an image that includes DeepStack's features."""
    from backends.conversation import build_prompt_inputs
    from backends.transformers.speech import capture_prompt_hidden

    model = instruct_backend.model
    layer = model.config.talker_config.accept_hidden_layer
    parts = (MediaPart("audio", str(speech_path)), MediaPart("image", str(image_path))) if with_media else ()
    inputs = instruct_backend.encode(build_prompt_inputs(ChatRequest(turns=(Turn.user(*parts, "What is it?"),))))
    length = inputs["input_ids"].shape[1]
    eager = ThinkerDecoder(model.thinker, 128)
    captured = ThinkerDecoder(model.thinker, 128, prefill_lengths=(length + 5,), talker_layer=layer)
    captured.capture_prompt_passes()  # on the CPU: the same fixed-buffer functions, run without graphs
    replays = []
    padded_pass = captured._prefills[length + 5]
    captured._prefills[length + 5] = lambda: replays.append(length + 5) or padded_pass()
    replies, states = [], []
    for decoder in (eager, captured):
        streamer, kept = TokenCollector(), {}
        with torch.inference_mode(), capture_prompt_hidden(model.thinker, layer) as hooked:
            decoder.generate(inputs, ThinkerSampling(0.0, 20, 1.0, 12, eos_token_id=-1), streamer, threading.Event(),
                             prompt_states=kept)
        replies.append(streamer.reply)
        states.append(kept.get("hidden", hooked.get("hidden")))
    assert replays == [length + 5], "the padded pass should have served the prompt"
    assert replies[0] == replies[1] and len(replies[0]) == 12
    assert states[1].shape == states[0].shape == (1, length, model.config.thinker_config.text_config.hidden_size)
    assert torch.allclose(states[0], states[1], atol=1e-4)
    # No graph break (nothing read back to the host): what a GPU capture needs.
    with torch.inference_mode(), captured.dense_deepstack():
        torch.compile(captured._text_pass, fullgraph=True, dynamic=False, backend="aot_eager")(length + 5)


def test_the_thinker_launching_a_step_ahead_of_the_host_streams_the_same_reply(instruct_backend):
    """Each step is launched before the host has read the token before it (on a GPU the next step runs while the
    host streams); the reply must be token for token the one of a step at a time, and stop where it did."""

    decoder = ThinkerDecoder(instruct_backend.model.thinker, 128)
    inputs = _thinker_inputs(instruct_backend, "Tell me something.")
    steps = []
    step = decoder._step
    decoder._step = lambda: steps.append(1) or step()

    def reply(overlap: bool, **kwargs) -> tuple[list[int], int]:
        decoder.overlap = overlap
        steps.clear()
        streamer = TokenCollector()
        seed = kwargs.pop("seed", None)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        sampling = ThinkerSampling(kwargs.pop("temperature", 0.0), 200, 1.0, 12, generator=generator,
                                   **{"eos_token_id": -1, **kwargs})
        decoder.generate(inputs, sampling, streamer, threading.Event())
        return streamer.reply, len(steps)

    greedy, greedy_steps = reply(False)
    assert reply(True) == (greedy, greedy_steps) == (greedy, 11)  # 12 tokens: the first comes from the prompt
    assert reply(True, temperature=1.0, seed=5)[0] == reply(False, temperature=1.0, seed=5)[0] != greedy
    ends_at = next(i for i in range(4, 12) if greedy[i] not in greedy[:i])  # a new token, mid-reply
    ended, ahead_steps = reply(True, eos_token_id=greedy[ends_at])
    assert ended == greedy[:ends_at + 1] == reply(False, eos_token_id=greedy[ends_at])[0]
    assert ahead_steps == ends_at + 1, "one step launched past the end, its token never streamed"


@pytest.mark.parametrize("failing", ["thinker", "talker"])
def test_a_decoder_that_wont_compile_with_our_kernels_compiles_again_with_transformers_own(tiny_cache, monkeypatch,
                                                                                            failing):
    """On a GPU the backend turns our Triton kernels on before compiling (fused MoE experts for the thinker,
    decode attention for thinker and talker), and on any device the fused q/k/v projections. If a decoder's
    steps then fail to compile (a kernel dynamo can't trace, say) it must not stay eager, where it would launch
    the same kernels: transformers' own go back (all for the thinker; attention and projections for the talker,
    which has no fused experts) and it compiles again. The first try fails here on purpose; the CPU never turns
    the Triton kernels on by itself."""
    tries, restored = [], []

    def compile_fails_first(self):
        if tries:
            assert restored, "it compiles again only after transformers' own are back"
        tries.append(self)
        self.compiled = len(tries) > 1
        return 0.0

    def compiles(self):
        self.compiled = True
        return 0.0

    failing_class = ThinkerDecoder if failing == "thinker" else TalkerDecoder
    for decoder_class in (ThinkerDecoder, TalkerDecoder):
        monkeypatch.setattr(decoder_class, "compile", compile_fails_first if decoder_class is failing_class
                            else compiles)
    with build_backend("transformers", resolve_checkpoint("tiny"), compile="on",
                       max_speech_seconds=1.0) as backend:
        assert backend._stock_experts is None and backend._stock_attention is None, "no Triton kernels without a GPU"
        backend._stock_experts = lambda: restored.append("experts")
        backend._stock_attention = lambda: restored.append("attention")
        fused_projections = backend._stock_projections
        backend._stock_projections = lambda: restored.append("projections") or fused_projections()
        backend.warm_up()
        assert restored == (["experts", "attention", "projections"] if failing == "thinker"
                            else ["attention", "projections"])
        assert backend._stock_attention is None and backend._stock_projections is None
        attention = backend.model.thinker.model.layers[0].self_attn
        assert "forward" not in vars(attention), "transformers' own attention forward is back"
        assert len(tries) == 2 and backend.talker_decoder.compiled
        assert all(decoder.compiled for decoder in backend.thinker_decoders)
        assert backend.compiled and backend.warming_up is None


def test_fused_projections_view_the_same_weights_and_give_the_same_logits(tiny_cache):
    """One q/k/v product per attention layer: the three weights become views of one tensor (no memory added,
    the values unchanged), the thinker's logits stay bit for bit the same on the CPU, and undoing it puts
    transformers' forward back."""
    from backends.conversation import build_prompt_inputs
    from backends.transformers.kernels.fused_projections import fuse_attention_projections

    backend = build_backend("transformers", resolve_checkpoint("tiny"), compile="off")
    try:
        model = backend.model
        inputs = backend.encode(build_prompt_inputs(ChatRequest(turns=(Turn.user("Tell me something."),))))
        attention = model.thinker.model.layers[0].self_attn
        weights = [p.weight.clone() for p in (attention.q_proj, attention.k_proj, attention.v_proj)]
        allocated = sum(p.untyped_storage().nbytes() for p in {p.untyped_storage().data_ptr(): p
                                                                for p in model.parameters()}.values())
        with torch.inference_mode():
            stock = model.thinker(**inputs).logits
            put_back = fuse_attention_projections(model)
            fused = model.thinker(**inputs).logits
        assert put_back and "forward" in vars(attention)
        layers = [m for m in model.modules() if hasattr(m, "qkv_weight")]
        assert len(layers) == model.config.thinker_config.text_config.num_hidden_layers + \
            model.config.talker_config.text_config.num_hidden_layers
        views = (attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight)
        assert all(v.untyped_storage().data_ptr() == attention.qkv_weight.untyped_storage().data_ptr() for v in views)
        assert all(torch.equal(v, w) for v, w in zip(views, weights))
        after = sum(p.untyped_storage().nbytes() for p in {p.untyped_storage().data_ptr(): p
                                                           for p in model.parameters()}.values())
        assert after <= allocated
        assert torch.equal(fused, stock)
        put_back()
        assert "forward" not in vars(attention)
    finally:
        backend.close()
