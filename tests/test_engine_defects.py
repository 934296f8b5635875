"""Engine defects a user notices: a blocked event loop, unbounded memory, a hung engine, slow streaming."""

from __future__ import annotations

import asyncio

import pytest

from backends.events import TextDelta
from backends.reasoning import ReasoningSplitter

MIXED_TEXT = "Hello 世界! Ça va? 🙂👍🏽 Qwen3-Omni says: 你好，很高兴认识你。\nNext line — done."


@pytest.fixture(scope="module")
def tokenizer(tiny_cache):
    from transformers import AutoTokenizer

    from backends.checkpoints import resolve_checkpoint

    return AutoTokenizer.from_pretrained(resolve_checkpoint("tiny").path)


class CountingTokenizer:
    """The tokenizer, counting the ids it is asked to decode."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decoded_ids = tokenizer, 0

    def decode(self, ids, **kwargs):
        self.decoded_ids += len(ids)
        return self.tokenizer.decode(ids, **kwargs)


def stream_text(tokenizer, ids: list[int]) -> tuple[list[str], int]:
    """The reply's text pieces as the thinker's streamer emits them for ``ids`` (one id per step), and the ids
    it decoded to do so."""
    import torch

    from backends.transformers.reply_text import TextStreamer

    counting = CountingTokenizer(tokenizer)
    pieces: list[str] = []
    streamer = TextStreamer(counting, ReasoningSplitter(False), lambda e: pieces.append(e.text)
                             if isinstance(e, TextDelta) else None)
    streamer.put(torch.tensor([[1, 2, 3]]))  # generate() first puts the prompt
    for token_id in ids:
        streamer.put(torch.tensor([token_id]))
    streamer.flush()
    return pieces, counting.decoded_ids


def test_streamed_text_equals_the_full_decode_with_characters_split_over_tokens(tokenizer):
    ids = tokenizer.encode(MIXED_TEXT * 3)
    split = [i for i in ids if tokenizer.decode([i]).endswith("\ufffd")]
    assert split, "the test needs characters whose bytes span several tokens"
    pieces, _ = stream_text(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == MIXED_TEXT * 3
    assert not any("\ufffd" in piece for piece in pieces), "half a character was shown"
    assert len(pieces) > len(ids) // 2, "text should still stream token by token"


def test_streaming_decodes_each_token_a_bounded_number_of_times(tokenizer):
    short = tokenizer.encode(MIXED_TEXT * 4)
    long = tokenizer.encode(MIXED_TEXT * 32)
    _, short_work = stream_text(tokenizer, short)
    _, long_work = stream_text(tokenizer, long)
    # Decoding the whole reply at each token would be n²/2 ids: 8x the tokens, 64x the work.
    assert long_work / len(long) < 6 and long_work / short_work < 8 * 1.2


def test_a_byte_sequence_that_never_completes_does_not_hold_the_reply_back(tokenizer):
    from backends.transformers.incremental_text import MAX_PENDING_IDS, IncrementalDecoder

    stray = [i for i in tokenizer.encode("🙂") if tokenizer.decode([i]).endswith("\ufffd")][0]
    ids = [stray] * (MAX_PENDING_IDS + 4) + tokenizer.encode(" and on")  # a random model's stray bytes
    decoder = IncrementalDecoder(tokenizer)
    shown = [decoder.add([i]) for i in ids]
    assert "".join(shown[:-1]), "text came out before the end of the reply"
    assert "and on" in "".join(shown) + decoder.flush()


@pytest.fixture
def engine_backend(instruct_backend):
    """A backend of its own (its engine thread may die) on the session's tiny model."""
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.options import TransformersOptions

    options = TransformersOptions(max_speech_seconds=2.0, talker_do_sample=False, encoder_cache_mb=0)
    backend = TransformersBackend(instruct_backend.checkpoint, options,
                                  loaded=(instruct_backend.model, instruct_backend.processor))
    yield backend
    backend.close()


def collect_within(backend, request, seconds: float = 20.0) -> list:
    """The turn's events; a stream that hangs fails the test instead of the run."""
    import asyncio

    async def run():
        return [event async for event in backend.stream(request)]

    async def bounded():
        return await asyncio.wait_for(run(), seconds)

    try:
        return asyncio.run(bounded())
    except TimeoutError:
        pytest.fail(f"the turn showed 'Thinking…' for {seconds:.0f} s with no answer")


def hi():
    from backends.request import ChatRequest, Sampling, Turn

    return ChatRequest(turns=(Turn.user("Hi"),), sampling=Sampling(temperature=0, max_new_tokens=4),
                       return_audio=False)


