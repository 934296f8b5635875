"""Reading a backend's event stream in tests."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from backends.base import Backend
from backends.events import OUTPUT_SAMPLE_RATE, AudioChunk, Done, Error, TextDelta
from backends.request import ChatRequest


def collect(backend, request: ChatRequest) -> list:
    async def run():
        return [event async for event in backend.stream(request)]

    return asyncio.run(run())


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def audio_of(events) -> np.ndarray:
    chunks = [e.samples for e in events if isinstance(e, AudioChunk)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def errors_of(events) -> list[Error]:
    return [e for e in events if isinstance(e, Error)]


def finish_of(events) -> str:
    assert isinstance(events[-1], Done), f"a stream must end with Done, got {events[-1]!r}"
    assert sum(isinstance(e, Done) for e in events) == 1
    return events[-1].finish_reason


def seconds_to_stop(backend, request: ChatRequest, *, after_deltas: int = 1, after: type | None = None,
                    settled=lambda: True, timeout: float = 5.0) -> float:
    """Close the stream (Stop) after ``after_deltas`` text deltas, or at the first event of type ``after``;
    then the seconds until ``settled()`` holds (the engine or server has let go)."""

    async def run() -> float:
        stream = backend.stream(request)
        seen = 0
        async for event in stream:
            seen += isinstance(event, TextDelta)
            if isinstance(event, after) if after is not None else seen >= after_deltas:
                break
        await stream.aclose()
        closed = time.perf_counter()
        while not settled() and time.perf_counter() - closed < timeout:
            await asyncio.sleep(0.01)
        return time.perf_counter() - closed

    return asyncio.run(run())


class TokenCollector:
    """A streamer that keeps the reply's token ids (a ThinkerDecoder, like generate(), puts the prompt first)."""

    def __init__(self):
        self.puts: list[list[int]] = []

    def put(self, value):
        self.puts.append(value.reshape(-1).tolist())

    def end(self):
        pass

    @property
    def reply(self) -> list[int]:
        return [token for put in self.puts[1:] for token in put]


def decoded_tokens(decoder, inputs: dict, *, temperature=0.0, top_k=20, top_p=1.0, seed=None,
                   max_new_tokens=12) -> list[int]:
    """A ThinkerDecoder's reply to ``inputs`` (greedy unless ``temperature``), as token ids."""
    from backends.transformers.thinker_decoder import ThinkerSampling

    streamer = TokenCollector()
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    sampling = ThinkerSampling(temperature, top_k, top_p, max_new_tokens, eos_token_id=-1, generator=generator)
    decoder.generate(inputs, sampling, streamer, threading.Event())
    return streamer.reply


@dataclass
class RecordedStream:
    """One engine stream as a ``RecordingBackend`` saw it: what it was asked, what it answered (audio at 24 kHz),
    and whether its reader closed it before its end (``done`` is None then)."""

    request: ChatRequest
    text: str = ""
    audio: list[np.ndarray] = field(default_factory=list)
    done: str | None = None
    closed: bool = False

    @property
    def prompt(self) -> str:
        return self.request.turns[-1].text

    async def closed_within(self, seconds: float) -> float:
        """How long until the stream is closed, from now (``seconds`` at most: the caller asserts it closed)."""
        started = time.perf_counter()
        while not self.closed and time.perf_counter() - started < seconds:
            await asyncio.sleep(0.01)
        return time.perf_counter() - started

    @property
    def pcm(self) -> np.ndarray:
        """The answer's speech as PCM16 at 24 kHz, as the OpenAI APIs send it."""
        from media import pcm16

        return pcm16(np.concatenate(self.audio)) if self.audio else np.zeros(0, np.int16)


class RecordingBackend(Backend):
    """A backend with every stream recorded (the API sees only the contract, so this is transparent)."""

    def __init__(self, inner: Backend):
        self.inner, self.info, self.streams = inner, inner.info, []

    @property
    def open(self) -> int:
        return sum(not s.closed for s in self.streams)

    def stream_for(self, prompt: str) -> RecordedStream:
        """The latest stream asked ``prompt``."""
        return next(s for s in reversed(self.streams) if s.prompt == prompt)

    async def stream(self, request):
        from media import resample

        record = RecordedStream(request)
        self.streams.append(record)
        try:
            async for event in self.inner.stream(request):
                if isinstance(event, TextDelta):
                    record.text += event.text
                elif isinstance(event, AudioChunk):
                    record.audio.append(resample(event.samples, event.sample_rate, OUTPUT_SAMPLE_RATE))
                elif isinstance(event, Done):
                    record.done = event.finish_reason
                yield event
        finally:
            record.closed = True
