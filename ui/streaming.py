"""Streaming a backend's reply into Gradio: shared by the Chat and Live tabs."""

from __future__ import annotations

import asyncio
import time

import gradio as gr
import numpy as np

from backends.events import OUTPUT_SAMPLE_RATE, AudioChunk, ReasoningDelta, TextDelta
from backends.media import pcm16

MODEL_QUEUE = "model"
"""One concurrency id for every event that runs the model: they share its slots."""
TEXT_UPDATES_PER_S = 12
"""Reply text is redrawn at most this often; faster adds load, not readability."""
AUDIO_FLUSH_S = 0.3
"""After a speech chunk, keep nudging Gradio's audio encoder this long so the chunk goes out at once."""

EMPTY_AUDIO = (OUTPUT_SAMPLE_RATE, np.zeros(0, np.int16))


def player_update(event, flushing: bool):
    """What one update gives the streaming player.

    New speech goes in as 16-bit PCM. Gradio's encoder (an ffmpeg process) returns a chunk's
    audio only on a later update, so while ``flushing`` an empty chunk collects it. Otherwise
    skip the player: even a None costs a pass through the encoder and lags every text update.
    """
    if isinstance(event, AudioChunk):
        return event.sample_rate, pcm16(event.samples)
    return EMPTY_AUDIO if flushing else gr.skip()


class EventPump:
    """Reads a backend stream in a task, so waiting for its next event can time out safely
    (a timeout on the stream itself would cancel, and so stop, the engine)."""

    END, IDLE = object(), object()

    def __init__(self, stream):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(stream))

    async def _pump(self, stream) -> None:
        try:
            async for event in stream:
                self._queue.put_nowait(event)
        finally:
            self._queue.put_nowait(self.END)

    async def next(self, timeout: float | None = None):
        """The next event, ``END`` after the last, or ``IDLE`` if ``timeout`` passed first."""
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a Stop that lands
            # just as an event arrives.
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return self.IDLE

    async def aclose(self) -> None:
        if not self._task.done():
            self._task.cancel()  # cancels inside the backend's stream: its finally stops the engine
        try:
            await self._task  # re-raises what broke the backend, if anything
        except asyncio.CancelledError:
            pass


def save_reply_audio(reply, folder: str) -> str | None:
    """The whole spoken reply as a WAV in ``folder`` (kept in the conversation), or None if it had no speech."""
    import tempfile

    import soundfile

    samples = reply.audio()
    if samples is None or samples.size == 0:
        return None
    path = tempfile.NamedTemporaryFile(dir=folder, suffix=".wav", delete=False).name
    soundfile.write(path, samples, reply.sample_rate)
    return path


async def reply_updates(events: EventPump, reply, poll_s: float | None = None):
    """Feed a backend's events into ``reply`` (a ReplyState) and yield the player's update whenever the
    page should be redrawn: new speech, text at most TEXT_UPDATES_PER_S times a second, and the encoder
    nudges of AUDIO_FLUSH_S. With ``poll_s``, yields None at least that often, so the caller can check
    for something else (barge-in) while nothing arrives."""
    last_text = flush_until = 0.0
    while True:
        event = await events.next(timeout=max(0.0, flush_until - time.monotonic()) or poll_s)
        if event is EventPump.END:
            return
        if event is EventPump.IDLE:
            yield EMPTY_AUDIO if time.monotonic() < flush_until else None
            continue
        reply.handle(event)
        if isinstance(event, AudioChunk):
            flush_until = time.monotonic() + AUDIO_FLUSH_S
        elif isinstance(event, (TextDelta, ReasoningDelta)):
            # Gradio sends one update at a time: coalesce text so speech never queues behind it.
            if time.monotonic() - last_text < 1 / TEXT_UPDATES_PER_S:
                continue
            last_text = time.monotonic()
        yield player_update(event, flushing=time.monotonic() < flush_until)
