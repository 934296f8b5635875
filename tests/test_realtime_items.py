"""``/v1/realtime``'s conversation items through the real ``openai`` SDK: ``conversation.item.retrieve`` (the item in
full, as the server holds it) and ``conversation.item.delete`` (gone from what the model is given). The app and its
``RecordingBackend`` as in tests/test_realtime.py, whose helpers these tests use."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from tests.test_realtime import (OUTPUT_RATE, as_pcm16, ask, base_url, connect, manual_turns, pcm,  # noqa: F401
                                 recorder, text_turn, until)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def retrieve(connection, item_id: str, passed: list | None = None):
    """The ``conversation.item.retrieved`` item, or the ``error`` event's error (``passed``: the events before)."""
    await connection.conversation.item.retrieve(item_id=item_id)
    async with asyncio.timeout(10):
        async for event in connection:
            if event.type == "conversation.item.retrieved":
                return event.item
            if event.type == "error":
                return event.error
            if passed is not None:
                passed.append(event)
    raise AssertionError("the connection ended before the item was retrieved")


def test_retrieve_gives_each_item_in_full_with_its_audio_and_image(base_url, image_path):
    """Text, an image (the data: URL sent back), committed audio (at the session's 16 kHz: the samples sent) and
    system text come back as the server holds them; an unknown id is an error."""
    image = f"data:image/png;base64,{base64.b64encode(image_path.read_bytes()).decode()}"
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8_000) / 16_000).astype(np.float32)

    async def run():
        async with connect(base_url) as connection:
            await until(connection, "session.created")
            await connection.session.update(session={"type": "realtime", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 16_000}, "turn_detection": None}}})
            await until(connection, "session.updated")
            await connection.conversation.item.create(item={"type": "message", "role": "system", "content": [
                {"type": "input_text", "text": "Be brief."}]})
            system = (await until(connection, "conversation.item.done"))[-1].item
            await connection.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": image}]})
            pictured = (await until(connection, "conversation.item.done"))[-1].item
            await connection.input_audio_buffer.append(audio=base64.b64encode(as_pcm16(tone).tobytes()).decode())
            await connection.input_audio_buffer.commit()
            heard = (await until(connection, "conversation.item.done"))[-1].item
            items = [await retrieve(connection, i.id) for i in (system, pictured, heard)]
            return pictured, items, await retrieve(connection, "item_nope")

    echoed, (system, pictured, heard), unknown = asyncio.run(run())
    assert echoed.content[1].image_url is None, "the echo of an added item leaves the image out"
    assert system.role == "system" and system.content[0].text == "Be brief."
    assert pictured.id == echoed.id and pictured.role == "user" and pictured.status == "completed"
    assert [(p.type, p.text) for p in pictured.content] == [("input_text", "What is this?"), ("input_image", None)]
    assert pictured.content[1].image_url == image
    assert heard.role == "user" and [p.type for p in heard.content] == ["input_audio"]
    samples = np.frombuffer(base64.b64decode(heard.content[0].audio), "<i2").astype(np.int32)
    np.testing.assert_allclose(samples, as_pcm16(tone), atol=1)  # through the model's 16 kHz file, unchanged
    assert unknown.code == "item_not_found" and unknown.param == "item_id"


def test_a_retrieved_reply_holds_its_text_so_far_then_only_what_was_heard_after_a_truncate(base_url, recorder):
    async def run():
        async with connect(base_url) as connection:
            await manual_turns(connection, ["audio"])
            await ask(connection, "Tell me a long story.")
            started = await until(connection, "response.output_audio.delta")
            speaking = await retrieve(connection, started[-1].item_id, started)
            spoken = started + await until(connection, "response.done")
            item, played_ms = spoken[-1].response.output[0].id, len(pcm(spoken)) * 1000 // OUTPUT_RATE
            whole = await retrieve(connection, item)
            await connection.conversation.item.truncate(item_id=item, content_index=0, audio_end_ms=played_ms // 2)
            await until(connection, "conversation.item.truncated")
            cut = await retrieve(connection, item)
            await text_turn(connection, "Continue, please.")
            return spoken, speaking, whole, cut

    spoken, speaking, whole, cut = asyncio.run(run())
    said = spoken[-1].response.output[0].content[0].transcript
    assert speaking.status == "in_progress" and said.startswith(speaking.content[0].transcript)
    assert whole.role == "assistant" and [(p.type, p.transcript) for p in whole.content] == [("output_audio", said)]
    history = next(s for s in recorder.streams if s.prompt == "Continue, please.").request.turns
    kept = [t.text for t in history[[t.text for t in history].index("Tell me a long story.") + 1:-1]]
    heard = cut.content[0].transcript
    assert len(said) > 4 and len(heard) <= len(said) // 2 + 1 and said.startswith(heard)
    assert kept == ([heard] if heard else []), "the client and the model should keep the same heard text"


def test_a_deleted_item_is_gone_from_what_the_model_is_given(base_url, recorder):
    async def run():
        async with connect(base_url) as connection:
            await manual_turns(connection)
            added = []
            for text in ("Remember the word zebra.", "Which word did I give you?"):
                await connection.conversation.item.create(item={"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": text}]})
                added.append((await until(connection, "conversation.item.done"))[-1].item.id)
            await connection.conversation.item.delete(item_id=added[0])
            deleted = (await until(connection, "conversation.item.deleted"))[-1]
            await connection.conversation.item.delete(item_id=added[0])
            again = (await until(connection, "error"))[-1].error
            gone = await retrieve(connection, added[0])
            await connection.response.create()
            return added, deleted, again, gone, await until(connection, "response.done")

    added, deleted, again, gone, answer = asyncio.run(run())
    assert deleted.item_id == added[0] and again.code == gone.code == "item_not_found"
    assert answer[-1].response.status in ("completed", "incomplete")
    engine = recorder.stream_for("Which word did I give you?")
    assert [t.text for t in engine.request.turns] == ["Which word did I give you?"]
