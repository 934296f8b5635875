"""The reply player's stream: a reply's first speech leaves in the update that carries it, whole and in order."""

from __future__ import annotations

import asyncio
import io
import time

import av
import numpy as np
import pytest

from backends.events import OUTPUT_SAMPLE_RATE
from ui.reply_player import ENCODERS, ReplyAudio, reply_player

CHUNK_S = 0.32  # the backend's first speech chunk: 4 codec frames


def tone(seconds: float, start: int = 0) -> np.ndarray:
    """A 440 Hz tone, continued from sample ``start`` so consecutive chunks join without a click."""
    n = np.arange(start, start + int(seconds * OUTPUT_SAMPLE_RATE))
    return (np.sin(2 * np.pi * 440 * n / OUTPUT_SAMPLE_RATE) * 12000).astype(np.int16)


def decoded(segments: list[bytes]) -> np.ndarray:
    """What a browser plays from the stream's AAC segments, as float samples."""
    with av.open(io.BytesIO(b"".join(segments)), format="aac") as container:
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])


def stream(player: ReplyAudio, stream_id: str, chunks: list[np.ndarray]) -> list[dict]:
    """Each chunk through Gradio's streaming path (postprocess, then stream_output), then the flush."""
    return asyncio.run(_stream(player, stream_id, chunks))


async def _stream(player, stream_id, chunks):
    segments = []
    for i, samples in enumerate(chunks):
        value = player.postprocess((OUTPUT_SAMPLE_RATE, samples)).model_dump()
        segment, _ = await player.stream_output(value, stream_id, first_chunk=i == 0)
        segments.append(segment)
    segments.append(await player.flush_stream_output(stream_id))
    return segments


@pytest.fixture
def player():
    player = reply_player("Reply")
    ENCODERS._fill(OUTPUT_SAMPLE_RATE, 1)  # what the background prefill does, done before the test times it
    time.sleep(1.0)  # the app starts them as the page is built, long before the first reply
    return player


def test_first_chunk_of_speech_leaves_with_its_own_update(player):
    segments = stream(player, "first-chunk", [tone(CHUNK_S)])
    # AAC holds back about two 1024-sample frames (43 ms each); the rest of the chunk must be in the
    # first segment. Stock gr.Audio returns only the frames ready when ffmpeg has just started (often one).
    assert segments[0] is not None and segments[0]["duration"] >= CHUNK_S - 3 * 1024 / OUTPUT_SAMPLE_RATE


def test_a_streamed_reply_decodes_whole_and_continuous(player):
    chunks, start = [], 0
    for seconds in (CHUNK_S, 0.8, 0.8, 0.5):
        chunks.append(tone(seconds, start))
        start += chunks[-1].size
    segments = [s for s in stream(player, "whole-reply", chunks) if s is not None]
    played = decoded([s["data"] for s in segments])
    sent = np.concatenate(chunks).astype(np.float32) / 32768
    # Same length up to the encoder's padding, and no gap: the played tone matches the sent one
    # once the encoder's start-up delay is lined up.
    assert abs(played.size - sent.size) <= 3 * 1024
    delay = int(np.argmax(np.correlate(played[:4096], sent[:2048], mode="valid")))
    overlap = min(sent.size, played.size - delay) - 1024
    error = played[delay:delay + overlap] - sent[:overlap]
    assert np.sqrt(np.mean(error ** 2)) < 0.05 * np.sqrt(np.mean(sent ** 2))


def test_streams_never_share_an_encoder(player):
    """Two replies one after the other: the second starts with its own audio, not the first's tail."""
    stream(player, "reply-one", [np.full(int(CHUNK_S * OUTPUT_SAMPLE_RATE), 12000, np.int16)])
    second = stream(player, "reply-two", [np.zeros(int(CHUNK_S * OUTPUT_SAMPLE_RATE), np.int16)])
    played = decoded([s["data"] for s in second if s is not None])
    assert played.size > 0 and np.abs(played).max() < 0.01


def test_waiting_encoders_are_refilled_and_stay_bounded(player):
    for i in range(5):
        stream(player, f"reply-{i}", [tone(0.1)])
    idle = ENCODERS._idle[(OUTPUT_SAMPLE_RATE, 1)]
    deadline = time.monotonic() + 10
    while len(idle) < ENCODERS.size and time.monotonic() < deadline:  # refills run in the background
        time.sleep(0.05)
    time.sleep(0.2)  # a fill that overshot would show now
    assert len(idle) == ENCODERS.size and all(e.process.poll() is None for e in idle)


def test_eight_replies_sending_the_same_chunks_at_once_each_play_whole(player):
    """Eight streams at once through Gradio's steps for a streamed output (postprocess in a worker thread,
    then stream_output), each sending the same speech and the app's encoder nudges, as eight sessions asking
    the same question do (issue 31). Each must play all it was sent. Before the fix, Gradio wrote equal chunks
    to one cache file named after their content and read it back: one session read it while another rewrote
    it, ffmpeg failed on what it read, and that reply's audio was lost."""
    import anyio

    from backends.events import AudioChunk
    from ui.streaming import EMPTY_AUDIO, player_update

    speech = AudioChunk(tone(CHUNK_S).astype(np.float32) / 32768)
    updates = [player_update(speech, flushing=False) if i % 4 == 0 else EMPTY_AUDIO for i in range(40)]

    async def one(n: int) -> list:
        segments = []
        try:
            for i, update in enumerate(updates):
                value = await anyio.to_thread.run_sync(player.postprocess, update)
                value = value.model_dump() if hasattr(value, "model_dump") else value
                segments.append((await player.stream_output(value, f"same-{n}", first_chunk=i == 0))[0])
        finally:
            segments.append(await player.flush_stream_output(f"same-{n}"))
        return segments

    async def all_at_once():
        return await asyncio.gather(*(one(n) for n in range(8)), return_exceptions=True)

    results = asyncio.run(all_at_once())
    assert not [r for r in results if isinstance(r, BaseException)]
    sent = 10 * speech.samples.size
    for segments in results:
        played = decoded([s["data"] for s in segments if s is not None])
        assert abs(played.size - sent) <= 3 * 1024
