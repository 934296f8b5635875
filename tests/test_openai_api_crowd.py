"""Many ``openai`` SDK clients streaming ``/v1/chat/completions`` at once, against the app over an engine that batches
(the tiny model on the CPU, eight batch slots): each gets a whole stream of its own reply, and a client past the
server's limit gets OpenAI's 429. The backend is wrapped by ``RecordingBackend`` (tests/streams.py), which sees what
the engine was asked and answered for each request."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import openai
import pytest

from api.chat import ChatLimits, OpenAIServingChat, chat_routes
from backends import build_backend
from backends.checkpoints import resolve_checkpoint
from tests.streams import RecordingBackend
from tests.test_app import launch
from tests.test_openai_api import ask, settled

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CLIENTS = 8


@pytest.fixture(scope="module")
def batched(tiny_cache):
    with build_backend("transformers", resolve_checkpoint("tiny"), max_speech_seconds=2.0, talker_do_sample=False,
                       batch_slots=CLIENTS) as backend:
        assert backend.batched is not None and backend.info.max_concurrency == CLIENTS
        yield backend


@pytest.fixture(scope="module")
def serving(batched):
    return OpenAIServingChat(RecordingBackend(batched), ChatLimits(max_requests=CLIENTS))


@pytest.fixture(scope="module")
def url(serving):
    demo = launch(serving.backend, app_kwargs={"routes": chat_routes(serving)})
    yield demo.local_url.rstrip("/")
    demo.close()


def spoken(prompt: str, seed: int) -> dict:
    return ask(prompt, max_tokens=24, seed=seed, stream=True, modalities=["text", "audio"],
               audio={"voice": "ethan", "format": "pcm16"}, stream_options={"include_usage": True})


def test_eight_sdk_clients_stream_at_once_each_their_own_reply_and_a_ninth_is_told_to_wait(url, serving, batched):
    recorder: RecordingBackend = serving.backend
    prompts = [f"Client {n}, name a {word}." for n, word in enumerate(
        ["fruit", "river", "star", "train", "cloud", "violin", "desert", "lantern"])]
    batched.batched.thinker.max_rows = 0

    async def run():
        clients = [openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) for _ in prompts]
        try:
            # every stream is open (its slot held until it ends) before any is read past its headers
            streams = await asyncio.gather(*(c.chat.completions.create(**spoken(p, seed=n))
                                             for n, (c, p) in enumerate(zip(clients, prompts))))
            with pytest.raises(openai.RateLimitError) as refused:
                await clients[0].chat.completions.create(**spoken("One too many.", seed=99))
            chunks = await asyncio.gather(*(_read(s) for s in streams))
            after = await clients[0].chat.completions.create(**ask("Room again?", max_tokens=4))
            return refused.value, chunks, after
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    refused, replies, after = asyncio.run(run())
    assert refused.status_code == 429 and refused.response.headers["retry-after"] == "10"
    assert refused.response.json() == {"error": {
        "message": "This server makes 8 replies at once; try again shortly.", "type": "rate_limit_error",
        "param": None, "code": "too_many_requests"}}
    assert not any(s.prompt == "One too many." for s in recorder.streams), "a refused request reached the engine"
    assert after.choices[0].finish_reason in ("stop", "length")

    engines = [s for s in recorder.streams if s.prompt in prompts]
    assert sorted(s.prompt for s in engines) == sorted(prompts), "each client's request reached the engine once"
    assert batched.batched.thinker.max_rows >= 2, "the replies should have shared the engine's batch"
    assert len({c[0].id for c in replies}) == CLIENTS
    for n, (prompt, chunks) in enumerate(zip(prompts, replies)):
        engine = recorder.stream_for(prompt)
        assert engine.request.sampling.seed == n and engine.request.return_audio
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        transcript = "".join(d.audio.transcript or "" for d in deltas if d.audio)
        assert transcript and transcript == engine.text, f"client {n} got another request's text"
        assert not any(d.content for d in deltas) and len({c.id for c in chunks}) == 1
        audio = np.concatenate([np.frombuffer(base64.b64decode(d.audio.data), "<i2") for d in deltas
                                if d.audio and d.audio.data])
        np.testing.assert_array_equal(audio, engine.pcm)  # every sample the engine made for it, in order, 24 kHz
        assert 0.08 <= audio.size / 24_000 <= 2.5
        assert chunks[-2].choices[0].finish_reason == engine.done and deltas[-1].audio.expires_at
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len({s.text for s in engines}) > 1, "the answers should differ, to tell them apart"
    assert settled(serving) and recorder.open == 0


async def _read(stream) -> list:
    return [chunk async for chunk in stream]
