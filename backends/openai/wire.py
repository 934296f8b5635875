"""What a server streams back, read into events. Speech comes in one of two wire shapes:

- vLLM-Omni: chunks carry a top-level ``"modality": "audio"`` and a base64 WAV of the newest
  audio in ``choices[0].delta.content``; such chunks may say ``finish_reason: "stop"``
  before the text is done, so only the end of the stream ends the turn.
- SGLang-Omni: ``choices[0].delta.audio = {"id", "data"}`` with a base64 WAV (or raw PCM16).
- OpenAI (and this app's own ``/v1/chat/completions``): ``delta.audio = {"id", "data"}`` with raw PCM16 at 24 kHz,
  and the text as ``delta.audio.transcript`` with no ``delta.content`` at all. A transcript is read as the text only
  while the stream has sent no content, so a server that sent both would not be read twice.

``StreamedReply`` needs no network: tests can feed it chunks by hand.
"""

from __future__ import annotations

import base64
import io
import time

import numpy as np

import media
from backends.events import OUTPUT_SAMPLE_RATE, AudioChunk, Event, Metrics, ReasoningDelta
from backends.reasoning import ReasoningSplitter


class StreamedReply:
    """Turns streamed chunks of either wire shape into events, and keeps the tallies.

    Example::

        reply = StreamedReply(ReasoningSplitter())
        for chunk in chunks:  # openai ChatCompletionChunk objects
            events = reply.read(chunk)
        events = reply.flush()  # text held back in case it was the start of a tag
        metrics = reply.metrics(started)
    """

    def __init__(self, splitter: ReasoningSplitter):
        self.splitter = splitter
        self.text = ""
        self.finish_reason: str | None = None
        self.text_chunks = 0
        self._text_in_content = False
        self.audio_samples = 0
        self.usage = None
        self.first_text_at: float | None = None
        self.last_text_at: float | None = None
        self.first_audio_at: float | None = None

    def read(self, chunk) -> list[Event]:
        events: list[Event] = []
        if chunk.usage is not None:
            self.usage = chunk.usage
        is_audio_chunk = getattr(chunk, "modality", None) == "audio"  # vLLM-Omni
        for choice in chunk.choices:
            delta = choice.delta
            extra = delta.model_extra or {}
            if is_audio_chunk:
                if delta.content:
                    events.append(self._audio(delta.content))
                continue  # its finish_reason may come before the text is done
            audio = getattr(delta, "audio", None) or extra.get("audio")  # SGLang-Omni, OpenAI
            audio_data = audio.get("data") if isinstance(audio, dict) else getattr(audio, "data", None)
            if audio_data:
                events.append(self._audio(audio_data))
            transcript = audio.get("transcript") if isinstance(audio, dict) else getattr(audio, "transcript", None)
            # A server-side reasoning parser (vLLM --reasoning-parser) sends the thinking apart.
            reasoning = getattr(delta, "reasoning", None) or extra.get("reasoning") or extra.get("reasoning_content")
            if reasoning:
                self._text_arrived()
                events.append(ReasoningDelta(reasoning))
            self._text_in_content = self._text_in_content or bool(delta.content)
            text = delta.content or (transcript if not self._text_in_content else None)
            if text:
                self._text_arrived()
                self.text += text
                events.extend(self.splitter.feed(text))
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return events

    def flush(self) -> list[Event]:
        return self.splitter.flush()

    def _text_arrived(self) -> None:
        now = time.perf_counter()
        self.first_text_at = self.first_text_at or now
        self.last_text_at = now
        self.text_chunks += 1

    def _audio(self, data: str) -> AudioChunk:
        samples = decode_audio(data)
        self.first_audio_at = self.first_audio_at or time.perf_counter()
        self.audio_samples += samples.size
        return AudioChunk(samples)

    def metrics(self, started: float) -> Metrics:
        tokens = self.usage.completion_tokens if self.usage and self.usage.completion_tokens else self.text_chunks
        decode_s = (self.last_text_at or 0) - (self.first_text_at or 0)
        return Metrics(
            time_to_first_token_s=None if self.first_text_at is None else self.first_text_at - started,
            prompt_tokens=self.usage.prompt_tokens if self.usage else 0,
            output_tokens=tokens,
            tokens_per_s=(tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else None,
            time_to_first_audio_s=None if self.first_audio_at is None else self.first_audio_at - started,
            audio_seconds=self.audio_samples / OUTPUT_SAMPLE_RATE,
            total_s=time.perf_counter() - started,
        )


def decode_audio(data: str) -> np.ndarray:
    """A streamed audio chunk (base64 WAV with its own header, or raw PCM16 at 24 kHz) → float32 at 24 kHz."""
    import soundfile

    raw = base64.b64decode(data)
    if raw[:4] == b"RIFF":
        samples, rate = soundfile.read(io.BytesIO(raw), dtype="float32", always_2d=True)
        return media.resample(samples.mean(axis=1), rate, OUTPUT_SAMPLE_RATE)
    return np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
