"""One reply: the engine's events → the ``openai`` SDK's ``ChatCompletionChunk`` as they come, and the whole
``ChatCompletion`` at the end. A pure accumulator (no network), like the SDK's ``ChatCompletionStreamState``: the
streamed and the whole answer are made by the same code, and tests can feed it events by hand.

Speech is OpenAI's audio output: streamed, ``choices[0].delta.audio`` carries ``{id, transcript}`` for the text and
``{id, data}`` for base64 PCM16 at 24 kHz mono, and the last chunk ``{id, expires_at}``; whole, ``message.audio`` is a
``ChatCompletionAudio`` holding the WAV (or PCM16) and its transcript, and ``content`` is null, as OpenAI answers.
Replies are not kept, so ``expires_at`` is the moment the reply was made. The Thinking model's reasoning goes in
``delta.reasoning`` / ``message.reasoning``, as vLLM sends it.
"""

from __future__ import annotations

import base64
import io
import logging
import time
import uuid

import numpy as np
from openai.types.chat import ChatCompletion, ChatCompletionAudio, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice, ChoiceDelta, ChoiceDeltaAudio
from openai.types.completion_usage import CompletionUsage

import media
from api.errors import ErrorResponse
from backends.events import (OUTPUT_SAMPLE_RATE, AudioChunk, Done, Error, Event, Metrics, Notice, ReasoningDelta,
                             TextDelta)

log = logging.getLogger(__name__)

ERROR_STATUS = {"input": 400, "backend": 503}
"""An engine's error by its stage: a file it refused is the caller's (400), an engine it can't reach is 503; a
reply that broke is a 500."""


class ChatReply:
    """Example::

        reply = ChatReply("qwen3-omni", speaks=True)
        first = reply.first_chunk()
        for event in events: chunks = reply.handle(event)     # each an SSE line's payload
        last = reply.closing_chunks(include_usage=True)       # or reply.completion("wav") when not streamed
    """

    def __init__(self, model: str, *, speaks: bool):
        self.id, self.audio_id = f"chatcmpl-{uuid.uuid4().hex}", f"audio_{uuid.uuid4().hex[:24]}"
        self.model, self.speaks = model, speaks
        self.created = int(time.time())
        self.text = self.reasoning = ""
        self.audio: list[np.ndarray] = []
        """int16 PCM at 24 kHz, chunk by chunk."""
        self.usage = CompletionUsage(prompt_tokens=0, completion_tokens=0, total_tokens=0)
        self.finish: str | None = None
        self.error: Error | None = None
        self.speech_failed = False

    def first_chunk(self) -> ChatCompletionChunk:
        return self._chunk(ChoiceDelta(role="assistant", content=""))

    def handle(self, event: Event) -> list[ChatCompletionChunk]:
        """The chunks ``event`` makes (none for tallies, notices and the end)."""
        if isinstance(event, TextDelta) and event.text:
            self.text += event.text
            return [self._chunk(ChoiceDelta(audio=ChoiceDeltaAudio(id=self.audio_id, transcript=event.text))
                                if self.speaks else ChoiceDelta(content=event.text))]
        if isinstance(event, ReasoningDelta) and event.text:
            self.reasoning += event.text
            return [self._chunk(ChoiceDelta(reasoning=event.text))]
        if isinstance(event, AudioChunk) and self.speaks:
            samples = media.pcm16(media.resample(event.samples, event.sample_rate, OUTPUT_SAMPLE_RATE))
            if not samples.size:
                return []
            self.audio.append(samples)
            data = base64.b64encode(samples.astype("<i2").tobytes()).decode("ascii")
            return [self._chunk(ChoiceDelta(audio=ChoiceDeltaAudio(id=self.audio_id, data=data)))]
        if isinstance(event, Metrics):
            self.usage = CompletionUsage(prompt_tokens=event.prompt_tokens, completion_tokens=event.output_tokens,
                                         total_tokens=event.prompt_tokens + event.output_tokens)
        elif isinstance(event, Error):
            if event.stage == "speech":  # the text is whole; the reply goes on without (more) speech
                log.warning("chat completion %s: speech failed: %s", self.id, event.message)
                self.speech_failed = True
            else:
                self.error = self.error or event
        elif isinstance(event, Notice):
            log.info("chat completion %s: %s", self.id, event.message)
        elif isinstance(event, Done):
            self.finish = "length" if event.finish_reason == "length" else "stop"
        return []

    def failure(self) -> ErrorResponse | None:
        """What went wrong, as the response to give, once the engine's stream has ended."""
        if self.error is not None:
            return ErrorResponse(ERROR_STATUS.get(self.error.stage, 500), self.error.message,
                                 code="engine_error" if self.error.stage != "input" else "invalid_input")
        if self.finish is None:  # an engine that broke its contract (no Done)
            return ErrorResponse(500, "The engine's reply ended without finishing.", code="engine_error")
        return None

    def closing_chunks(self, include_usage: bool) -> list[ChatCompletionChunk]:
        """The chunk with the finish reason (and the audio's expiry), then the usage chunk if asked for."""
        audio = ChoiceDeltaAudio(id=self.audio_id, expires_at=self.created) if self.speaks else None
        chunks = [self._chunk(ChoiceDelta(audio=audio) if audio else ChoiceDelta(), finish=self.finish or "stop")]
        if include_usage:
            chunks.append(ChatCompletionChunk(id=self.id, object="chat.completion.chunk", created=self.created,
                                              model=self.model, choices=[], usage=self.usage))
        return chunks

    def completion(self, audio_format: str) -> ChatCompletion:
        """The whole reply, not streamed: text in ``content``, or speech in ``audio`` with its transcript."""
        audio = None
        if self.speaks and not self.speech_failed:
            audio = ChatCompletionAudio(id=self.audio_id, data=self._audio_data(audio_format),
                                        expires_at=self.created, transcript=self.text)
        extra = {"reasoning": self.reasoning} if self.reasoning else {}
        message = ChatCompletionMessage(role="assistant", content=None if audio else self.text, audio=audio, **extra)
        return ChatCompletion(id=self.id, object="chat.completion", created=self.created, model=self.model,
                              choices=[Choice(index=0, finish_reason=self.finish or "stop", message=message)],
                              usage=self.usage)

    def _audio_data(self, audio_format: str) -> str:
        samples = np.concatenate(self.audio) if self.audio else np.zeros(0, np.int16)
        if audio_format == "pcm16":
            raw = samples.astype("<i2").tobytes()
        else:
            import soundfile

            buffer = io.BytesIO()
            soundfile.write(buffer, samples, OUTPUT_SAMPLE_RATE, format="WAV", subtype="PCM_16")
            raw = buffer.getvalue()
        return base64.b64encode(raw).decode("ascii")

    def _chunk(self, delta: ChoiceDelta, finish: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, object="chat.completion.chunk", created=self.created, model=self.model,
                                   choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)])
