"""Defects of the Chat handlers (issue 23), on a fake engine: no model, no server.

The handlers are taken from the Blocks they are wired into and driven as Gradio drives them:
an async generator read update by update and closed (``aclose``) when the user presses Stop or
closes the tab.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import json
import threading
import time
import wave

import av
import gradio as gr
import numpy as np
import pytest

import ui.chat.feedback
import ui.hashing
from backends.base import Backend, BackendInfo
from backends.events import OUTPUT_SAMPLE_RATE, AudioChunk, Done, TextDelta
from ui.chat import tab as chat
from ui.chat.session import ChatSession
from ui.chat.feedback import FeedbackLog
from ui.reply import ReplyState
from ui.reply_player import ENCODERS, reply_player
from ui.streaming import AUDIO_FLUSH_S, EventPump, reply_updates

TOKEN_S = 0.002


class OneSlotEngine(Backend):
    """An engine with one slot: a request waits while another runs, and one that is never stopped
    generates all of ``max_new_tokens`` (TOKEN_S each) before the slot is free again."""

    def __init__(self):
        self.info = BackendInfo(backend="fake", model="fake", kind="instruct", device="cpu", max_concurrency=1)
        self.started = self.finished = self.tokens = 0
        self.running = False

    async def stream(self, request):
        self.started += 1
        try:
            while self.running:  # the one slot is taken
                await asyncio.sleep(0.005)
            self.running = True
            try:
                for _ in range(request.sampling.max_new_tokens):
                    await asyncio.sleep(TOKEN_S)
                    self.tokens += 1
                    yield TextDelta("x")
                yield Done("length")
            finally:
                self.running = False
        finally:
            self.finished += 1

    @property
    def idle(self) -> bool:
        """No request of this engine is still running (or was started and never stopped)."""
        return self.started == self.finished and not self.running


def handlers(build, *args) -> dict:
    """A tab's event handlers by function name."""
    with gr.Blocks() as demo:
        build(*args)
    return {block_fn.fn.__name__: block_fn.fn for block_fn in demo.fns.values() if block_fn.fn is not None}


def send(fns: dict, session: ChatSession, text: str, files=(), max_tokens: int = 3):
    """The Chat tab's handler for one message, as Gradio calls it (settings in the order of the tab)."""
    return fns["chat"]({"text": text, "files": list(files)}, session, "", "", False, True,
                       0.0, 0.8, 20, max_tokens, -1, None)


async def run_to_end(generator) -> list:
    async with asyncio.timeout(5):  # a leaked request would hold the engine's slot far longer
        return [outputs async for outputs in generator]


# 1. Stop or a closed tab right after Send


@pytest.mark.parametrize("engine_started", [False, True], ids=["before-the-engine-ran", "while-it-generates"])
def test_a_chat_reply_closed_at_its_first_update_stops_the_engine(engine_started):
    async def scenario():
        engine = OneSlotEngine()
        fns = handlers(chat.build, engine)
        session = ChatSession()
        updates = send(fns, session, "hello", max_tokens=100_000)
        await anext(updates)  # "Thinking…": the first update, and here Stop lands
        if engine_started:
            await asyncio.sleep(0.05)
            assert engine.running
        await updates.aclose()
        await asyncio.sleep(0.05)  # a leaked request would go on generating here
        assert engine.idle, "the engine's request is stopped"
        tokens = engine.tokens
        await asyncio.sleep(0.05)
        assert engine.tokens == tokens
        assert not session.replying
        assert [turn.role for turn in session.turns] == ["user", "assistant"], "the user's turn is kept"
        assert session.messages[0] == {"role": "user", "content": "hello"}
        assert session.messages[-1] == {"role": "assistant", "content": "⏹ Stopped."}

        await run_to_end(send(fns, session, "again"))  # the next turn gets the slot at once
        assert [turn.role for turn in session.turns] == ["user", "assistant", "user", "assistant"]
        assert session.turns[-1].text == "xxx" and not session.replying and engine.idle
        session.close()

    asyncio.run(scenario())


# 3. Hashing the conversation's files for feedback


@pytest.fixture
def hashes(monkeypatch) -> list[int]:
    """The thread of each file hash."""
    threads = []
    real = ui.chat.feedback.file_hash

    def counted(path):
        threads.append(threading.get_ident())
        return real(path)

    monkeypatch.setattr(ui.chat.feedback, "file_hash", counted)
    return threads


@pytest.fixture
def picture(tmp_path) -> str:
    path = tmp_path / "picture.png"
    path.write_bytes(b"not really a picture" * 1000)
    return str(path)


def test_without_feedback_a_reply_hashes_nothing(hashes, picture):
    async def scenario():
        fns = handlers(chat.build, OneSlotEngine())
        session = ChatSession()
        await run_to_end(send(fns, session, "what is this?", [picture]))
        await run_to_end(send(fns, session, "and now?"))
        return session

    session = asyncio.run(scenario())
    assert len(session.turns) == 4
    assert hashes == []


