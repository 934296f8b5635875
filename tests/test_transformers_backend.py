"""The Transformers backend on the tiny checkpoint: real model classes, real media files."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from backends import build_backend
from backends.checkpoints import Checkpoint, resolve_checkpoint
from backends.events import AudioChunk, Done, Error, Metrics, Notice, TextDelta
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from backends.transformers.talker_decoder import TalkerDecoder
from backends.transformers.loading import CheckpointError
from tests.streams import collect, text_of

GREEDY = Sampling(temperature=0, max_new_tokens=12)
SAMPLES_PER_FRAME = 1920  # 80 ms at 24 kHz
CODE2WAV_TAIL = 555  # samples a decode of F frames falls short of F * 1920 (causal transposed convolutions)


def test_all_four_modalities_in_streams_text_and_a_24khz_reply(instruct_backend, speech_path, image_path, video_path):
    turn = Turn.user(MediaPart("audio", str(speech_path)), MediaPart("image", str(image_path)),
                     MediaPart("video", str(video_path)), "What do you see and hear?")
    events = collect(instruct_backend, ChatRequest(turns=(turn,), speaker="chelsie", sampling=GREEDY))

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1, "text should arrive token by token, not in one piece"
    audio = [e for e in events if isinstance(e, AudioChunk)]
    assert audio and {chunk.sample_rate for chunk in audio} == {24_000}
    # A small first chunk (4 frames of 80 ms, minus code2wav's causal tail), then 25-frame chunks.
    assert audio[0].samples.size == 4 * SAMPLES_PER_FRAME - CODE2WAV_TAIL
    assert all(chunk.samples.size == 25 * SAMPLES_PER_FRAME for chunk in audio[1:-1])
    samples = np.concatenate([chunk.samples for chunk in audio])
    frames, tail = divmod(samples.size + CODE2WAV_TAIL, SAMPLES_PER_FRAME)
    assert tail == 0 and 4 <= frames <= 24  # whole frames; the talker is capped at 2 s = 25 steps
    assert np.isfinite(samples).all() and samples.std() > 0
    metrics = next(e for e in events if isinstance(e, Metrics))
    assert metrics.prompt_tokens > 50 and metrics.output_tokens == 12
    assert metrics.audio_seconds == pytest.approx(samples.size / 24_000)
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "length"
    assert not [e for e in events if isinstance(e, Error)]


def test_the_talker_audio_config_workaround_is_what_makes_audio_plus_image_speak(instruct_backend, speech_path,
                                                                                   image_path):
    turn = Turn.user(MediaPart("audio", str(speech_path)), MediaPart("image", str(image_path)), "Describe both.")
    request = ChatRequest(turns=(turn,), sampling=GREEDY)
    talker_config = instruct_backend.model.talker.config
    saved = talker_config.audio_config
    del talker_config.audio_config  # what a plain from_pretrained() leaves on transformers 5.x
    try:
        broken = collect(instruct_backend, request)
    finally:
        talker_config.audio_config = saved
    assert any(isinstance(e, Error) and e.stage == "speech" for e in broken)
    fixed = collect(instruct_backend, request)
    assert any(isinstance(e, AudioChunk) for e in fixed) and not any(isinstance(e, Error) for e in fixed)
    assert text_of(fixed) == text_of(broken)  # the text reply survived the talker crash


def test_greedy_replies_are_reproducible_and_speakers_change_the_voice(instruct_backend):
    request = ChatRequest(turns=(Turn.user("Say hello."),), sampling=GREEDY, speaker="ethan")
    first, second = collect(instruct_backend, request), collect(instruct_backend, request)
    assert text_of(first) == text_of(second) != ""
    seeded = Sampling(temperature=0.9, max_new_tokens=12, seed=7)
    voices = {}
    for speaker in instruct_backend.info.speakers:
        events = collect(instruct_backend, ChatRequest(turns=(Turn.user("Say hello."),), sampling=seeded,
                                                       speaker=speaker))
        voices[speaker] = next(e for e in events if isinstance(e, AudioChunk)).samples
    assert len({v.tobytes() for v in voices.values()}) == len(voices), "each speaker should sound different"


def test_speech_off_gives_text_only(instruct_backend):
    events = collect(instruct_backend, ChatRequest(turns=(Turn.user("Hi"),), sampling=GREEDY, return_audio=False))
    assert text_of(events) and not any(isinstance(e, AudioChunk) for e in events)


@pytest.mark.parametrize("max_new_tokens, speech_seconds", [
    (1, 2.0),    # stock generate(): "The size of tensor a (8) must match…" (a one-token reply)
    (12, 0.08),  # stock generate(): "stack expects a non-empty TensorList" (the talker stops at once)
])
def test_replies_that_crash_stock_generate_are_handled(instruct_backend, max_new_tokens, speech_seconds,
                                                      monkeypatch):
    monkeypatch.setattr(instruct_backend, "options", replace(instruct_backend.options, max_speech_seconds=speech_seconds))
    events = collect(instruct_backend, ChatRequest(turns=(Turn.user("Hi"),),
                                                   sampling=Sampling(temperature=0, max_new_tokens=max_new_tokens)))
    assert text_of(events) and not any(isinstance(e, (Error, AudioChunk)) for e in events)  # nothing to speak
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "length"


def test_a_speech_failure_keeps_the_text_reply(instruct_backend, monkeypatch):
    def broken_code_predictor(self, *args):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(TalkerDecoder, "predict", broken_code_predictor)
    events = collect(instruct_backend, ChatRequest(turns=(Turn.user("Hi"),), sampling=GREEDY))
    errors = [e for e in events if isinstance(e, Error)]
    assert len(errors) == 1 and errors[0].stage == "speech" and "out of memory" in errors[0].message
    assert "text reply is kept" in errors[0].message
    assert text_of(events) and events[-1].finish_reason == "length"


def seconds_to_free_engine(backend, request: ChatRequest, close_after: type) -> float:
    """Close the stream at its first ``close_after`` event (what Stop does); time until the engine is free."""

    async def start_then_close():
        stream = backend.stream(request)
        async for event in stream:
            if isinstance(event, close_after):
                break
        await stream.aclose()
        return time.perf_counter()

    closed_at = asyncio.run(start_then_close())
    assert backend._lock.acquire(timeout=5), "the worker kept the engine after the stream was closed"
    backend._lock.release()
    return time.perf_counter() - closed_at


def test_closing_the_stream_stops_generation_and_the_next_turn_works(instruct_backend):
    long = ChatRequest(turns=(Turn.user("Tell me a long story."),), sampling=Sampling(max_new_tokens=2000))
    assert seconds_to_free_engine(instruct_backend, long, close_after=TextDelta) < 0.5
    events = collect(instruct_backend, ChatRequest(turns=(Turn.user("Hi again"),), sampling=GREEDY))
    assert text_of(events) and events[-1].finish_reason == "length"


def test_unreadable_media_is_refused_with_the_file_name(instruct_backend, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    events = collect(instruct_backend, ChatRequest(turns=(Turn.user(MediaPart("audio", str(broken)), "hi"),)))
    assert [type(e) for e in events] == [Error, Done]
    assert events[0].stage == "input" and "broken.wav" in events[0].message


def test_thinker_only_checkpoint_answers_in_text(captioner_backend, speech_path):
    info = captioner_backend.info
    assert info.kind == "captioner" and not info.can_speak and not captioner_backend.model.has_talker
    events = collect(captioner_backend, ChatRequest(turns=(Turn.user(MediaPart("audio", str(speech_path))),),
                                                    sampling=GREEDY, return_audio=True))
    assert text_of(events) and not any(isinstance(e, (AudioChunk, Error)) for e in events)


def test_no_audio_never_builds_the_talker(tiny_cache):
    with build_backend("transformers", resolve_checkpoint("tiny"), audio_output=False) as backend:
        assert not backend.model.has_talker and not backend.info.can_speak
        assert not hasattr(backend.model, "talker")


@pytest.fixture
def damaged_checkpoint(tiny_cache, tmp_path) -> Checkpoint:
    """The tiny checkpoint without its talker's expert weights."""
    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    shutil.copytree(resolve_checkpoint("tiny").path, damaged)
    for weights in damaged.glob("*.safetensors"):
        tensors = load_file(weights)
        dropped = [name for name in tensors if ".experts." in name and name.startswith("talker.")]
        save_file({k: v for k, v in tensors.items() if k not in dropped}, weights, metadata={"format": "pt"})
    return Checkpoint("damaged", str(damaged))


