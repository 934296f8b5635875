"""Streaming speech: the talker speaks while the thinker writes, exactly as stock generate() would."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from backends.transformers import speech
from backends.conversation import build_prompt_inputs
from backends.events import AudioChunk, Metrics, TextDelta
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from backends.transformers.vocoder import StreamingVocoder
from tests.streams import collect, text_of
from tests.test_transformers_backend import seconds_to_free_engine

TALKER_STEPS = 30


@pytest.fixture
def greedy_talker(instruct_backend, monkeypatch, talker_frames):
    """Greedy talker, and a record of the codec frames the streaming loop produced."""
    options = replace(instruct_backend.options, talker_do_sample=False, max_speech_seconds=TALKER_STEPS / 12.5)
    monkeypatch.setattr(instruct_backend, "options", options)
    return talker_frames


@pytest.fixture
def slow_thinker(monkeypatch):
    """Hold each thinker token back 15 ms so the talker catches up and has to wait for text."""
    original = speech.TextFeed.extend

    def slowly(self, ids):
        time.sleep(0.015)
        original(self, ids)

    monkeypatch.setattr(speech.TextFeed, "extend", slowly)


def stock_generate(backend, request: ChatRequest):
    """Codes and waveform from transformers' own generate() for the same inputs."""
    model = backend.model
    inputs = backend.encode(build_prompt_inputs(request, backend.options.media_limits))
    recorded = {}
    chunked_decode = model.code2wav.chunked_decode

    def record(codes, **kwargs):
        recorded["codes"] = codes.clone()
        return chunked_decode(codes, **kwargs)

    model.code2wav.chunked_decode = record
    try:
        _, wav = model.generate(**inputs, speaker=request.speaker, return_audio=True, thinker_do_sample=False,
                                thinker_max_new_tokens=request.sampling.max_new_tokens, talker_do_sample=False,
                                talker_max_new_tokens=TALKER_STEPS, thinker_eos_token_id=model.config.im_end_token_id)
    finally:
        del model.code2wav.chunked_decode
    return recorded["codes"][0].T, wav.reshape(-1).numpy()


def prompts(speech_path, image_path, video_path) -> dict[str, ChatRequest]:
    greedy = Sampling(temperature=0, max_new_tokens=12)
    return {
        "text": ChatRequest(turns=(Turn.user("Hello there, how are you today?"),), sampling=greedy, speaker="ethan"),
        "audio+image": ChatRequest(turns=(Turn.user(MediaPart("audio", str(speech_path)),
                                                    MediaPart("image", str(image_path)), "What is this?"),),
                                   sampling=greedy, speaker="chelsie"),
        "video with its sound": ChatRequest(turns=(Turn.user(MediaPart("video", str(video_path)), "Describe it."),),
                                            sampling=greedy, speaker="aiden", use_audio_in_video=True),
        "multi-turn": ChatRequest(turns=(Turn.user(MediaPart("image", str(image_path)), "Look at this."),
                                         Turn.assistant("It is a colour gradient."),
                                         Turn.user(MediaPart("audio", str(speech_path)), "And what do you hear?")),
                                  system_prompt="Answer briefly.", sampling=greedy, speaker="ethan"),
    }


@pytest.mark.parametrize("name", ["text", "audio+image", "video with its sound", "multi-turn"])
def test_streamed_speech_equals_stock_generate(instruct_backend, greedy_talker, slow_thinker, name, speech_path,
                                               image_path, video_path):
    request = prompts(speech_path, image_path, video_path)[name]
    events = collect(instruct_backend, request)
    streamed = np.concatenate([e.samples for e in events if isinstance(e, AudioChunk)])
    stock_codes, stock_wav = stock_generate(instruct_backend, request)

    assert torch.equal(torch.stack(greedy_talker), stock_codes), "codec codes differ from stock generate()"
    assert streamed.shape == stock_wav.shape
    assert np.abs(streamed - stock_wav).max() <= 1e-4 * np.abs(stock_wav).max()


# 130 frames reach past code2wav's attention window. One-frame chunks stop at 29 frames: over 130 they cost 40 s
# (130 decodes) and check nothing that seven-frame chunks don't.
@pytest.mark.parametrize("frames, first_chunk, chunk", [
    (frames, first_chunk, chunk) for frames in (1, 3, 29, 130)
    for first_chunk, chunk in ((1, 1), (4, 25), (8, 7), (4, 300)) if not (chunk == 1 and frames > 29)])