def test_with_feedback_the_media_are_hashed_off_the_event_loop_and_logged(hashes, picture, tmp_path):
    log_path = tmp_path / "feedback.jsonl"
    engine = OneSlotEngine()
    fns = handlers(chat.build, engine, FeedbackLog(str(log_path)))
    session = ChatSession()

    async def scenario():
        await run_to_end(send(fns, session, "what is this?", [picture]))
        await run_to_end(send(fns, session, "and now?"))
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    assert loop_thread not in hashes, "no file is hashed on the event loop"

    # Gradio runs a plain function on a worker thread: the rating is where the files are hashed.
    assert not inspect.iscoroutinefunction(fns["rate"]) and not inspect.iscoroutinefunction(fns["comment_on_last"])
    reply = max(i for i, m in enumerate(session.messages) if m["role"] == "assistant")
    worker = threading.Thread(target=fns["rate"], args=(
        gr.LikeData(None, {"index": reply, "value": "xxx", "liked": True}), session, "good"))
    worker.start()
    worker.join()
    fns["comment_on_last"](session, "still good", None)
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [e["rating"] for e in entries] == ["up", None] and entries[0]["comment"] == "good"
    expected = hashlib.sha256(open(picture, "rb").read()).hexdigest()
    for entry in entries:
        assert [m["sha256"] for turn in entry["conversation"] for m in turn["media"]] == [expected]
        assert entry["model"] == "fake" and entry["sampling"]["max_new_tokens"] == 3


def test_a_file_is_read_once_however_often_its_conversation_is_rated(monkeypatch, picture):
    reads = []

    class CountingHashlib:
        @staticmethod
        def sha256():
            reads.append(1)
            return hashlib.sha256()

    monkeypatch.setattr(ui.hashing, "hashlib", CountingHashlib)
    ui.hashing._hashes.clear()
    first = ui.hashing.file_hash(picture)
    assert ui.hashing.file_hash(picture) == first and len(reads) == 1
    with open(picture, "ab") as file:
        file.write(b"more")
    assert ui.hashing.file_hash(picture) == hashlib.sha256(open(picture, "rb").read()).hexdigest() != first
    assert len(reads) == 2


# 8. The encoder nudge after speech


CHUNK_S = 0.32


def tone(seconds: float, start: int = 0) -> np.ndarray:
    n = np.arange(start, start + int(seconds * OUTPUT_SAMPLE_RATE))
    return (np.sin(2 * np.pi * 440 * n / OUTPUT_SAMPLE_RATE) * 0.4).astype(np.float32)


async def speech_then_pause(pause_s: float, chunks: tuple[float, ...] = (CHUNK_S,)):
    start = 0
    for seconds in chunks:
        yield AudioChunk(tone(seconds, start))
        start += int(seconds * OUTPUT_SAMPLE_RATE)
    await asyncio.sleep(pause_s)
    yield TextDelta("later")
    yield Done()


async def timed_updates(stream) -> list[tuple[float, object]]:
    start, updates = time.monotonic(), []
    async for player in reply_updates(EventPump(stream), ReplyState()):
        updates.append((time.monotonic() - start, player))
    return updates


def audio_frames(update) -> int | None:
    """The frames of a player update's audio (WAV bytes); None for an update that isn't audio."""
    if not isinstance(update, bytes):
        return None
    with wave.open(io.BytesIO(update), "rb") as reader:
        return reader.getnframes()


def is_nudge(update) -> bool:
    return audio_frames(update) == 0


def test_the_encoder_is_nudged_after_speech_without_a_new_chunk():
    updates = asyncio.run(timed_updates(speech_then_pause(1.0)))
    speech = [at for at, update in updates if audio_frames(update)]
    assert len(speech) == 1
    nudges = [at for at, update in updates if is_nudge(update)]
    assert nudges, "buffered audio is collected while nothing new arrives"
    assert all(speech[0] < at <= speech[0] + AUDIO_FLUSH_S + 0.1 for at in nudges)
    assert nudges[0] <= speech[0] + AUDIO_FLUSH_S + 0.05
    assert updates[-1][0] >= 1.0 and nudges[-1] < 1.0, "the nudges came before the next event"


SPOKEN = (CHUNK_S, 2.0)
"""The second chunk is long: its update leaves with the frames the encoder has ready at once, a part."""


def test_a_pause_in_speech_lets_the_browser_play_all_that_came_before_it():
    """Through the real player: the speech sent before a pause reaches the page during the pause
    (up to what AAC holds back until the stream ends), not with whatever comes after it."""
    player = reply_player("Reply")
    ENCODERS._fill(OUTPUT_SAMPLE_RATE, 1)
    time.sleep(0.5)  # the app starts its encoders long before the first reply

    async def scenario():
        segments = []
        try:
            async for update in reply_updates(EventPump(speech_then_pause(1.0, SPOKEN)), ReplyState()):
                if isinstance(update, bytes):  # the pause ends with text: a gr.skip() for the player
                    value = player.postprocess(update)
                    segment, _ = await player.stream_output(value, "pause", first_chunk=not segments)
                    segments.append(segment)
        finally:
            await player.flush_stream_output("pause")  # what Gradio does as the event ends
        return segments

    segments = asyncio.run(scenario())
    data = b"".join(s["data"] for s in segments if s is not None)
    with av.open(io.BytesIO(data), format="aac") as container:
        played = sum(frame.samples for frame in container.decode(audio=0))
    assert played >= sum(SPOKEN) * OUTPUT_SAMPLE_RATE - 3 * 1024
