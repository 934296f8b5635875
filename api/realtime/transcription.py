"""Input audio transcription (``audio.input.transcription``): the user's spoken items in words, for the client.

Qwen3-Omni hears the audio itself, so a transcript is only for the client to show: it fills the item's
``transcript`` (what ``conversation.item.retrieve`` returns) and never enters what the model is given. The same
engine makes it, as a request of its own: the item's audio, then the instruction Qwen3-Omni's cookbooks use for
speech recognition (``instruction``), the session's ``prompt`` as the system message (context, where Qwen3-ASR
takes it), greedy, at most ``MAX_TOKENS`` tokens, text only. Its text streams as
``conversation.item.input_audio_transcription.delta`` and ends with ``.completed``, or ``.failed`` (the session
goes on).

When: the reply comes first. A transcription starts once no reply of the session waits for its first audio (its
first text, when it writes) and, for an item committed less than ``GRACE_S`` ago, once a reply asked since has
begun or ended: with server VAD the reply is asked at the commit, and a client that commits asks within that grace.
One runs at a time per session, the others wait in commit order, so a session holds at most one reply and one
transcription in the engine. Deleting the item (or its falling out of the conversation) and closing the session
close its engine stream, which stops the engine's work; a barge-in doesn't (the item stays, its transcription is
short and bounded).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from contextlib import aclosing
from dataclasses import dataclass
from typing import Callable

from openai.types.realtime import (ConversationItemInputAudioTranscriptionCompletedEvent,
                                   ConversationItemInputAudioTranscriptionDeltaEvent,
                                   ConversationItemInputAudioTranscriptionFailedEvent)
from openai.types.realtime.audio_transcription import AudioTranscription
from openai.types.realtime.conversation_item_input_audio_transcription_completed_event import (
    UsageTranscriptTextUsageDuration, UsageTranscriptTextUsageTokens)
from openai.types.realtime.conversation_item_input_audio_transcription_failed_event import Error as FailedError

from api.realtime.protocol import SPEECH_LANGUAGES, ClientGone, new_id
from api.realtime.response import Response, Send
from backends.base import Backend
from backends.events import Done, Error, Metrics, TextDelta
from backends.request import ChatRequest, MediaPart, Sampling, TextPart, Turn

log = logging.getLogger(__name__)

GRACE_S = 0.5
"""How long after a commit a reply may still be asked before the item's transcription starts without one."""
MAX_TOKENS = 512
"""A transcript's bound: 60 s of fast speech (the longest turn) fits."""
RANDOM_WEIGHTS_TOKENS = 32
"""A random-weights test model writes noise until its bound: keep it short."""
CHINESE = "请将这段中文语音转换为纯文本。"


def instruction(language: str | None) -> str:
    """Qwen3-Omni's speech-recognition instruction (its cookbooks and evaluation prompts), after the audio."""
    if language == "zh":
        return CHINESE
    if language in SPEECH_LANGUAGES:
        return f"Transcribe the {SPEECH_LANGUAGES[language]} audio into text."
    return "Transcribe the audio into text."


@dataclass
class Job:
    """One audio part to transcribe."""

    item_id: str
    content_index: int
    path: str
    seconds: float
    config: AudioTranscription
    committed_at: float
    """The event loop's time at its commit (``GRACE_S``)."""