def test_chunked_decoding_equals_one_decode(instruct_backend, frames, first_chunk, chunk):
    code2wav = instruct_backend.model.code2wav
    generator = torch.Generator().manual_seed(frames)
    codes = torch.randint(0, code2wav.config.codebook_size, (code2wav.config.num_quantizers, frames),
                          generator=generator)
    with torch.inference_mode():
        whole = code2wav(codes[None])[0, 0]
    vocoder = StreamingVocoder(code2wav, first_chunk=first_chunk, chunk=chunk)
    pieces = [vocoder.push(codes[:, i]) for i in range(frames)] + [vocoder.flush()]
    streamed = torch.cat([p for p in pieces if p is not None])
    assert streamed.shape == whole.shape
    assert (streamed - whole).abs().max() <= 1e-4 * whole.abs().max()
    if frames > chunk:  # stock chunked_decode loses code2wav's tail at every chunk boundary
        with torch.inference_mode():
            stock = code2wav.chunked_decode(codes[None], chunk_size=chunk, left_context_size=25)
        assert stock.shape[-1] < whole.shape[-1]


def test_speech_starts_while_text_is_still_streaming(instruct_backend):
    request = ChatRequest(turns=(Turn.user("Tell me about the sea."),), sampling=Sampling(temperature=0,
                                                                                            max_new_tokens=150))
    events = collect(instruct_backend, request)
    kinds = [type(e) for e in events]
    first_audio = kinds.index(AudioChunk)
    last_text = len(kinds) - 1 - kinds[::-1].index(TextDelta)
    assert first_audio < last_text, "the first audio should arrive before the text is complete"
    metrics = next(e for e in events if isinstance(e, Metrics))
    assert metrics.time_to_first_audio_s < metrics.total_s
    assert metrics.talker_frames_per_s > 0 and metrics.real_time_factor > 0 and metrics.audio_seconds > 0


def test_a_seed_reproduces_text_and_voice_despite_two_threads(instruct_backend, monkeypatch):
    monkeypatch.setattr(instruct_backend, "options", replace(instruct_backend.options, talker_do_sample=True))
    request = ChatRequest(turns=(Turn.user("Sing."),), sampling=Sampling(temperature=1.0, max_new_tokens=24, seed=11))
    first, second = collect(instruct_backend, request), collect(instruct_backend, request)
    audio = [np.concatenate([e.samples for e in run if isinstance(e, AudioChunk)]) for run in (first, second)]
    assert text_of(first) == text_of(second)
    assert np.array_equal(audio[0], audio[1])


def test_stop_during_speech_frees_the_engine_within_half_a_second(instruct_backend):
    request = ChatRequest(turns=(Turn.user("Talk for a long time."),), sampling=Sampling(max_new_tokens=2000))
    assert seconds_to_free_engine(instruct_backend, request, close_after=AudioChunk) < 0.5
    events = collect(instruct_backend, ChatRequest(turns=(Turn.user("Hi"),), sampling=Sampling(temperature=0,
                                                                                                max_new_tokens=8)))
    assert text_of(events) and any(isinstance(e, AudioChunk) for e in events)


def test_a_chunks_convolutions_read_every_frame_they_reach(instruct_backend):
    """decode_tail runs code2wav's convolutions over a chunk's new frames and CONV_REACH_FRAMES before them: the
    first sample a chunk emits must depend on no frame before that (checked through the convolutions' gradient,
    which weights of any size would show; random ones hide it in the samples themselves)."""
    from backends.transformers.vocoder import CONV_REACH_FRAMES

    code2wav = instruct_backend.model.code2wav
    upsample, frames, sent = int(code2wav.total_upsample), 40, 30
    hidden = torch.randn((1, code2wav.config.hidden_size, frames), requires_grad=True)
    wav = hidden
    for blocks in code2wav.upsample:
        for block in blocks:
            wav = block(wav)
    for block in code2wav.decoder:
        wav = block(wav)
    trim = frames * upsample - wav.shape[-1]
    first_emitted = sent * upsample - trim  # the samples after what the chunk before sent
    gradient, = torch.autograd.grad(wav[0, 0, first_emitted], hidden)
    read = (gradient[0].abs().sum(dim=0) != 0).nonzero().flatten()
    assert sent - int(read.min()) <= CONV_REACH_FRAMES, f"reaches {sent - int(read.min())} frames back"
