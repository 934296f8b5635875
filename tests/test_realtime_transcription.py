"""``/v1/realtime``'s input audio transcription (``audio.input.transcription``, api/realtime/transcription.py)
through the real ``openai`` SDK client, against the app launched as tests/test_realtime.py launches it.

The engine is the tiny model's, with its transcriptions scripted where a test needs to know their words, or to make
one fail or hang (``Scripted``); ``RecordingBackend`` (tests/streams.py) sees every engine stream the API opens."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from api.realtime.protocol import SPEECH_LANGUAGES
from api.realtime.transcription import CHINESE, GRACE_S, RANDOM_WEIGHTS_TOKENS, instruction
from backends.base import Backend
from backends.events import Done, Error, Metrics, TextDelta
from backends.request import MediaPart, TextPart
from messages import verbatim
from tests.streams import RecordingBackend
from tests.test_realtime import (OUTPUT_RATE, as_pcm16, base_url, connect, speak, speech, types,  # noqa: F401
                                 until)
from tests.test_realtime_items import retrieve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

INSTRUCTIONS = {instruction(None), *(instruction(code) for code in SPEECH_LANGUAGES)}
FAIL, HANG, ENGINE = "fail", "hang", "engine"
WORDS = ["Hello Ada, ", "how are ", "you?"]
TRANSCRIPT = "".join(WORDS)
DELTA, COMPLETED, FAILED = (f"conversation.item.input_audio_transcription.{end}" for end in ("delta", "completed",
                                                                                              "failed"))


def is_transcription(request) -> bool:
    return request.turns[-1].text in INSTRUCTIONS


class Scripted(Backend):
    """The tiny model answers replies; each transcription does what ``script`` says next: WORDS' deltas (when the
    script is a list of words), FAIL (an engine error), HANG (a word, then nothing until its stream is closed) or
    ENGINE (the tiny model transcribes; also when the script is empty)."""

    def __init__(self, inner: Backend):
        self.inner, self.info = inner, inner.info
        self.script: list = []
        self.at_once = self.most_at_once = 0

    async def stream(self, request):
        what = self.script.pop(0) if is_transcription(request) and self.script else ENGINE
        if what == ENGINE:
            async for event in self.inner.stream(request):
                yield event
            return
        self.at_once += 1
        self.most_at_once = max(self.most_at_once, self.at_once)
        try:
            if what == FAIL:
                yield Error(verbatim("The audio could not be read."), "input")
                yield Done("error")
                return
            for word in what if isinstance(what, list) else [what]:
                await asyncio.sleep(0.05)
                yield TextDelta(word)
            if what == HANG:
                await asyncio.Event().wait()
            yield Metrics(prompt_tokens=40, output_tokens=len(what))
            yield Done("stop")
        finally:
            self.at_once -= 1


@pytest.fixture(scope="module")
def scripted(instruct_backend):
    return Scripted(instruct_backend)


@pytest.fixture(scope="module")
def recorder(scripted):
    return RecordingBackend(scripted)


def transcriptions(recorder) -> list:
    return [s for s in recorder.streams if is_transcription(s.request)]


async def session(connection, transcription: dict | None, *, vad: bool = False, modality: str = "audio"):
    await until(connection, "session.created")
    audio = {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300} if vad else None}}
    if transcription is not None:
        audio["input"]["transcription"] = transcription
    await connection.session.update(session={"type": "realtime", "output_modalities": [modality], "audio": audio})
    return (await until(connection, "session.updated"))[-1].session


async def commit(connection, samples: np.ndarray) -> None:
    await connection.input_audio_buffer.append(audio=base64.b64encode(as_pcm16(samples).tobytes()).decode())
    await connection.input_audio_buffer.commit()


async def until_all(connection, kinds: set[str], timeout: float = 30.0) -> list:
    """Every event until one of each of ``kinds`` has come."""
    events, missing = [], set(kinds)
    try:
        async with asyncio.timeout(timeout):
            while missing:
                events.append(await connection.recv())
                missing.discard(events[-1].type)
    except TimeoutError:
        raise AssertionError(f"no {missing} in {timeout} s, only {types(events)}") from None
    return events


async def quiet(connection, seconds: float) -> list:
    """What comes in the next ``seconds`` (nothing, when all is done)."""
    events = []
    try:
        async with asyncio.timeout(seconds):
            async for event in connection:
                events.append(event)
    except TimeoutError:
        pass
    return events


def test_the_instruction_is_qwen3_omnis_own_for_speech_recognition():
    assert instruction(None) == "Transcribe the audio into text."
    assert instruction("en") == "Transcribe the English audio into text."
    assert instruction("fr") == "Transcribe the French audio into text."
    assert instruction("zh") == CHINESE == "请将这段中文语音转换为纯文本。"


def test_transcription_is_off_unless_asked_and_its_settings_are_checked(base_url, recorder, speech):
    async def run():
        async with connect(base_url) as connection:
            created = await session(connection, None)
            asked = len(recorder.streams)
            await commit(connection, speech)
            await connection.response.create()
            events = await until(connection, "response.done") + await quiet(connection, GRACE_S + 1)
            errors = {}
            for name, transcription in {"language": {"model": "whisper-1", "language": "xx"},
                                        "delay": {"model": "gpt-realtime-whisper", "delay": "low"}}.items():
                await connection.session.update(session={"type": "realtime", "audio": {"input": {
                    "transcription": transcription}}})
                errors[name] = (await until(connection, "error"))[-1].error
            await connection.session.update(session={"type": "realtime", "audio": {"input": {"transcription": {
                "model": "gpt-4o-transcribe", "language": "EN", "prompt": "Names: Ada."}}}})
            on = (await until(connection, "session.updated"))[-1].session
            await connection.session.update(session={"type": "realtime", "audio": {"input": {"transcription": None}}})
            off = (await until(connection, "session.updated"))[-1].session
            return created, events, recorder.streams[asked:], errors, on, off

    created, events, asked, errors, on, off = asyncio.run(run())
    assert created.audio.input.transcription is None
    assert events[-1].type == "response.done" and not [t for t in types(events) if ".input_audio_transcription." in t]
    assert len(asked) == 1 and not is_transcription(asked[0].request), "the engine was asked for the reply only"
    assert (errors["language"].code, errors["language"].param) == ("invalid_value",
                                                                   "session.audio.input.transcription.language")
    assert "en, zh" in errors["language"].message
    assert errors["delay"].code == "unsupported_value"
    echoed = on.audio.input.transcription
    assert (echoed.model, echoed.language, echoed.prompt) == ("gpt-4o-transcribe", "en", "Names: Ada.")
    assert off.audio.input.transcription is None


def test_a_spoken_turn_is_transcribed_after_its_reply_begins_and_only_the_client_gets_the_words(
        base_url, recorder, scripted, speech):
    """Server VAD ends the turn and asks the reply; the transcription starts once the reply's first audio went out,
    streams its words and fills the item; the model's next turn hears the audio, never the words."""
    scripted.script = [WORDS]

    async def run():
        async with connect(base_url) as connection:
            updated = await session(connection, {"model": "whisper-1", "language": "en", "prompt": "Names: Ada."},
                                    vad=True)
            await speak(connection, np.concatenate([speech, np.zeros(OUTPUT_RATE, np.float32)]), OUTPUT_RATE,
                        real_time=False)
            events = await until_all(connection, {COMPLETED, "response.done"})
            item_id = next(e for e in events if e.type == "input_audio_buffer.committed").item_id
            item = await retrieve(connection, item_id)
            await connection.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "And then?"}]})
            await connection.response.create()
            await until(connection, "response.done")
            return updated, events, item

    updated, events, item = asyncio.run(run())
    assert updated.audio.input.transcription.model == "whisper-1"
    kinds = types(events)
    deltas = [e for e in events if e.type == DELTA]
    completed = events[kinds.index(COMPLETED)]
    assert [d.delta for d in deltas] == WORDS and completed.transcript == TRANSCRIPT
    assert {d.item_id for d in deltas} == {completed.item_id} == {item.id} and completed.content_index == 0
    assert completed.usage.type == "tokens" and completed.usage.input_tokens == 40
    assert kinds.index("response.output_audio.delta") < kinds.index(DELTA), "the reply's first audio comes first"
    assert item.content[0].transcript == TRANSCRIPT, "retrieve gives the transcript"

    transcribed = transcriptions(recorder)[-1]
    reply = next(s for s in reversed(recorder.streams) if not is_transcription(s.request) and s.prompt == "")
    assert recorder.streams.index(reply) < recorder.streams.index(transcribed)
    request = transcribed.request
    (turn,) = request.turns
    assert turn.role == "user" and [type(p) for p in turn.parts] == [MediaPart, TextPart]
    assert turn.parts[0].kind == "audio" and turn.parts[0].path == reply.request.turns[-1].parts[0].path
    assert turn.parts[1].text == "Transcribe the English audio into text."
    assert request.system_prompt == "Names: Ada." and not request.return_audio
    assert request.sampling.greedy and request.sampling.max_new_tokens == RANDOM_WEIGHTS_TOKENS

    following = recorder.stream_for("And then?").request.turns
    spoken = [t for t in following if t.role == "user" and t.media]
    assert spoken and all(not p.text for t in spoken for p in t.parts if isinstance(p, TextPart))
    assert not any(TRANSCRIPT in t.text for t in following), "the transcript never reaches the model"