def test_a_checkpoint_with_missing_weights_is_refused_by_name(damaged_checkpoint):
    with pytest.raises(CheckpointError, match="missing") as refused:
        build_backend("transformers", damaged_checkpoint)
    assert "talker." in str(refused.value) and "experts" in str(refused.value)


def test_loading_in_the_background_serves_the_page_at_once_and_answers_once_loaded(tiny_cache, monkeypatch):
    """What app.py does: the header can be drawn before the weights are in; a turn sent meanwhile waits."""
    from backends.transformers import backend as transformers_backend

    release = threading.Event()
    original = transformers_backend.load_model

    def held_load(*args, **kwargs):  # a 70 GB load takes minutes: hold the tiny one until the test has looked
        release.wait(timeout=60)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers_backend, "load_model", held_load)
    with build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=1.0,
                       load_in_background=True) as backend:
        assert backend.model is None and backend.warming_up.code == "warm_up.loading_weights"
        assert backend.info.can_speak and backend.info.kind == "instruct"  # from the config alone
        # A seed: the talker samples, and a random draw may end its speech before the first chunk (a rare flake).
        turn = ChatRequest(turns=(Turn.user("Hi"),), sampling=replace(GREEDY, seed=0))
        threading.Timer(0.5, release.set).start()
        events = collect(backend, turn)
        notices = [e.message for e in events if isinstance(e, Notice)]
        assert any("loading the model's weights" in note for note in notices)
        assert text_of(events) and any(isinstance(e, AudioChunk) for e in events), [type(e).__name__ for e in events]
        assert backend.warming_up is None and backend.model is not None


