"""What a backend streams back for one request.

Every backend yields these and nothing else, so the UI (and tests) never see a model
class. Modelled on openai-python's typed stream events: one small frozen class per
event with a ``type`` discriminator, and one ``Event`` union at the bottom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import numpy as np

from messages import Message

OUTPUT_SAMPLE_RATE = 24_000
"""Qwen3-Omni speaks 24 kHz mono float32 (one codec frame = 80 ms = 1920 samples)."""


@dataclass(frozen=True)
class TextDelta:
    """New reply text, to append to what came before."""

    text: str
    type: Literal["text.delta"] = "text.delta"


@dataclass(frozen=True)
class ReasoningDelta:
    """New text of the model's reasoning (Thinking checkpoint, inside <think>…</think>)."""

    text: str
    type: Literal["reasoning.delta"] = "reasoning.delta"


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """The next piece of the spoken reply: mono float32 samples in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int = OUTPUT_SAMPLE_RATE
    type: Literal["audio.chunk"] = "audio.chunk"

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Metrics:
    """Timings of one reply; fields are None when they don't apply (e.g. no speech)."""

    time_to_first_token_s: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    tokens_per_s: float | None = None
    time_to_first_audio_s: float | None = None
    audio_seconds: float = 0.0
    talker_frames_per_s: float | None = None
    real_time_factor: float | None = None
    """Seconds spent generating speech per second of speech (< 1 is faster than real time)."""
    total_s: float | None = None
    type: Literal["metrics"] = "metrics"


@dataclass(frozen=True)
class Notice:
    """Something the user should know that is not an error (older turns left out to fit, a silent video)."""

    msg: Message
    type: Literal["notice"] = "notice"

    @property
    def message(self) -> str:
        """The message in English (logs, tests)."""
        return str(self.msg)


ErrorStage = Literal["input", "generation", "speech", "backend"]


@dataclass(frozen=True)
class Error:
    """Something went wrong; text streamed before it stays valid.

    ``stage="speech"`` means the text reply is complete but speaking it failed. ``msg`` is rendered in
    the user's language (``ui.messages``); an engine's own words travel inside it as values.
    """

    msg: Message
    stage: ErrorStage = "generation"
    type: Literal["error"] = "error"

    @property
    def message(self) -> str:
        """The message in English (logs, tests)."""
        return str(self.msg)


FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class Done:
    """Always the last event of a stream."""

    finish_reason: FinishReason = "stop"
    type: Literal["done"] = "done"


Event = Union[TextDelta, ReasoningDelta, AudioChunk, Metrics, Notice, Error, Done]

__all__ = [
    "OUTPUT_SAMPLE_RATE",
    "AudioChunk",
    "Done",
    "Error",
    "ErrorStage",
    "Event",
    "FinishReason",
    "Metrics",
    "Notice",
    "ReasoningDelta",
    "TextDelta",
]
