"""``/v1/realtime`` through the real ``openai`` SDK's realtime client, against the app launched as the other tests
launch it (the tiny model on the CPU). The backend is wrapped by ``RecordingBackend`` (tests/streams.py), which sees
every engine stream the API opens: what it was asked, what it answered, and whether the API closed it before its end."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import openai
import pytest
import soundfile

import api
from media import resample
from api.realtime.heard import heard_text
from tests.streams import RecordingBackend
from tests.test_app import launch
from turns.voice import VOICE_ASSISTANT_PROMPT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
OUTPUT_RATE = 24_000


@pytest.fixture(scope="module")
def recorder(instruct_backend):
    return RecordingBackend(instruct_backend)


@pytest.fixture(scope="module")
def base_url(recorder):
    demo = launch(recorder, app_kwargs=api.app_kwargs(recorder))
    yield demo.local_url + "v1"
    demo.close()


def connect(base_url: str):
    return openai.AsyncOpenAI(base_url=base_url, api_key="unused").realtime.connect(model="qwen3-omni")


async def until(connection, kind: str, timeout: float = 30.0, arrivals: list | None = None) -> list:
    """Every event up to and including the first of ``kind`` (``arrivals``: when each came)."""
    events = []
    try:
        async with asyncio.timeout(timeout):
            async for event in connection:
                events.append(event)
                if arrivals is not None:
                    arrivals.append(time.perf_counter())
                if event.type == kind:
                    return events
    except TimeoutError:
        raise AssertionError(f"no {kind} in {timeout} s, only {[e.type for e in events]}") from None
    raise AssertionError(f"the connection ended before {kind}: {[e.type for e in events]}")


async def ask(connection, text: str, **response) -> None:
    """A user's text message, and a response asked for it."""
    await connection.conversation.item.create(item={"type": "message", "role": "user",
                                                    "content": [{"type": "input_text", "text": text}]})
    await connection.response.create(**({"response": response} if response else {}))


async def text_turn(connection, text: str, **response) -> list:
    await ask(connection, text, **response)
    return await until(connection, "response.done")


def pcm(events) -> np.ndarray:
    chunks = [np.frombuffer(base64.b64decode(e.delta), "<i2") for e in events
              if e.type == "response.output_audio.delta"]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


def types(events) -> list[str]:
    return [e.type for e in events]


def as_pcm16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16)


async def manual_turns(connection, modalities=("text",)) -> None:
    await until(connection, "session.created")
    await connection.session.update(session={"type": "realtime", "output_modalities": list(modalities),
                                             "audio": {"input": {"turn_detection": None}}})
    await until(connection, "session.updated")


def test_a_text_turn_is_answered_with_text_then_with_speech(base_url, recorder):
    async def run():
        async with connect(base_url) as connection:
            await manual_turns(connection)
            written = await text_turn(connection, "What is the capital of France?")
            spoken = await text_turn(connection, "And of Italy?", output_modalities=["audio"])
            return written, spoken

    written, spoken = asyncio.run(run())
    order = [t for t in types(written) if not t.endswith(".delta")]
    assert order == ["conversation.item.added", "conversation.item.done", "response.created",
                     "response.output_item.added", "conversation.item.added", "response.content_part.added",
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "conversation.item.done", "response.done"]
    deltas = "".join(e.delta for e in written if e.type == "response.output_text.delta")
    done = written[-1].response
    assert deltas and deltas == written[types(written).index("response.output_text.done")].text
    assert done.status in ("completed", "incomplete") and done.output[0].content[0].text == deltas
    assert done.usage.output_tokens > 0 and done.usage.input_tokens > 0
    assert "response.output_audio.delta" not in types(written)

    assert "response.output_audio_transcript.delta" in types(spoken) and spoken[-1].response.status != "failed"
    audio = pcm(spoken)
    engine = recorder.streams[-1]
    assert engine.prompt == "And of Italy?" and len(audio) > 0
    np.testing.assert_array_equal(audio, as_pcm16(np.concatenate(engine.audio)))  # all of it, in order, 24 kHz
    transcript = "".join(e.delta for e in spoken if e.type == "response.output_audio_transcript.delta")
    assert transcript == engine.text == spoken[-1].response.output[0].content[0].transcript