def test_the_engine_transcribes_a_committed_turn_and_an_audio_item_with_its_own_words(base_url, recorder, speech):
    """The tiny model's own transcription (random words): deltas, then the same text completed and in the item.
    A client's commit with no response, then an audio item added with conversation.item.create."""
    async def run():
        async with connect(base_url) as connection:
            await session(connection, {"model": "qwen3-omni"})
            await commit(connection, speech)
            first = await until(connection, COMPLETED)
            pcm = base64.b64encode(as_pcm16(speech).tobytes()).decode()
            await connection.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Listen:"}, {"type": "input_audio", "audio": pcm}]})
            second = await until(connection, COMPLETED)
            return first, second, await retrieve(connection, second[-1].item_id)

    first, second, item = asyncio.run(run())
    engine = transcriptions(recorder)[-2:]
    for events, stream in zip((first, second), engine):
        completed = events[-1]
        assert completed.transcript == "".join(e.delta for e in events if e.type == DELTA) == stream.text
        assert stream.request.turns[0].parts[1].text == "Transcribe the audio into text."
        assert stream.done in ("stop", "length") and not stream.request.return_audio
    assert second[-1].content_index == 1 and item.content[1].transcript == second[-1].transcript
    assert item.content[0].text == "Listen:"


def test_a_failed_transcription_is_reported_and_the_next_turn_is_transcribed(base_url, scripted, speech):
    scripted.script = [FAIL, WORDS]

    async def run():
        async with connect(base_url) as connection:
            await session(connection, {"model": "whisper-1"}, modality="text")
            turns = []
            for ending in (FAILED, COMPLETED):
                await commit(connection, speech)
                await connection.response.create()
                turns.append(await until_all(connection, {"response.done", ending}))
            return turns, await retrieve(connection, turns[0][0].item_id)

    (failed, done), item = asyncio.run(run())
    report = next(e for e in failed if e.type == FAILED)
    assert report.item_id == failed[0].item_id and report.content_index == 0
    assert report.error.code == "transcription_failed" and "could not be read" in report.error.message
    assert item.content[0].transcript is None
    assert types(failed).index("response.output_text.delta") < types(failed).index(FAILED)
    assert next(e for e in done if e.type == COMPLETED).transcript == TRANSCRIPT


