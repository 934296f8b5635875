"""What the `openai` backend is told: which server, which model, and how to talk to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import media
from backends.base import CheckpointKind

QWEN3_OMNI_SPEAKERS = ("Ethan", "Chelsie", "Aiden")
"""The voices of Qwen3-Omni-30B-A3B-Instruct (a server doesn't list them)."""


@dataclass(frozen=True)
class OpenAIOptions:
    """Example: ``OpenAIOptions(api_base="http://gpu-box:8000/v1", speech="off")``."""

    api_base: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    """Else $OPENAI_API_KEY, else "EMPTY" (vLLM needs none unless started with --api-key)."""
    model: str | None = None
    """Else the first model the server lists at GET /v1/models."""
    speech: Literal["auto", "on", "off"] = "auto"
    """auto: ask for speech, fall back to text (with a note) if the server sends none."""
    speakers: tuple[str, ...] = QWEN3_OMNI_SPEAKERS
    video_audio: Literal["auto", "processor", "separate"] = "auto"
    """How a video's sound reaches the model: "processor" sets mm_processor_kwargs.use_audio_in_video;
    "separate" sends the sound track as its own audio part; "auto" tries the first and falls back to the
    second if the server refuses per-request processor settings (`vllm serve` does, unless started
    with --trust-request-mm-kwargs)."""
    kind: CheckpointKind | None = None
    """Else guessed from the model name ("Thinking" reasons, "Captioner" captions)."""
    timeout_s: float = 600.0
    """Longest silence between two streamed chunks."""
    connect_timeout_s: float = 10.0
    max_concurrency: int = 8
    """Requests the app sends at once; the server batches them."""
    media_cache_mb: int = 512
    """Keeps the data: URLs of recent files (resent every turn) up to this many MB in all; a larger file is
    encoded again each turn."""
    media_limits: media.MediaLimits = media.DEFAULT_LIMITS
