"""The batched engine can't be wedged or crashed by one reply (issue 31), and the reply player survives many
sessions at once.

On the CPU with the tiny model and the real loops: a reply too long for a slot, sent between two spoken ones,
leaves nobody waiting for ever; a reply that fills its slot exactly leaves the others decoding; a stalled
engine says so even while people keep arriving; and eight spoken replies at once through the app all reach
their players.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from gradio_client import Client

from backends import build_backend
from backends.checkpoints import resolve_checkpoint
from backends.events import AudioChunk, Error, Metrics, TextDelta
from backends.request import ChatRequest, Sampling, Turn
from backends.transformers.batched.engine import Prepared
from backends.transformers.batched.thinker_loop import ThinkerJob
from tests.streams import audio_of, collect, errors_of, finish_of, text_of

SLOT_TOKENS = 256


@pytest.fixture(scope="module")
def small_slots(tiny_cache):
    """Four slots of SLOT_TOKENS: a long prompt doesn't fit one."""
    with build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=4.0, talker_do_sample=False,
                       batch_slots=4, static_cache_tokens=SLOT_TOKENS) as backend:
        assert backend.batched is not None
        yield backend


def request(text: str, tokens: int, speech: bool = False) -> ChatRequest:
    return ChatRequest(turns=(Turn.user(text),), sampling=Sampling(temperature=0, max_new_tokens=tokens),
                       return_audio=speech)


def prompt_tokens(backend, text: str) -> int:
    metrics = [e for e in collect(backend, request(text, 1)) if isinstance(e, Metrics)]
    return metrics[0].prompt_tokens


def test_a_reply_too_long_for_a_slot_between_two_spoken_ones_leaves_nobody_waiting(small_slots):
    """A speaks; B's prompt doesn't fit a slot (it runs alone once A is done); C, a spoken turn, arrives while
    B waits. All three are answered, each as it is alone (before the fix B and C waited for ever: C's talker
    row waited for B, and B for the talker to be empty)."""
    a = request("Tell me a long story about the sea and the ships on it.", 40, speech=True)
    b = request(" ".join(["a long question"] * 120), 8)
    c = request("Say hi.", 8, speech=True)
    alone = [collect(small_slots, r) for r in (a, b, c)]
    assert prompt_tokens(small_slots, b.turns[0].text) > SLOT_TOKENS
    engine = small_slots.batched

    async def run():
        results: dict = {}
        a_speaks = asyncio.Event()

        async def one(name, req, after=None):
            if after is not None:
                await after()
            events = []
            async for event in small_slots.stream(req):
                events.append(event)
                if isinstance(event, AudioChunk):
                    a_speaks.set()
            results[name] = events

        async def b_waits():
            while not any(job.alone is not None for job in list(engine.thinker._pending)):
                await asyncio.sleep(0.005)

        tasks = [one("a", a), one("b", b, a_speaks.wait), one("c", c, b_waits)]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        return results

    results = asyncio.run(run())
    for name, reference in zip("abc", alone):
        assert not errors_of(results[name]), name
        assert text_of(results[name]) == text_of(reference) and text_of(reference), name
        assert finish_of(results[name]) == finish_of(reference), name
    for name, reference in (("a", alone[0]), ("c", alone[2])):
        assert np.array_equal(audio_of(results[name]), audio_of(reference)) and audio_of(reference).size, name