@pytest.fixture(scope="module")
def speech(speech_path) -> np.ndarray:
    """espeak-ng's question at 24 kHz (the protocol's default input rate), its leading and trailing silence cut."""
    samples, rate = soundfile.read(speech_path, dtype="float32")
    samples = resample(samples, rate, OUTPUT_RATE)
    voiced = np.flatnonzero(np.abs(samples) > 0.02)
    return samples[voiced[0]: voiced[-1] + 1]


async def speak(connection, samples: np.ndarray, rate: int, *, chunk_s: float = 0.04, real_time: bool = True):
    """Append ``samples`` in small pieces, paced like a microphone; returns when the last was sent."""
    step = int(rate * chunk_s)
    started = time.perf_counter()
    for n, start in enumerate(range(0, len(samples), step)):
        piece = as_pcm16(samples[start:start + step]).tobytes()
        await connection.input_audio_buffer.append(audio=base64.b64encode(piece).decode())
        if real_time:
            await asyncio.sleep(max(0.0, started + (n + 1) * chunk_s - time.perf_counter()))
    return time.perf_counter()


def test_a_spoken_turn_is_heard_by_server_vad_and_answered_with_speech(base_url, recorder, speech):
    async def run():
        async with connect(base_url) as connection:
            created = (await until(connection, "session.created"))[-1].session
            await connection.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": {
                "type": "server_vad", "silence_duration_ms": 500}}}})
            await until(connection, "session.updated")
            arrivals = []
            listening = asyncio.create_task(until(connection, "response.done", arrivals=arrivals))
            speech_end = await speak(connection, speech, OUTPUT_RATE)
            await speak(connection, np.zeros(OUTPUT_RATE), OUTPUT_RATE)  # a second of silence ends the turn
            events = await listening
            marks = {}
            for event, at in zip(events, arrivals):
                marks.setdefault(event.type, (at - speech_end) * 1000)
            return created, events, marks

    created, events, marks = asyncio.run(run())
    assert created.audio.input.format.rate == 24_000 and created.audio.output.format.rate == OUTPUT_RATE
    # A client that says nothing gets Qwen3-Omni's voice-chat prompt and voice, as the Live tab does.
    assert created.instructions == VOICE_ASSISTANT_PROMPT and created.audio.output.voice == "ethan"
    assert recorder.streams[-1].request.system_prompt == VOICE_ASSISTANT_PROMPT
    assert created.audio.input.turn_detection.type == "server_vad"
    kinds = types(events)
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed", "response.created", "response.output_audio.delta"):
        assert kind in kinds, kind
    assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed") \
        < kinds.index("response.created")
    started, stopped = (events[kinds.index(k)] for k in ("input_audio_buffer.speech_started",
                                                         "input_audio_buffer.speech_stopped"))
    talk_ms = len(speech) * 1000 / OUTPUT_RATE
    assert started.audio_start_ms < 400 and abs(stopped.audio_end_ms - talk_ms) < 400, (started, stopped, talk_ms)
    committed = events[kinds.index("input_audio_buffer.committed")]
    user_item = next(e.item for e in events if e.type == "conversation.item.added" and e.item.role == "user")
    assert user_item.id == committed.item_id == stopped.item_id and user_item.content[0].type == "input_audio"
    engine = recorder.streams[-1]
    audio = pcm(events)
    np.testing.assert_array_equal(audio, as_pcm16(np.concatenate(engine.audio)))
    assert 0.08 <= len(audio) / OUTPUT_RATE <= 2.5  # the tiny model speaks at most 2 s here
    assert events[-1].response.status in ("completed", "incomplete")
    steps = ("input_audio_buffer.speech_stopped", "response.created", "response.output_audio_transcript.delta",
             "response.output_audio.delta")
    print("\nafter the last voiced sample was sent (ms):", {k.split(".", 1)[-1]: round(marks[k]) for k in steps})
    assert marks["response.output_audio.delta"] < 5000


