"""Streaming a backend's reply into Gradio: shared by the Chat and Live tabs."""

from __future__ import annotations

import asyncio
import io
import time
import wave

import gradio as gr
import numpy as np

from backends.events import OUTPUT_SAMPLE_RATE, AudioChunk, ReasoningDelta, TextDelta
from media import pcm16

MODEL_QUEUE = "model"
"""One concurrency id for every event that runs the model: they share its slots."""
TEXT_UPDATES_PER_S = 12
"""Reply text is redrawn at most this often; faster adds load, not readability."""
AUDIO_FLUSH_S = 0.3
"""After a speech chunk, keep nudging Gradio's audio encoder this long so the chunk goes out at once."""
AUDIO_NUDGE_S = 0.1
"""While nothing else is sent in those AUDIO_FLUSH_S, the encoder is nudged this often."""



def wav_bytes(sample_rate: int, samples: np.ndarray) -> bytes:
    """16-bit mono PCM as the bytes of a WAV: what the streaming player is given.

    Bytes, not Gradio's ``(rate, array)``: Gradio writes an array to a cache file named after its content and
    reads it back, so two sessions sending the same chunk at once (every nudge is the same empty chunk)
    write and read one file together; one could read it empty, ffmpeg failed on it, and that reply's audio
    was lost. Bytes stream from memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(np.ascontiguousarray(samples, dtype="<i2").tobytes())
    return buffer.getvalue()


EMPTY_AUDIO = wav_bytes(OUTPUT_SAMPLE_RATE, np.zeros(0, np.int16))
"""A chunk of no audio: it makes Gradio's encoder return what it holds (a nudge)."""


def player_update(event, flushing: bool):
    """What one update gives the streaming player.

    New speech goes in as 16-bit PCM (WAV bytes). Gradio's encoder (an ffmpeg process) returns a chunk's
    audio only on a later update, so while ``flushing`` an empty chunk collects it. Otherwise
    skip the player: even a None costs a pass through the encoder and lags every text update.
    """
    if isinstance(event, AudioChunk):
        return wav_bytes(event.sample_rate, pcm16(event.samples))
    return EMPTY_AUDIO if flushing else gr.skip()


class EventPump:
    """Reads a backend stream in a task, so waiting for its next event can time out safely
    (a timeout on the stream itself would cancel, and so stop, the engine)."""

    END, IDLE = object(), object()

    def __init__(self, stream):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stream = stream
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
        finally:
            # A task cancelled before it ever ran leaves the stream unstarted: close it all the same,
            # so the backend never starts that request (a no-op for a stream that has ended). A task
            # still unwinding (this one was cancelled while it waited) closes the stream itself.
            close = getattr(self._stream, "aclose", None)
            if close is not None and self._task.done():
                await close()


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


async def reply_updates(events: EventPump, reply):
    """Feed a backend's events into ``reply`` (a ReplyState) and yield the player's update whenever the
    page should be redrawn: new speech, text at most TEXT_UPDATES_PER_S times a second, and the encoder
    nudges (EMPTY_AUDIO every AUDIO_NUDGE_S for AUDIO_FLUSH_S after speech, while nothing else is sent)."""
    last_text = flush_until = 0.0
    next_nudge: float | None = None
    """When the encoder is nudged next if nothing arrives first; None once the flush window is over."""
    while True:
        # Whether a timeout is a nudge is decided before waiting: the clock read after the wait may
        # be exactly at (or a hair before) the deadline.
        nudging = next_nudge is not None
        timeout = max(0.0, next_nudge - time.monotonic()) if nudging else None
        event = await events.next(timeout=timeout)
        if event is EventPump.END:
            return
        if event is EventPump.IDLE:  # only while nudging: otherwise the pump waits for the next event
            later = time.monotonic() + AUDIO_NUDGE_S
            next_nudge = later if later <= flush_until + AUDIO_NUDGE_S / 2 else None
            yield EMPTY_AUDIO
            continue
        reply.handle(event)
        if isinstance(event, AudioChunk):
            now = time.monotonic()
            flush_until, next_nudge = now + AUDIO_FLUSH_S, now + AUDIO_NUDGE_S
        elif isinstance(event, (TextDelta, ReasoningDelta)):
            # Gradio sends one update at a time: coalesce text so speech never queues behind it.
            if time.monotonic() - last_text < 1 / TEXT_UPDATES_PER_S:
                continue
            last_text = time.monotonic()
        yield player_update(event, flushing=next_nudge is not None and time.monotonic() < flush_until)