def test_a_job_that_fails_in_the_engine_thread_ends_the_turn_with_an_error_and_the_next_works(
        engine_backend, monkeypatch):
    from tests.streams import errors_of, finish_of, text_of

    def broken(request, emit, stop):
        raise RuntimeError("the engine broke")  # past every handler of the reply: a bug, a failing emit

    with monkeypatch.context() as patch:
        patch.setattr(engine_backend, "_run", broken)
        events = collect_within(engine_backend, hi())
    assert finish_of(events) == "error" and "Try again" in errors_of(events)[0].message
    events = collect_within(engine_backend, hi())
    assert finish_of(events) == "length" and text_of(events) and not errors_of(events)


def test_a_dead_engine_thread_says_the_app_needs_a_restart_at_once(engine_backend, monkeypatch):
    import time

    from tests.streams import errors_of, finish_of

    def fatal(request, emit, stop):
        raise SystemExit("fatal")  # what no job handler catches: the thread ends

    monkeypatch.setattr(engine_backend, "_run", fatal)
    events = collect_within(engine_backend, hi())
    assert finish_of(events) == "error" and "Restart the app" in errors_of(events)[0].message
    started = time.perf_counter()
    events = collect_within(engine_backend, hi())
    assert finish_of(events) == "error" and "Restart the app" in errors_of(events)[0].message
    assert time.perf_counter() - started < 1.0


def test_a_stuck_engine_ends_waiting_turns_with_an_error_and_serves_again_once_free(engine_backend, monkeypatch):
    import threading

    from tests.streams import errors_of, finish_of, text_of

    release = threading.Event()
    original = engine_backend._run

    def stuck_once(request, emit, stop):  # a reply hung in a kernel, until released
        monkeypatch.setattr(engine_backend, "_run", original)
        release.wait(30)
        original(request, emit, stop)

    monkeypatch.setattr(engine_backend.engine, "stall_s", 1.5)
    monkeypatch.setattr(engine_backend, "_run", stuck_once)
    events = collect_within(engine_backend, hi(), seconds=10)
    assert finish_of(events) == "error" and "no progress" in errors_of(events)[0].message
    events = collect_within(engine_backend, hi(), seconds=10)  # still stuck: says so at once
    assert finish_of(events) == "error" and "Restart the app" in errors_of(events)[0].message
    # Free again: the stall check goes back to its usual patience, so a loaded machine's slow turn isn't
    # taken for another hang, and the next turn is served.
    monkeypatch.setattr(engine_backend.engine, "stall_s", 600.0)
    release.set()
    events = collect_within(engine_backend, hi())
    assert finish_of(events) == "length" and text_of(events), errors_of(events)


def test_the_openai_backend_encodes_files_off_the_event_loop(image_path, monkeypatch):
    import asyncio
    import threading
    import time

    from backends.openai import payloads
    from backends.openai.backend import OpenAIBackend, OpenAIOptions
    from backends.request import ChatRequest, MediaPart, Turn
    from tests.omni_server import OmniServer
    from tests.streams import finish_of

    encoded_on: list[threading.Thread] = []
    real_image_url = payloads._image_url

    def big_image_url(path, limits):  # a file big enough that decoding and encoding it takes a second
        encoded_on.append(threading.current_thread())
        time.sleep(1.0)
        return real_image_url(path, limits)

    monkeypatch.setattr(payloads, "_image_url", big_image_url)

    async def turn_beside_a_heartbeat(backend):
        beats: list[float] = []

        async def heartbeat():  # what every other user's stream needs: a loop that keeps turning
            while True:
                beats.append(time.perf_counter())
                await asyncio.sleep(0.02)

        beating = asyncio.create_task(heartbeat())
        await asyncio.sleep(0.05)
        events = [e async for e in backend.stream(ChatRequest(turns=(Turn.user(MediaPart("image", str(image_path)),
                                                                                 "What is it?"),)))]
        beating.cancel()
        return events, max(b - a for a, b in zip(beats, beats[1:])), threading.current_thread()

    with OmniServer("vllm-omni") as server:
        backend = OpenAIBackend(OpenAIOptions(api_base=server.url, speech="off"))
        events, longest_pause, loop_thread = asyncio.run(turn_beside_a_heartbeat(backend))
    assert finish_of(events) == "stop" and encoded_on
    assert loop_thread not in encoded_on
    assert longest_pause < 0.5, f"the event loop stood still for {longest_pause:.2f} s while a file was encoded"


