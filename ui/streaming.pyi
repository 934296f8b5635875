"""Streaming a backend's reply into Gradio: shared by the Chat and Live tabs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import gradio as gr
import gradio.components.audio as gradio_audio
import numpy as np
from gradio.audio_stream_encoder import AacStreamEncoder, decode_to_pcm, segment_from_frames

from backends.events import OUTPUT_SAMPLE_RATE, AudioChunk, ReasoningDelta, TextDelta
from backends.media import pcm16

MODEL_QUEUE = "model"
"""One concurrency id for every event that runs the model: they share its slots."""
TEXT_UPDATES_PER_S = 12
"""Reply text is redrawn at most this often; faster adds load, not readability."""
AUDIO_FLUSH_S = 0.3
"""After a speech chunk, keep nudging Gradio's audio encoder this long so the chunk goes out at once."""

EMPTY_AUDIO = (OUTPUT_SAMPLE_RATE, np.zeros(0, np.int16))
FIRST_SEGMENT_WAIT_S = 0.025
"""How long a stream's first chunk waits for the encoder to return most of it in the same update."""

log = logging.getLogger(__name__)


class EncoderPool:
    """Gradio's AAC encoders (one ffmpeg process per streamed reply), started before they are needed.

    Starting one costs 60 ms on idle cores and more on busy ones, and Gradio waits at most 0.1 s
    for it: a slow start pushed a reply's first audio to a later update. A started encoder that
    has not been fed yet costs a sleeping process.
    """

    def __init__(self, size: int = 2):
        self.size = size
        self._idle: dict[tuple[int, int], list[AacStreamEncoder]] = {}
        self._lock = threading.Lock()

    def prefill(self, sample_rate: int, channels: int) -> None:
        """Start encoders for this format until ``size`` wait idle (in the background)."""
        threading.Thread(target=self._fill, args=(sample_rate, channels), daemon=True).start()

    def _fill(self, sample_rate: int, channels: int) -> None:
        key = (sample_rate, channels)
        while True:
            with self._lock:
                if len(self._idle.setdefault(key, [])) >= self.size:
                    return
            try:
                encoder = AacStreamEncoder(sample_rate, channels)
            except Exception:  # no ffmpeg: Gradio says so when the first reply speaks
                log.debug("audio encoder could not be started ahead", exc_info=True)
                return
            with self._lock:
                self._idle[key].append(encoder)

    def take(self, sample_rate: int, channels: int) -> AacStreamEncoder:
        """A started encoder for this format (a new one if none waits), and another started in its place."""
        with self._lock:
            idle = self._idle.get((sample_rate, channels), [])
            # One that died while idle (killed, out of memory) would fail the stream: skip it.
            while idle and idle[-1].process.poll() is not None:
                idle.pop().close()
            encoder = idle.pop() if idle else None
        self.prefill(sample_rate, channels)
        return encoder or AacStreamEncoder(sample_rate, channels)


ENCODERS = EncoderPool()

from gradio.events import Dependency

class ReplyAudio(gr.Audio):
    """The streaming reply player (made by ``reply_player``): ``gr.Audio`` whose stream takes an already
    started encoder.

    Overrides Gradio 6's private ``_encode_chunk`` (pinned in requirements.txt; tests/test_streaming_audio.py
    fails if it changes): the same steps, with the encoder from ENCODERS, and the first chunk waits up to
    FIRST_SEGMENT_WAIT_S for most of its frames instead of returning the first one alone. No ``__init__`` of
    its own: Gradio reads a component's props from its signature.
    """

    is_template = True  # the browser draws it as a plain Audio

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

    def _encode_chunk(self, output_id: str, data: bytes):
        slot = gradio_audio._stream_encoders.get(output_id)
        if slot is None:  # ended (disconnect, cancel) while this chunk was on its way
            return None
        encoder = slot.encoder
        first = encoder is None
        if first:
            sample_rate, channels, pcm = decode_to_pcm(data)
            encoder = ENCODERS.take(sample_rate, channels)
            if not slot.attach(encoder):
                encoder.close()
                return None
        else:
            _, _, pcm = decode_to_pcm(data, encoder.sample_rate, encoder.channels)
        encoder.feed(pcm)
        frames = encoder.take()
        if first and frames:
            # AAC holds back about two frames; anything short of that is on its way.
            expected = len(pcm) // (2 * encoder.channels) * encoder.output_rate // encoder.sample_rate // 1024 - 2
            deadline = time.monotonic() + FIRST_SEGMENT_WAIT_S
            while len(frames) < expected and (left := deadline - time.monotonic()) > 0:
                frames += encoder.take(timeout=min(left, 0.005))
        return segment_from_frames(encoder, frames)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


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