def test_cancel_mid_reply_stops_the_engine_and_the_session_goes_on(base_url, recorder):
    async def run():
        async with connect(base_url) as connection:
            await manual_turns(connection, ["audio"])
            await ask(connection, "Talk.")
            await until(connection, "response.output_audio_transcript.delta")
            await connection.response.cancel()
            cancelled = await until(connection, "response.done")
            again = await text_turn(connection, "Again?")
            return cancelled, again

    cancelled, again = asyncio.run(run())
    response = cancelled[-1].response
    assert response.status == "cancelled" and response.status_details.reason == "client_cancelled"
    engine = next(s for s in recorder.streams if s.prompt == "Talk.")
    assert engine.closed and engine.done is None  # closed by the API before its end: the engine stopped
    assert again[-1].response.status in ("completed", "incomplete")
    # The next turn's history keeps of the cut reply only the text its speech had reached (none before any audio).
    transcript, reached = "", 0
    for event in cancelled:
        if event.type == "response.output_audio_transcript.delta":
            transcript += event.delta
        elif event.type == "response.output_audio.delta":
            reached = len(transcript)
    history = next(s for s in recorder.streams if s.prompt == "Again?").request.turns
    talk = [t.text for t in history].index("Talk.")
    kept = [t.text for t in history[talk + 1:-1]]
    heard = heard_text(transcript, reached, 1.0, len(pcm(cancelled)) / OUTPUT_RATE)
    assert kept == ([heard] if heard else []), (transcript, reached, kept)