def test_a_background_load_that_fails_answers_every_turn_with_why(damaged_checkpoint):
    with build_backend("transformers", damaged_checkpoint, load_in_background=True) as backend:
        events = collect(backend, ChatRequest(turns=(Turn.user("Hi"),), sampling=GREEDY))
        again = collect(backend, ChatRequest(turns=(Turn.user("Hi again"),), sampling=GREEDY))
        for reply in (events, again):
            errors = [e.message for e in reply if isinstance(e, Error)]
            assert errors and "could not be loaded" in errors[0] and "missing" in errors[0]
            assert reply[-1] == Done("error")
        assert backend.warming_up is None


def test_weight_loading_reports_its_progress(tiny_cache):
    from backends.transformers.loading import load_model, weight_loading_progress
    from backends.transformers.plan import plan_engine

    reports: list[tuple[int, int]] = []
    with weight_loading_progress(lambda done, total: reports.append((done, total))):
        model, _ = load_model(plan_engine(resolve_checkpoint("tiny")))
    total = reports[-1][1]
    assert total == len(model.state_dict())  # one step per weight
    assert [done for done, _ in reports] == list(range(total))


def test_the_engine_plan_is_decided_once_from_the_options_and_this_machine(tiny_cache):
    """What the header, the queue, loading and compiling all read (backends/transformers/plan.py), on this CPU."""
    from backends.transformers.options import TransformersOptions
    from backends.transformers.plan import plan_engine

    checkpoint = resolve_checkpoint("tiny")
    plain = plan_engine(checkpoint)
    assert (plain.device, plain.device_label, plain.compiled, plain.batch_slots, plain.gpu_kernels) == \
        ("cpu", "cpu", False, 1, False)
    assert plain.load_kwargs()["attn_implementation"] == "sdpa" and "device_map" not in plain.load_kwargs()
    assert plan_engine(checkpoint, TransformersOptions(compile="on")).compiled
    assert plan_engine(checkpoint, TransformersOptions(batch_slots=4)).batch_slots == 4
    assert plan_engine(checkpoint, TransformersOptions(batch_slots=4, static_cache_tokens=0)).batch_slots == 1
    mute = plan_engine(checkpoint, TransformersOptions(audio_output=False), config=plain.config)
    assert not mute.speaks and plain.speaks  # the config it was given is left as it was