def test_deleting_the_item_or_closing_the_session_stops_its_transcription(base_url, recorder, scripted, speech):
    """Commits with no reply: each transcription starts after the grace; a hanging one's engine stream is closed
    when its item is deleted, and when the session ends. One runs at a time: the next waits for the first."""
    scripted.script = [HANG, WORDS, HANG]
    scripted.most_at_once = 0

    async def run():
        async with connect(base_url) as connection:
            await session(connection, {"model": "whisper-1"})
            await commit(connection, speech)
            await commit(connection, speech)
            first = (await until(connection, DELTA))[-1]
            hanging = transcriptions(recorder)[-1]
            queued = len(transcriptions(recorder))
            await asyncio.sleep(0.5)
            waited = len(transcriptions(recorder)) == queued  # the second waits while the first runs
            await connection.conversation.item.delete(item_id=first.item_id)
            deleted_in = await hanging.closed_within(5)
            second = await until(connection, COMPLETED)
            await commit(connection, speech)
            await until(connection, DELTA)
            last = transcriptions(recorder)[-1]
        return first, waited, hanging, deleted_in, second, last, await last.closed_within(5)

    first, waited, hanging, deleted_in, second, last, closed_in = asyncio.run(run())
    assert waited and scripted.most_at_once == 1
    assert hanging.closed and hanging.done is None and deleted_in < 1.0
    assert FAILED not in types(second) and COMPLETED in types(second) and second[-1].item_id != first.item_id
    assert second[-1].transcript == TRANSCRIPT
    assert last is not hanging and last.closed and last.done is None and closed_in < 1.0, "closed with the session"
    assert recorder.open == 0