def test_truncating_a_spoken_reply_keeps_only_what_was_heard(base_url, recorder):
    """The client played part of a reply (the user talked over the rest): the next turn's history holds only the
    text that part said."""
    async def run():
        async with connect(base_url) as connection:
            await manual_turns(connection, ["audio"])
            spoken = await text_turn(connection, "Tell me a long story.")
            item, played_ms = spoken[-1].response.output[0].id, len(pcm(spoken)) * 1000 // OUTPUT_RATE
            refused = {}
            for name, fields in {"past the end": dict(item_id=item, audio_end_ms=played_ms + 1000),
                                 "unknown item": dict(item_id="item_nope", audio_end_ms=0)}.items():
                await connection.conversation.item.truncate(content_index=0, **fields)
                refused[name] = (await until(connection, "error"))[-1].error.code
            await connection.conversation.item.truncate(item_id=item, content_index=0, audio_end_ms=played_ms // 2)
            truncated = (await until(connection, "conversation.item.truncated"))[-1]
            await text_turn(connection, "Continue, please.")
            return spoken, played_ms, refused, truncated

    spoken, played_ms, refused, truncated = asyncio.run(run())
    assert played_ms > 0 and refused == {"past the end": "invalid_value", "unknown item": "item_not_found"}
    assert truncated.item_id == spoken[-1].response.output[0].id and truncated.audio_end_ms == played_ms // 2
    said, transcript, reached = spoken[-1].response.output[0].content[0].transcript, "", 0
    for event in spoken:  # what was written when the last audio came (all of it, once the reply completed)
        if event.type == "response.output_audio_transcript.delta":
            transcript += event.delta
        elif event.type == "response.output_audio.delta":
            reached = len(transcript)
    if spoken[-1].response.status == "completed":
        reached = len(said)
    history = [t for t in next(s for s in recorder.streams if s.prompt == "Continue, please.").request.turns]
    asked = [t.text for t in history].index("Tell me a long story.")
    kept = [t.text for t in history[asked + 1:-1]]
    heard = heard_text(said, reached, (played_ms // 2) / played_ms, (played_ms // 2) / 1000)
    assert len(said) > 4 and kept == ([heard] if heard else []), (said, kept)
    assert len(heard) <= len(said) // 2 + 1


def test_a_refused_truncate_leaves_the_reply_speaking(base_url):
    async def run():
        async with connect(base_url) as connection:
            await manual_turns(connection, ["audio"])
            await ask(connection, "Sing.")
            delta = (await until(connection, "response.output_audio.delta"))[-1]
            await connection.conversation.item.truncate(item_id=delta.item_id, content_index=0, audio_end_ms=10**7)
            return await until(connection, "response.done")

    events = asyncio.run(run())
    assert "error" in types(events) and events[-1].response.status != "cancelled"


@pytest.mark.parametrize(("text", "spoken", "fraction", "heard"), [
    ("Hello there, my friend.", 23, 0.6, "Hello there,"),  # 0.6 of it ends in "m": the broken word goes
    ("Привет, как дела?", 17, 0.5, "Привет,"),  # "как" cut after "к": in Cyrillic too
    ("Hello there, my friend.", 12, 1.0, "Hello there,"),  # the speech covered only what was written by then
    ("你好，我是通义千问。", 10, 0.5, "你好，我是"),  # no spaces: cut at the character
    ("Hello.", 6, 0.0, ""),
])
def test_the_heard_part_of_a_reply(text, spoken, fraction, heard):
    assert heard_text(text, spoken, fraction) == heard


def test_no_more_is_heard_than_a_fast_speaker_says_in_the_time_played():
    """The text runs ahead of the speech: a reply written whole when its first half second of audio came was
    heard only as far as half a second of speech goes (at most 20 characters a second, 7 in Chinese)."""
    text = "The tallest mountain in the world is Mount Everest, at 8,849 metres."
    assert heard_text(text, len(text), 1.0, 0.5) == "The"  # "The talles" (10 characters): its whole words
    assert heard_text("世界上最高的山是珠穆朗玛峰。", 14, 1.0, 1.0) == "世界上最高的山"


def test_talking_over_a_reply_cancels_it_and_is_answered_next(base_url, recorder, speech):
    """Barge-in, at 16 kHz input (SGLang-Omni's rate, declared in the session)."""
    async def run():
        async with connect(base_url) as connection:
            await until(connection, "session.created")
            await connection.session.update(session={"type": "realtime", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 16_000},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}})
            updated = (await until(connection, "session.updated"))[-1].session
            await ask(connection, "Go on.")
            await until(connection, "response.output_audio.delta")
            talk = resample(speech, OUTPUT_RATE, 16_000)
            await speak(connection, np.concatenate([talk, np.zeros(16_000, np.float32)]), 16_000, real_time=False)
            interrupted = await until(connection, "response.done")
            answered = await until(connection, "response.done")
            return updated, interrupted, answered

    updated, interrupted, answered = asyncio.run(run())
    assert updated.audio.input.format.rate == 16_000
    kinds = types(interrupted)
    assert "input_audio_buffer.speech_started" in kinds
    response = interrupted[-1].response
    assert response.status == "cancelled" and response.status_details.reason == "turn_detected"
    engine = next(s for s in recorder.streams if s.prompt == "Go on.")
    assert engine.closed and engine.done is None
    assert "input_audio_buffer.committed" in types(answered) and answered[-1].response.status != "cancelled"
    assert recorder.streams[-1].prompt == ""  # the spoken turn: audio only


def test_refused_events_get_errors_and_the_session_goes_on(base_url):
    async def run():
        async with connect(base_url) as connection:
            await manual_turns(connection)
            errors = {}
            sends = {
                "voice": {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {
                    "voice": "alloy"}}}},
                "semantic": {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
                    "turn_detection": {"type": "semantic_vad"}}}}},
                "threshold": {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
                    "turn_detection": {"type": "server_vad", "threshold": 3}}}}},
                "unknown": {"type": "session.fly"},
                "missing": {"type": "input_audio_buffer.append"},
                "commit empty": {"type": "input_audio_buffer.commit"},
                "cancel idle": {"type": "response.cancel"},
            }
            for name, event in sends.items():
                await connection.send_raw(json.dumps(event))
                errors[name] = (await until(connection, "error"))[-1].error
            await connection.send_raw("{not json")
            errors["json"] = (await until(connection, "error"))[-1].error
            huge = base64.b64encode(bytes(7 * 2**20)).decode()  # 9.3 MB of base64: past the 8 MiB a message may be
            await connection.input_audio_buffer.append(audio=huge)
            errors["oversized"] = (await until(connection, "error"))[-1].error
            minute = base64.b64encode(bytes(2 * OUTPUT_RATE * 61)).decode()  # 61 s: past the buffer's 60 s
            await connection.input_audio_buffer.append(audio=minute)
            errors["overflow"] = (await until(connection, "error"))[-1].error
            return errors, await text_turn(connection, "Still there?")

    errors, answer = asyncio.run(run())
    codes = {name: error.code for name, error in errors.items()}
    assert codes == {"voice": "invalid_value", "semantic": "unsupported_turn_detection", "threshold": "invalid_value",
                     "unknown": "unknown_event", "missing": "invalid_event",
                     "commit empty": "input_audio_buffer_commit_empty", "cancel idle": "response_cancel_not_active",
                     "json": "invalid_json", "oversized": "message_too_large", "overflow": "input_audio_buffer_full"}
    assert "chelsie" in errors["voice"].message and errors["voice"].param == "session.audio.output.voice"
    assert answer[-1].response.status in ("completed", "incomplete")


