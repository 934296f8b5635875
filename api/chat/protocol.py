"""The request of ``POST /v1/chat/completions``, as pydantic models ordered like OpenAI's reference, with the
extensions vLLM and vLLM-Omni take (grouped at the end). Responses are the ``openai`` SDK's own types
(``ChatCompletion``, ``ChatCompletionChunk``, ``ChatCompletionAudio``), built in ``serving.py``.

Request types parse; they don't fetch or decode: ``inputs.py`` turns the messages into a conversation of files. A
field the API has but this server doesn't do (tools, ``n`` > 1, stop sequences, logprobs, penalties) is refused by
name rather than ignored, so a caller never gets a reply made other than it asked. Fields nobody here knows are
ignored, and logged, as vLLM does.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backends.request import Sampling

log = logging.getLogger(__name__)

SEED_MAX = 2**32 - 1
"""NumPy's seeds (``transformers.set_seed`` seeds it), as the tabs bound theirs."""


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    def ignored_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


# -- message content parts -------------------------------------------------------------------------------------------

class TextPart(ApiModel):
    type: Literal["text"]
    text: str


class URL(ApiModel):
    url: str
    detail: str | None = None
    """``image_url.detail`` (auto/low/high): images are always sized by the media limits here."""


class ImagePart(ApiModel):
    type: Literal["image_url"]
    image_url: URL


class InputAudio(ApiModel):
    data: str
    """Base64 of the file's bytes (no data: prefix)."""
    format: str
    """OpenAI's ``wav`` or ``mp3``; any audio format the app reads is taken (flac, ogg, m4a, …)."""


class InputAudioPart(ApiModel):
    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioURLPart(ApiModel):
    """vLLM's extension: audio as a URL (here a data: URL)."""

    type: Literal["audio_url"]
    audio_url: URL


class VideoURLPart(ApiModel):
    """vLLM's extension: a video as a URL (here a data: URL); its sound is heard with ``use_audio_in_video``."""

    type: Literal["video_url"]
    video_url: URL


class RefusalPart(ApiModel):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[Union[TextPart, ImagePart, InputAudioPart, AudioURLPart, VideoURLPart, RefusalPart],
                        Field(discriminator="type")]
MEDIA_PARTS = (ImagePart, InputAudioPart, AudioURLPart, VideoURLPart)


class ChatMessage(ApiModel):
    role: Literal["developer", "system", "user", "assistant"]
    """``developer`` is OpenAI's newer name for ``system``; tool messages are refused (no tools here)."""
    content: str | list[ContentPart] | None = None
    name: str | None = None
    audio: dict | None = None
    """An assistant message's earlier spoken reply, by id: not kept here (send its transcript as content)."""


# -- the request -----------------------------------------------------------------------------------------------------

class AudioParam(ApiModel):
    voice: str | dict
    """One of the checkpoint's speakers (``GET /v1/models`` doesn't list them; an unknown one is refused naming
    them), or ``{"id": ...}``."""
    format: Literal["wav", "pcm16"] = "wav"
    """Streamed replies are ``pcm16`` (OpenAI's rule); a whole reply is ``wav`` or ``pcm16``."""

    @property
    def voice_name(self) -> str:
        return self.voice if isinstance(self.voice, str) else str(self.voice.get("id", ""))


class StreamOptions(ApiModel):
    include_usage: bool | None = None


class ChatCompletionRequest(ApiModel):
    """Example: ``ChatCompletionRequest.model_validate({"model": "qwen3-omni", "messages": [{"role": "user",
    "content": "Hi"}], "stream": True})``; ``.sampling()`` is what the engine is asked for."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: str | None = None
    """Any name: the app serves one model, whose id the reply carries."""
    audio: AudioParam | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    """The older name of ``max_completion_tokens`` (which wins when both are sent)."""
    modalities: list[Literal["text", "audio"]] | None = None
    n: int | None = None
    presence_penalty: float | None = None
    response_format: dict | None = None
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    tool_choice: str | dict | None = None
    tools: list | None = None
    top_logprobs: int | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None

    # -- vLLM and vLLM-Omni extensions (what --backend openai sends) --
    top_k: Annotated[int, Field(ge=1, description="vLLM's top-k (at least 1; omit it for the default 20)")] | None \
        = None
    speaker: str | None = Field(default=None, description="vLLM-Omni's voice, when `audio.voice` isn't given")
    mm_processor_kwargs: dict | None = Field(
        default=None, description="only `use_audio_in_video` (default false, as vLLM): hear videos' sound tracks")

    @model_validator(mode="after")
    def _refuse_what_is_not_served(self) -> ChatCompletionRequest:
        refused = {
            "n": self.n not in (None, 1) and "one choice per request is made here",
            "tools": bool(self.tools) and "no tools (function calling) here",
            "tool_choice": self.tool_choice not in (None, "none") and "no tools (function calling) here",
            "stop": bool(self.stop) and "no stop sequences here",
            "logprobs": (bool(self.logprobs) or bool(self.top_logprobs)) and "no logprobs here",
            "frequency_penalty": bool(self.frequency_penalty) and "no penalties here",
            "presence_penalty": bool(self.presence_penalty) and "no penalties here",
            "response_format": (self.response_format or {}).get("type", "text") != "text"
            and "replies are plain text here (no JSON mode or schema)",
        }
        for field, why in refused.items():
            if why:
                raise ValueError(f"{field}: not served ({why})")
        if set(self.mm_processor_kwargs or {}) - {"use_audio_in_video"}:
            raise ValueError("mm_processor_kwargs: only use_audio_in_video is taken")
        if self.stream and self.audio is not None and self.audio.format != "pcm16" and self.wants_audio:
            raise ValueError("audio.format: a streamed reply's audio is pcm16 (24 kHz, 16-bit, mono)")
        return self

    @property
    def wants_audio(self) -> bool:
        return "audio" in (self.modalities or ())

    @property
    def audio_format(self) -> str:
        return self.audio.format if self.audio is not None else ("pcm16" if self.stream else "wav")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def use_audio_in_video(self) -> bool:
        return bool((self.mm_processor_kwargs or {}).get("use_audio_in_video", False))

    def voice(self) -> str | None:
        """The voice asked for (``audio.voice``, else vLLM-Omni's ``speaker``), lower case as the speakers are."""
        name = self.audio.voice_name if self.audio is not None else self.speaker
        return name.lower() if name else None

    def sampling(self) -> Sampling:
        """The engine's settings; what isn't sent is the app's default (the tabs' and Qwen's recommendation)."""
        default = Sampling()
        return Sampling(
            temperature=default.temperature if self.temperature is None else self.temperature,
            top_p=default.top_p if self.top_p is None else self.top_p,
            top_k=default.top_k if self.top_k is None else self.top_k,
            max_new_tokens=self.max_completion_tokens or self.max_tokens or default.max_new_tokens,
            seed=self.seed)

    def log_ignored(self) -> None:
        ignored = self.ignored_fields()
        if ignored:
            log.info("chat completion: ignored fields %s", ", ".join(ignored))
