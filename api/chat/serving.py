"""``OpenAIServingChat``: a chat completion request → the engine's reply, whole or as server-sent events.

What is checked before the engine is asked, so a caller gets a status code rather than a broken stream: the engine
is ready (else 503) and a request slot is free (else 429), both before the router reads the body (``take_slot``),
then the voice and modalities fit the model, and every message and file reads (400). Once streaming, an engine error
comes as an ``{"error": ...}`` event, which OpenAI's clients raise, as vLLM does.

Every reply's engine stream is closed when the reply ends in any way, a client that leaves included (the router
closes the body it streams), which stops the engine's work for it (``backends.base``); the request's files go then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from contextlib import aclosing
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from openai.types import Model
from openai.types.chat import ChatCompletion

import media
from api.chat.inputs import InputError, read_messages
from api.chat.protocol import ChatCompletionRequest
from api.chat.reply import ChatReply
from api.errors import ErrorResponse
from backends.base import Backend
from backends.request import ChatRequest
from turns.voice import default_speaker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatLimits:
    """What one server takes, whatever callers send."""

    max_body_bytes: int = 64 * 2**20
    """One request's JSON (files inline, base64: about 48 MB of media); bigger ones are refused with 413 unread."""
    max_requests: int = 32
    """Replies in progress at once (the engine queues what it can't batch); more get 429."""
    media: media.MediaLimits = media.DEFAULT_LIMITS
    """Each file's limits: the ones the tabs hold uploads to."""
    retry_after_s: int = 10
    """What a 503 during warm-up or a 429 tells the caller to wait."""