def test_an_image_item_takes_what_the_chat_api_takes(base_url, recorder, image_path, tmp_path):
    """A GIF or BMP picture (not only PNG, JPEG, WebP) reaches the engine; a URL to fetch is refused by name."""
    from PIL import Image

    def data_url(fmt: str) -> str:
        path = tmp_path / f"picture.{fmt}"
        Image.open(image_path).convert("RGB").save(path, format=fmt)
        return f"data:image/{fmt};base64,{base64.b64encode(path.read_bytes()).decode()}"

    def item(url: str, text: str) -> dict:
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text},
                                                               {"type": "input_image", "image_url": url}]}

    async def run():
        async with connect(base_url) as connection:
            await manual_turns(connection)
            added = []
            for fmt in ("gif", "bmp"):
                await connection.conversation.item.create(item=item(data_url(fmt), f"A {fmt}."))
                added.append((await until(connection, "conversation.item.done"))[-1].item.content[0].text)
            await connection.conversation.item.create(item=item("https://example.com/cat.png", "A link."))
            refused = (await until(connection, "error"))[-1].error
            await connection.response.create()
            return added, refused, await until(connection, "response.done")

    added, refused, answer = asyncio.run(run())
    assert added == ["A gif.", "A bmp."] and answer[-1].response.status in ("completed", "incomplete")
    assert refused.code == "invalid_image" and refused.param == "item.content[1].image_url"
    assert "fetches no https URLs" in refused.message
    turns = recorder.streams[-1].request.turns
    assert [[p.path.rsplit(".", 1)[-1] for p in t.media] for t in turns[-2:]] == [["gif"], ["bmp"]]


def test_a_client_that_leaves_mid_reply_frees_its_engine_work(base_url, recorder):
    async def run():
        async with connect(base_url) as connection:
            await manual_turns(connection, ["audio"])
            await ask(connection, "Bye.")
            await until(connection, "response.output_audio_transcript.delta")
        engine = next(s for s in recorder.streams if s.prompt == "Bye.")
        return engine, await engine.closed_within(5)

    engine, seconds = asyncio.run(run())
    assert engine.closed and engine.done is None, "the engine's stream ran on after the client left"
    assert seconds < 1.0
    assert recorder.open == 0


def test_eight_sessions_at_once_each_get_their_own_answer(base_url, recorder):
    words = ["apples", "rivers", "stars", "trains", "clouds", "violins", "deserts", "lanterns"]
    prompts = [f"Question number {n}: {word}?" for n, word in enumerate(words)]

    async def one(prompt: str):
        async with connect(base_url) as connection:
            await manual_turns(connection, ["audio"])
            return await text_turn(connection, prompt)

    async def run():
        return await asyncio.gather(*(one(p) for p in prompts))

    answers = asyncio.run(run())
    assert len({a[-1].response.id for a in answers}) == 8
    for prompt, events in zip(prompts, answers):
        engine = next(s for s in recorder.streams if s.prompt == prompt)
        transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
        assert transcript == engine.text and events[-1].response.status in ("completed", "incomplete")
        np.testing.assert_array_equal(pcm(events), as_pcm16(np.concatenate(engine.audio)) if engine.audio
                                      else np.zeros(0, np.int16))


def test_a_client_gone_mid_reply_ends_the_response_without_calling_it_failed(caplog):
    """A send that fails (the client left before the server's read loop noticed) is the client's leaving, not the
    engine failing: the response ends at once, its engine stream is closed, and no "failed" is logged."""
    from api.realtime.protocol import ClientGone
    from api.realtime.response import Response
    from backends.events import TextDelta
    from backends.request import ChatRequest, Turn

    closed, sent = [], []

    class Talkative:
        async def stream(self, request):
            try:
                for _ in range(100):
                    yield TextDelta("word ")
            finally:
                closed.append(True)

    async def send(event):
        if event.type.endswith(".delta") and len(sent) >= 6:
            raise ClientGone("WebSocketDisconnect")
        sent.append(event)

    response = Response(send, speaks=False, voice=None, max_output_tokens=64, on_end=lambda r: None)
    with caplog.at_level("WARNING", logger="api.realtime"), pytest.raises(ClientGone):
        asyncio.run(response.run(Talkative(), ChatRequest(turns=(Turn.user("Hi"),))))
    assert closed and response.status != "failed" and response.ended
    assert not [r for r in caplog.records if "failed" in r.getMessage()]
