"""One response of a realtime session: a backend's event stream → the protocol's server events.

The order is OpenAI's: ``response.created``, ``response.output_item.added``, ``conversation.item.added``,
``response.content_part.added``, the deltas (``response.output_audio_transcript.delta`` and
``response.output_audio.delta`` when it speaks, ``response.output_text.delta`` when it writes), then the ``.done``
of each, ``response.output_item.done``, ``conversation.item.done`` and ``response.done`` with its status and usage.

Cancelling the task that runs ``Response.run`` (``response.cancel``, barge-in, a closed connection) closes the
engine's stream at once, which stops the engine's work for it (the contract, ``backends.base``); the done events
still follow, with status ``cancelled``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import Awaitable, Callable

from openai.types.realtime import (ConversationItemAdded, ConversationItemDone, RealtimeResponse,
                                   RealtimeResponseStatus, RealtimeResponseUsage, ResponseAudioDeltaEvent,
                                   ResponseAudioDoneEvent, ResponseAudioTranscriptDeltaEvent,
                                   ResponseAudioTranscriptDoneEvent, ResponseContentPartAddedEvent,
                                   ResponseContentPartDoneEvent, ResponseCreatedEvent, ResponseDoneEvent,
                                   ResponseOutputItemAddedEvent, ResponseOutputItemDoneEvent, ResponseTextDeltaEvent,
                                   ResponseTextDoneEvent)
from openai.types.realtime.realtime_conversation_item_assistant_message import (
    Content as AssistantContent, RealtimeConversationItemAssistantMessage)
from openai.types.realtime.realtime_response_status import Error as StatusError
from openai.types.realtime.response_content_part_added_event import Part as AddedPart
from openai.types.realtime.response_content_part_done_event import Part as DonePart
import pydantic

from api.realtime.protocol import ClientGone, encode_pcm16, new_id
from backends.base import Backend
from backends.events import OUTPUT_SAMPLE_RATE, AudioChunk, Done, Error, Metrics, TextDelta
from backends.request import ChatRequest
from media import resample

log = logging.getLogger(__name__)

Send = Callable[[pydantic.BaseModel], Awaitable[None]]
STATUS = {"stop": "completed", "length": "incomplete", "cancelled": "cancelled", "error": "failed"}


class Response:
    """What one response has said so far; ``run`` streams it, ``text`` goes into the conversation after."""

    def __init__(self, send: Send, *, speaks: bool, voice: str | None, max_output_tokens: int,
                 on_end: Callable[[Response], None]):
        self.id, self.item_id = new_id("resp"), new_id("item")
        self._send, self.speaks, self.voice, self.max_output_tokens = send, speaks, voice, max_output_tokens
        self.on_end = on_end
        """Called once the response has ended, just before ``response.done`` goes out."""
        self.ended = False
        self.text = ""
        self.audio_samples = 0
        self.spoken_chars = 0
        """How much of ``text`` the audio so far can cover: the talker speaks only text already written."""
        self.status = "in_progress"
        self.cancel_reason = "client_cancelled"
        """Why a cancel came: ``client_cancelled`` (response.cancel, a closed client) or ``turn_detected``."""
        self.cancel_requested = False
        self.streaming = False
        """The engine's stream is open: a cancel must cancel the task (before, ``run`` sees ``cancel_requested``)."""
        self.error: str | None = None
        self.usage = RealtimeResponseUsage(input_tokens=0, output_tokens=0, total_tokens=0)
        self.first_audio_at: float | None = None
        self.begun = asyncio.Event()
        """Set at its first audio delta (its first text delta when it writes) or at its end: an input transcription
        waits for it (``transcription.py``), so the engine starts the reply's speech before the transcription."""

    async def run(self, backend: Backend, request: ChatRequest) -> None:
        """Stream the reply; returns when it is done, failed or cancelled (the task's cancel is taken here)."""
        try:
            await self._start()
            if self.cancel_requested:  # cancelled while the events above went out: the engine is never asked
                finish = "cancelled"
            else:
                finish = await self._stream(backend, request)
            self.status = STATUS.get(finish, "failed")
            await self._finish()
        finally:  # a send that failed (the client gone) ends the response all the same
            self._end()

    async def _start(self) -> None:
        await self._send(ResponseCreatedEvent(type="response.created", event_id=new_id("event"),
                                              response=self._response()))
        await self._send(ResponseOutputItemAddedEvent(type="response.output_item.added", event_id=new_id("event"),
                                                      response_id=self.id, output_index=0, item=self.item()))
        await self._send(ConversationItemAdded(type="conversation.item.added", event_id=new_id("event"),
                                               item=self.item()))
        await self._send(ResponseContentPartAddedEvent(
            type="response.content_part.added", event_id=new_id("event"), response_id=self.id, item_id=self.item_id,
            output_index=0, content_index=0,
            part=AddedPart(type="audio", transcript="") if self.speaks else AddedPart(type="text", text="")))

    async def _stream(self, backend: Backend, request: ChatRequest) -> str:
        """The engine's events → deltas; its finish reason. From here on a cancel is the task's (``streaming``)."""
        finish = "stop"
        self.streaming = True
        try:
            async with aclosing(backend.stream(request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta) and event.text:
                        await self._text(event.text)
                    elif isinstance(event, AudioChunk) and self.speaks:
                        await self._audio(event)
                    elif isinstance(event, Metrics):
                        self.usage = RealtimeResponseUsage(
                            input_tokens=event.prompt_tokens, output_tokens=event.output_tokens,
                            total_tokens=event.prompt_tokens + event.output_tokens)
                    elif isinstance(event, Error) and event.stage != "speech":  # speech failing leaves the text
                        self.error = event.message
                    elif isinstance(event, Done):
                        finish = event.finish_reason
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # ours (Session.cancel_response): the done events still go out
            finish = "cancelled"
        except ClientGone:  # nobody to tell: the session is closing, and closed the engine's stream on the way
            raise
        except Exception as err:  # an engine that breaks its contract: this response fails, the session goes on
            log.exception("realtime response failed")
            self.error, finish = str(err), "error"
        return finish

    def _end(self) -> None:
        self.begun.set()
        if not self.ended:
            self.ended = True
            self.on_end(self)

    async def _text(self, text: str) -> None:
        self.text += text
        common = dict(event_id=new_id("event"), response_id=self.id, item_id=self.item_id, output_index=0,
                      content_index=0, delta=text)
        await self._send(ResponseAudioTranscriptDeltaEvent(type="response.output_audio_transcript.delta", **common)
                         if self.speaks else ResponseTextDeltaEvent(type="response.output_text.delta", **common))
        if not self.speaks:
            self.begun.set()

    async def _audio(self, chunk: AudioChunk) -> None:
        samples = resample(chunk.samples, chunk.sample_rate, OUTPUT_SAMPLE_RATE)
        if not len(samples):
            return
        self.first_audio_at = self.first_audio_at or time.perf_counter()
        self.audio_samples += len(samples)
        self.spoken_chars = len(self.text)
        await self._send(ResponseAudioDeltaEvent(
            type="response.output_audio.delta", event_id=new_id("event"), response_id=self.id, item_id=self.item_id,
            output_index=0, content_index=0, delta=encode_pcm16(samples)))
        self.begun.set()

    async def _finish(self) -> None:
        common = dict(response_id=self.id, item_id=self.item_id, output_index=0, content_index=0)
        if self.speaks:
            await self._send(ResponseAudioDoneEvent(type="response.output_audio.done", event_id=new_id("event"),
                                                    **common))
            await self._send(ResponseAudioTranscriptDoneEvent(
                type="response.output_audio_transcript.done", event_id=new_id("event"), transcript=self.text,
                **common))
            part = DonePart(type="audio", transcript=self.text)
        else:
            await self._send(ResponseTextDoneEvent(type="response.output_text.done", event_id=new_id("event"),
                                                   text=self.text, **common))
            part = DonePart(type="text", text=self.text)
        await self._send(ResponseContentPartDoneEvent(type="response.content_part.done", event_id=new_id("event"),
                                                      part=part, **common))
        await self._send(ResponseOutputItemDoneEvent(type="response.output_item.done", event_id=new_id("event"),
                                                     response_id=self.id, output_index=0, item=self.item()))
        await self._send(ConversationItemDone(type="conversation.item.done", event_id=new_id("event"),
                                              item=self.item()))
        self._end()  # before response.done: a client answering it at once finds the session free
        await self._send(ResponseDoneEvent(type="response.done", event_id=new_id("event"),
                                           response=self._response()))

    def item(self, text: str | None = None) -> RealtimeConversationItemAssistantMessage:
        """This response's conversation item: no content while in progress, its text once done; ``text`` puts that
        in instead (the text so far, or the part of a cut reply that was heard)."""
        done = self.status != "in_progress"
        text = self.text if text is None and done else text
        content = [] if text is None else [AssistantContent(type="output_audio", transcript=text) if self.speaks
                                           else AssistantContent(type="output_text", text=text)]
        return RealtimeConversationItemAssistantMessage(
            type="message", role="assistant", id=self.item_id, object="realtime.item", content=content,
            status="in_progress" if not done else "completed" if self.status == "completed" else "incomplete")

    def _response(self) -> RealtimeResponse:
        done = self.status != "in_progress"
        details = None
        if self.status == "cancelled":
            details = RealtimeResponseStatus(type="cancelled", reason=self.cancel_reason)
        elif self.status == "incomplete":
            details = RealtimeResponseStatus(type="incomplete", reason="max_output_tokens")
        elif self.status == "failed":
            details = RealtimeResponseStatus(type="failed", error=StatusError(
                type="server_error", code="engine_error", message=self.error or "The engine failed."))
            log.warning("realtime response %s failed: %s", self.id, self.error)
        return RealtimeResponse(
            id=self.id, object="realtime.response", status=self.status, status_details=details,
            output_modalities=["audio" if self.speaks else "text"], max_output_tokens=self.max_output_tokens,
            output=[self.item()] if done else [], usage=self.usage if done else None)