class OpenAIServingChat:
    """Example::

        serving = OpenAIServingChat(backend)
        result = await serving.create_chat_completion(ChatCompletionRequest.model_validate(body))
        # an ErrorResponse, a ChatCompletion, or a StreamedReply of SSE lines (``stream: true``)
    """

    def __init__(self, backend: Backend, limits: ChatLimits = ChatLimits()):
        self.backend, self.limits = backend, limits
        self.in_flight = 0

    @property
    def model_id(self) -> str:
        """The served model's name: the checkpoint as the app was given it (``tiny``, a hub id), a local folder by
        its own name only (its path is this machine's business), a server's model when the app is its client."""
        name = self.backend.info.model.split(" @ ")[0]
        return os.path.basename(name.rstrip("/")) if os.path.isabs(name) or name.startswith((".", "~")) else name

    def show_models(self) -> dict:
        model = Model(id=self.model_id, object="model", created=0, owned_by="qwen3-omni-app")
        return {"object": "list", "data": [model.model_dump()]}

    def take_slot(self) -> ErrorResponse | Callable[[], None]:
        """One reply's place among ``ChatLimits.max_requests``, or the 503 (warming up) or 429 (full) that refuses
        it. The router takes it before reading the body, so a flood of big bodies is refused unread; the function
        returned frees it (once, however often it is called)."""
        wait = {"Retry-After": str(self.limits.retry_after_s)}
        if self.backend.warming_up is not None:
            return ErrorResponse(503, f"The engine is not ready yet ({self.backend.warming_up}); try again shortly.",
                                 code="engine_not_ready", headers=wait)
        if self.in_flight >= self.limits.max_requests:
            return ErrorResponse(429, f"This server makes {self.limits.max_requests} replies at once; try again "
                                 "shortly.", code="too_many_requests", headers=wait)
        self.in_flight += 1
        return _once(self._free_slot)

    async def create_chat_completion(self, request: ChatCompletionRequest, slot: Callable[[], None] | None = None
                                     ) -> ErrorResponse | ChatCompletion | StreamedReply:
        """The reply to ``request``, in the ``slot`` taken for it (``take_slot``; one is taken here if none is
        given), which is freed when the reply ends, however it ends."""
        slot = slot or self.take_slot()
        if isinstance(slot, ErrorResponse):
            return slot
        request.log_ignored()
        refused = self._refusal(request)
        if refused is not None:
            slot()
            return refused
        folder = tempfile.mkdtemp(prefix="omni-chat-")
        release = _once(lambda: (shutil.rmtree(folder, ignore_errors=True), slot()))
        try:
            conversation = await asyncio.to_thread(read_messages, request.messages, folder, self.limits.media)
        except InputError as err:
            release()
            return ErrorResponse(400, err.message, param=err.param, code="invalid_input")
        except BaseException:
            release()
            raise
        speaks = request.wants_audio
        chat = ChatRequest(turns=conversation.turns, system_prompt=conversation.system_prompt,
                           speaker=request.voice() or default_speaker(self.backend.info.speakers) or None,
                           sampling=request.sampling(), return_audio=speaks,
                           use_audio_in_video=request.use_audio_in_video)
        reply = ChatReply(self.model_id, speaks=speaks)
        if request.stream:
            return StreamedReply(self._events(chat, reply, request.include_usage), release)
        try:
            async with aclosing(self.backend.stream(chat)) as events:
                async for event in events:
                    reply.handle(event)
        except Exception as err:  # an engine that breaks its contract: this reply fails, the server goes on
            log.exception("chat completion %s failed", reply.id)
            return ErrorResponse(500, f"The engine failed: {err}", code="engine_error")
        finally:
            release()
        failure = reply.failure()
        return failure if failure is not None else reply.completion(request.audio_format)

    def _refusal(self, request: ChatCompletionRequest) -> ErrorResponse | None:
        info = self.backend.info
        if request.wants_audio and not info.can_speak:
            return ErrorResponse(400, "This model answers in text only: leave out modalities, or ask for "
                                 "['text'].", param="modalities", code="invalid_value")
        voice = request.voice()
        if voice is not None and request.wants_audio and voice not in info.speakers:
            param = "audio.voice" if request.audio is not None else "speaker"
            return ErrorResponse(400, f"Unknown voice {voice!r}; this model speaks with {', '.join(info.speakers)}.",
                                 param=param, code="invalid_value")
        return None

    async def _events(self, chat: ChatRequest, reply: ChatReply, include_usage: bool) -> AsyncIterator[str]:
        yield _sse(reply.first_chunk().model_dump_json(exclude_none=True))
        failure = None
        try:
            async with aclosing(self.backend.stream(chat)) as events:
                async for event in events:
                    for chunk in reply.handle(event):
                        yield _sse(chunk.model_dump_json(exclude_none=True))
        except Exception as err:  # as above; the stream has answered 200 already, so the error is an event
            log.exception("chat completion %s failed", reply.id)
            failure = ErrorResponse(500, f"The engine failed: {err}", code="engine_error")
        failure = failure or reply.failure()
        if failure is not None:
            log.warning("chat completion %s failed mid-stream: %s", reply.id, failure.message)
            yield _sse(json.dumps(failure.body()))
        else:
            for chunk in reply.closing_chunks(include_usage):
                yield _sse(chunk.model_dump_json(exclude_none=True))
        yield _sse("[DONE]")

    def _free_slot(self) -> None:
        self.in_flight -= 1


class StreamedReply:
    """The SSE lines of a streamed reply. ``aclose()`` closes the engine's stream and frees the request's slot and
    files, whether the lines were read to the end, in part, or not at all (an async generator that never started
    runs no ``finally``, hence this wrapper)."""

    def __init__(self, lines: AsyncIterator[str], release: Callable[[], None]):
        self._lines, self._release = lines, release

    def __aiter__(self) -> StreamedReply:
        return self

    async def __anext__(self) -> str:
        try:
            return await self._lines.__anext__()
        except StopAsyncIteration:
            self._release()
            raise

    async def aclose(self) -> None:
        try:
            await self._lines.aclose()
        finally:
            self._release()


def _sse(data: str) -> str:
    return f"data: {data}\n\n"


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return run
