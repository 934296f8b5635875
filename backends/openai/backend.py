"""Any OpenAI-compatible chat server: `vllm serve`, vLLM-Omni (`vllm serve <ckpt> --omni`), SGLang-Omni.

The app stays a thin client: each turn resends the whole conversation (servers keep no
history) with media inlined as data: URLs (the server can't read this machine's files).
This module holds the turn; its neighbours hold the rest:

- ``options``: ``OpenAIOptions``, what the backend is told.
- ``client``: the openai client of each event loop, and its errors as the user's messages.
- ``payloads``: a ``ChatRequest`` as chat messages and a request body, and the cache of files' data: URLs.
- ``wire``: the streamed reply read into events, in either speech wire shape (vLLM-Omni, SGLang-Omni).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import AsyncIterator

import media
from backends.base import Backend, BackendInfo, CheckpointKind
from backends.events import Done, Error, Event, Notice
from backends.openai.client import LoopClients, error_for, first_model, kept, over_context, server_message
from backends.openai.options import OpenAIOptions
from backends.openai.payloads import Payloads
from backends.openai.wire import StreamedReply
from backends.reasoning import ReasoningSplitter
from backends.request import ChatRequest
from backends.tokens import TokenDelta
from messages import Message

log = logging.getLogger(__name__)

TEXT_ONLY = Message("server.text_only")
NO_SPEECH_NOTE = str(TEXT_ONLY)


class ServerFailure(RuntimeError):
    """A request failed at the server; ``error`` is the event to show."""

    def __init__(self, error: Error):
        super().__init__(error.message)
        self.error = error


class OpenAIBackend(Backend):
    """Example::

        backend = OpenAIBackend(OpenAIOptions(api_base="http://gpu-box:8000/v1"))
        async for event in backend.stream(ChatRequest(turns=(Turn.user("Hi"),))): print(event)
    """

    def __init__(self, options: OpenAIOptions = OpenAIOptions()):
        self.options = options
        self._clients = LoopClients(options)
        model = options.model or first_model(options)
        self.model = model
        self._server_speaks = options.speech != "off"
        self._payloads = Payloads(options, model)
        self.info = BackendInfo(
            backend="openai",
            model=f"{model} @ {options.api_base}",
            kind=options.kind or _kind_from_name(model),
            device="remote server",
            speakers=options.speakers if options.speech != "off" and _kind_from_name(model) == "instruct" else (),
            max_concurrency=options.max_concurrency,
            speech_note="if the server speaks (vLLM-Omni, SGLang-Omni; `vllm serve` answers in text)"
            if options.speech == "auto" else "",
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        started = time.perf_counter()
        try:
            messages = await self._messages_off_loop(request)
        except media.MediaError as err:
            yield Error(err.msg, "input")
            yield Done("error")
            return
        want_audio = request.return_audio and self.info.can_speak and self._server_speaks
        reply = StreamedReply(ReasoningSplitter(self.info.reasons))
        stream = None
        try:
            stream, want_audio, notes = await self._open(request, messages, want_audio)
            for note in notes:
                yield note
            async for chunk in stream:
                for event in reply.read(chunk):
                    yield event
        except Exception as err:
            failure = error_for(err, self.options, reply_started=stream is not None, has_text=bool(reply.text))
            if failure is None:
                raise
            yield failure
            yield Done("error")
            return
        finally:
            if stream is not None:
                await stream.close()  # Stop / closed tab: the server sees the disconnect and aborts
        for event in reply.flush():
            yield event
        if reply.finish_reason is None:  # the body ended without a finish (SGLang-Omni on a crash)
            yield Error(Message("server.ended_early", {"kept": kept(bool(reply.text))}), "generation")
            yield Done("error")
            return
        if want_audio and not reply.audio_samples and self.options.speech == "auto" and reply.text:
            self._server_speaks = False
            yield Error(TEXT_ONLY, "speech")
        yield reply.metrics(started)
        yield Done("length" if reply.finish_reason == "length" else "stop")

    async def tokens(self, request: ChatRequest, prompt=None) -> AsyncIterator[TokenDelta]:
        """The hybrid backend's text source: text with its token ids (vLLM's ``return_token_ids``).

        Raises ``media.MediaError`` for a bad file and ``ServerFailure`` for everything the server does wrong.
        """
        messages = await self._messages_off_loop(request)
        stream = None
        text_seen = False
        try:
            stream, _, _ = await self._open(request, messages, False, {"return_token_ids": True})
            prompt_tokens = 0
            async for chunk in stream:
                extra = chunk.model_extra or {}
                prompt_tokens = prompt_tokens or len(extra.get("prompt_token_ids") or ())
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                    if not chunk.choices:  # the closing usage chunk
                        yield TokenDelta("", [], prompt_tokens, None)
                for choice in chunk.choices:
                    ids = (choice.model_extra or {}).get("token_ids") or []
                    text = choice.delta.content or ""
                    text_seen = text_seen or bool(text)
                    yield TokenDelta(text, list(ids), prompt_tokens, choice.finish_reason)
        except Exception as err:
            failure = error_for(err, self.options, reply_started=stream is not None, has_text=text_seen)
            if failure is None:
                raise
            raise ServerFailure(failure) from err
        finally:
            if stream is not None:
                await stream.close()

    async def _open(self, request: ChatRequest, messages: list[dict], want_audio: bool, extra: dict | None = None):
        """Start the streamed completion, adapting once to what a server refuses.

        Returns the stream, whether speech is still asked for, and notes for the user.
        """
        import openai

        notes: list[Event] = []
        dropped = 0
        while True:
            body = self._payloads.body(request, messages, want_audio, extra)
            try:
                return await self._clients.current().chat.completions.create(**body), want_audio, notes
            except openai.BadRequestError as err:
                refused = server_message(err).lower()
                if want_audio and self.options.speech == "auto" and "modalit" in refused:
                    self._server_speaks = want_audio = False  # a text-only server refusing the audio request
                    notes.append(Error(TEXT_ONLY, "speech"))
                elif "mm_processor_kwargs" in refused and self._payloads.video_audio == "processor" \
                        and self.options.video_audio == "auto":
                    log.warning("the server refuses mm_processor_kwargs: sending videos' sound as audio parts")
                    self._payloads.video_audio = "separate"
                    messages = await self._messages_off_loop(request)
                elif over_context(refused) and (later := _second_user_turn(request)) is not None:
                    # We don't hold the server's tokenizer: the server is the judge of what fits.
                    dropped += later
                    request = replace(request, turns=request.turns[later:])
                    messages = await self._messages_off_loop(request)
                    notes = [n for n in notes if not isinstance(n, Notice)] + [
                        Notice(Message("server.left_out", {"count": dropped}))]
                else:
                    raise

    async def _messages_off_loop(self, request: ChatRequest) -> list[dict]:
        """``Payloads.messages`` in a worker thread: decoding and base64-encoding a file can take seconds, which on
        the event loop would freeze every other user's stream."""
        return await asyncio.to_thread(self._payloads.messages, request)


def _kind_from_name(model: str) -> CheckpointKind:
    name = model.lower()
    if "caption" in name:
        return "captioner"
    return "thinking" if "thinking" in name else "instruct"


def _second_user_turn(request: ChatRequest) -> int | None:
    """Where the conversation goes on once its oldest exchange is left out; None if only one message is left."""
    return next((i for i, turn in enumerate(request.turns) if i and turn.role == "user"), None)