def test_a_reply_that_fills_its_slot_exactly_leaves_the_replies_after_it_decoding(small_slots):
    """X (in the first slot) asks for exactly what its slot has left, so it ends with its slot full; Y, in the
    next slot, decodes on after it. Before the fix, X's idle row was written one past its slot's end in Y's
    next step: the thinker's loop died and Y with it."""
    x_text = " ".join(["please"] * 150)
    x = request(x_text, SLOT_TOKENS - prompt_tokens(small_slots, x_text))
    y = request("Count.", SLOT_TOKENS - prompt_tokens(small_slots, "Count."))
    alone = [collect(small_slots, r) for r in (x, y)]
    assert finish_of(alone[0]) == "length", "X must end by filling its slot (a random model could end it sooner)"
    assert len(alone[1]) > len(alone[0])

    async def run():
        x_started = asyncio.Event()

        async def first():
            events = []
            async for event in small_slots.stream(x):
                events.append(event)
                x_started.set()
            return events

        async def second():
            await x_started.wait()
            return [event async for event in small_slots.stream(y)]

        return await asyncio.wait_for(asyncio.gather(first(), second()), timeout=120)

    together = asyncio.run(run())
    assert small_slots.batched.thinker.alive, small_slots.batched.thinker.died
    for events, reference in zip(together, alone):
        assert not errors_of(events)
        assert text_of(events) == text_of(reference) and finish_of(events) == finish_of(reference)
    assert small_slots.batched.thinker.max_rows >= 2


def test_a_stalled_engine_says_so_even_while_people_keep_arriving(small_slots):
    """A reply that hangs (here: one run alone that never returns) makes no progress; newcomers arriving every
    0.2 s must not restart the clock: everyone waiting is told the engine is stuck."""
    engine = small_slots.batched
    release = threading.Event()

    def hung(emit, stop):
        job = ThinkerJob({}, None, None, stop, lambda reason: None, alone=lambda: release.wait(60))
        return Prepared(job)

    async def waiting(delay):
        await asyncio.sleep(delay)
        events = [event async for event in engine.stream(hung)]
        return time.monotonic(), events

    async def run():
        return await asyncio.wait_for(asyncio.gather(*(waiting(0.2 * n) for n in range(15))), timeout=30)

    stall = engine.stall_s
    engine.stall_s = 1.0
    started = time.monotonic()
    try:
        results = asyncio.run(run())
    finally:
        engine.stall_s = stall
        release.set()
    first_told = min(at for at, _ in results) - started
    assert first_told < 2.5, f"the first waiting user heard of the stall after {first_told:.1f} s"
    for _, events in results:
        assert [e.msg.code for e in events if isinstance(e, Error)] == ["engine.stuck"]
    deadline = time.monotonic() + 10
    while engine.replies and time.monotonic() < deadline:
        time.sleep(0.05)


def test_eight_spoken_replies_at_once_through_the_app_all_reach_their_players(tiny_cache, tmp_path):
    """Eight gradio_client sessions ask for speech at the same moment, twice: every session gets its reply's
    audio and no error. Before the fix, sessions sending the same chunk at once (every nudge is the same empty
    one) shared Gradio's cache file for it, and now and then one read it empty: ffmpeg failed on it and that
    reply's audio was lost."""
    from tests.test_app import assistant_texts, audio_files, launch

    with build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=2.0, talker_do_sample=False,
                       batch_slots=8) as backend:
        demo = launch(backend)
        try:
            def session(n: int, results: dict) -> None:
                client = Client(demo.local_url, verbose=False, download_files=str(tmp_path / str(n)))
                try:
                    job = client.submit({"text": "Hello there, who are you?", "files": []}, speak=True,
                                        temperature=0, max_tokens=16, api_name="/chat")
                    conversation, *_ = job.result()  # raises what failed the session
                    results[n] = ("".join(assistant_texts(conversation)), audio_files(conversation))
                except Exception as err:  # the failure this test is about surfaces here, per session
                    results[n] = err

            for _ in range(2):
                results: dict = {}
                threads = [threading.Thread(target=session, args=(n, results)) for n in range(8)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(timeout=300)
                failed = {n: r for n, r in results.items() if isinstance(r, Exception)}
                assert not failed and len(results) == 8, failed
                assert len({text for text, _ in results.values()}) == 1
                assert all(len(files) == 1 for _, files in results.values()), "every reply keeps its speech"
        finally:
            demo.close()
