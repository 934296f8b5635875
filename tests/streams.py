"""Reading a backend's event stream in tests."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import torch

from backends.events import AudioChunk, Done, Error, TextDelta
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
