"""Reading a backend's event stream in tests."""

from __future__ import annotations

import asyncio

import numpy as np

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