class Transcriber:
    """One session's transcriptions: ``add`` queues one, a worker task runs them in order, one at a time.

    ``reply`` gives the session's reply in progress (None: none); ``done`` puts a finished transcript into the
    item's view."""

    def __init__(self, backend: Backend, send: Send, reply: Callable[[], Response | None],
                 done: Callable[[str, int, str], None]):
        self.backend, self._send, self._reply, self._done = backend, send, reply, done
        self._jobs: deque[Job] = deque()
        self._worker: asyncio.Task | None = None
        self._running: tuple[Job, asyncio.Task] | None = None
        self._asked = asyncio.Event()
        """Set when the session asks a reply (``reply_asked``)."""

    def add(self, job: Job) -> None:
        self._jobs.append(job)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"transcribe {job.item_id}")
            self._worker.add_done_callback(lambda task: task.cancelled() or task.exception())

    def reply_asked(self) -> None:
        self._asked.set()

    def forget(self, item_id: str) -> None:
        """The item is gone: its transcription isn't wanted (a running one's engine stream is closed)."""
        self._jobs = deque(job for job in self._jobs if job.item_id != item_id)
        if self._running is not None and self._running[0].item_id == item_id:
            self._running[1].cancel()

    async def close(self) -> None:
        """The session ends: nothing more is transcribed, and a running transcription's engine stream is closed
        before this returns."""
        self._jobs.clear()
        tasks = [task for task in (self._worker, self._running and self._running[1]) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _work(self) -> None:
        while self._jobs:
            job = self._jobs[0]
            await self._after_reply(job)
            if not self._jobs or self._jobs[0] is not job:  # forgotten meanwhile
                continue
            self._jobs.popleft()
            task = asyncio.create_task(self._transcribe(job), name=f"transcribe {job.item_id}")
            self._running = (job, task)
            try:
                (result,) = await asyncio.gather(task, return_exceptions=True)
            finally:
                self._running = None
            if isinstance(result, ClientGone):  # the session is closing: nobody to tell
                return

    async def _after_reply(self, job: Job) -> None:
        """Returns when the job may start (module docstring): the reply's first audio comes first."""
        loop = asyncio.get_running_loop()
        while True:
            reply = self._reply()
            if reply is not None and not reply.begun.is_set():
                await reply.begun.wait()
                return
            left = job.committed_at + GRACE_S - loop.time()
            if left <= 0:
                return
            self._asked.clear()
            try:
                await asyncio.wait_for(self._asked.wait(), left)
            except TimeoutError:
                return

    def request(self, job: Job) -> ChatRequest:
        tokens = RANDOM_WEIGHTS_TOKENS if self.backend.info.random_weights else MAX_TOKENS
        user = Turn("user", (MediaPart("audio", job.path), TextPart(instruction(job.config.language))))
        return ChatRequest((user,), system_prompt=job.config.prompt or "", return_audio=False,
                           sampling=Sampling(temperature=0.0, max_new_tokens=tokens), use_audio_in_video=False)

    async def _transcribe(self, job: Job) -> None:
        """One transcription, streamed to the client; a cancel (item gone, session closed) closes the engine's
        stream on its way out, and tells the client nothing."""
        common = dict(item_id=job.item_id, content_index=job.content_index)
        text, usage, error, finish = "", None, None, "stop"
        try:
            async with aclosing(self.backend.stream(self.request(job))) as events:
                async for event in events:
                    if isinstance(event, TextDelta) and event.text:
                        text += event.text
                        await self._send(ConversationItemInputAudioTranscriptionDeltaEvent(
                            type="conversation.item.input_audio_transcription.delta", event_id=new_id("event"),
                            delta=event.text, **common))
                    elif isinstance(event, Metrics):
                        usage = UsageTranscriptTextUsageTokens(
                            type="tokens", input_tokens=event.prompt_tokens, output_tokens=event.output_tokens,
                            total_tokens=event.prompt_tokens + event.output_tokens)
                    elif isinstance(event, Error):
                        error = error or event.message
                    elif isinstance(event, Done):
                        finish = event.finish_reason
        except ClientGone:
            raise
        except Exception as err:  # an engine that breaks its contract: this transcription fails, the session goes on
            log.exception("realtime transcription of %s failed", job.item_id)
            error = str(err) or type(err).__name__
        if error is None and finish == "error":
            error = "The engine failed."
        if error is not None:
            log.warning("realtime transcription of %s failed: %s", job.item_id, error)
            await self._send(ConversationItemInputAudioTranscriptionFailedEvent(
                type="conversation.item.input_audio_transcription.failed", event_id=new_id("event"),
                error=FailedError(type="server_error", code="transcription_failed", message=error), **common))
            return
        self._done(job.item_id, job.content_index, text)
        await self._send(ConversationItemInputAudioTranscriptionCompletedEvent(
            type="conversation.item.input_audio_transcription.completed", event_id=new_id("event"), transcript=text,
            usage=usage or UsageTranscriptTextUsageDuration(type="duration", seconds=job.seconds), **common))