def test_the_openai_backends_file_cache_stays_within_its_byte_budget(tmp_path, monkeypatch):
    from backends.openai import payloads
    from backends.openai.backend import OpenAIBackend, OpenAIOptions
    from backends.request import ChatRequest, MediaPart, Turn

    megabyte = 1 << 20
    encodes: list[str] = []

    def url_of(path, limits):  # a 6 MB data: URL per picture (a large photo, a short video)
        encodes.append(path)
        return "data:image/png;base64," + "A" * (6 * megabyte)

    monkeypatch.setattr(payloads, "_image_url", url_of)
    backend = OpenAIBackend(OpenAIOptions(model="m", media_cache_mb=64))
    files = []
    for index in range(30):  # one long conversation, a new picture each turn: every turn resends them all
        files.append(tmp_path / f"photo{index}.png")
        files[-1].write_bytes(b"x")
        backend._payloads.messages(ChatRequest(turns=tuple(Turn.user(MediaPart("image", str(f)), "And this?")
                                                           for f in files[-3:])))
        held = sum(len(url) for url in backend._payloads.cache.urls.values())
        assert held <= 64 * megabyte, f"the cache holds {held / megabyte:.0f} MB, over its 64 MB budget"
    assert len(encodes) == 30, "the files of recent turns are reused, not encoded again"


class PacedText:
    """A stand-in for vLLM's text side: a reply's token ids at a steady pace (the talker is what's tested)."""

    device = "paced test text"

    def __init__(self, tokenizer, seconds_per_token: float = 0.05):
        self.ids = tokenizer.encode("A short reply the talker speaks, one token after another.")
        self.tokenizer, self.pace = tokenizer, seconds_per_token

    async def tokens(self, request, prompt):
        import asyncio

        from backends.tokens import TokenDelta

        for index, token_id in enumerate(self.ids):
            await asyncio.sleep(self.pace)
            finish = "stop" if index == len(self.ids) - 1 else None
            yield TokenDelta(self.tokenizer.decode([token_id]), [token_id], 9, finish)

    def close(self) -> None:
        pass


def test_waiting_hybrid_turns_park_no_threads_and_it_advertises_the_one_reply_it_speaks(
        instruct_backend, tokenizer):
    import asyncio
    import time
    from concurrent.futures import ThreadPoolExecutor

    from backends.hybrid.backend import HybridBackend, TalkerSide
    from backends.request import ChatRequest, Sampling, Turn
    from backends.transformers.options import TransformersOptions
    from backends.vllm.backend import VLLMOptions
    from tests.streams import audio_of, errors_of, finish_of

    talker = TalkerSide(instruct_backend.checkpoint, TransformersOptions(
        talker_do_sample=False, max_speech_seconds=1.0, encoder_cache_mb=0),
        loaded=(instruct_backend.model, instruct_backend.processor))
    hybrid = HybridBackend(instruct_backend.checkpoint, VLLMOptions(max_num_seqs=4), engine=PacedText(tokenizer),
                           talker=talker)
    speaking = ChatRequest(turns=(Turn.user("Hi"),), sampling=Sampling(temperature=0), speaker="ethan")

    async def four_users_at_once():
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2))

        async def turn():
            return [event async for event in hybrid.stream(speaking)]

        turns = [asyncio.create_task(turn()) for _ in range(4)]
        await asyncio.sleep(1.0)  # one reply speaks, three wait for the talker
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.to_thread(time.sleep, 0), 60)  # what any other file read or encode needs
        return time.perf_counter() - started, await asyncio.gather(*turns)

    try:
        waited, replies = asyncio.run(four_users_at_once())
    finally:
        talker.close()
    assert waited < 0.5, f"a worker thread came free only after {waited:.1f} s: waiting turns held them all"
    for events in replies:
        assert finish_of(events) == "stop" and audio_of(events).size and not errors_of(events)
    assert hybrid.info.max_concurrency == 1, "the talker speaks one reply at a time"


def test_a_call_on_the_engine_thread_that_raises_gives_its_error_to_the_caller():
    """The hybrid's talker side waits on ``EngineThread.call`` for each reply's speech; an error raised there (the
    talker's loop gone) must reach the reply, which then says the speech is unavailable, not wait for ever."""
    from backends.transformers.engine_thread import EngineThread

    def broken():
        raise LookupError("the talker's loop is gone")

    async def call():
        return await asyncio.wait_for(EngineThread("test-call").call(broken), 10)

    with pytest.raises(LookupError, match="loop is gone"):
        asyncio.run(call())
