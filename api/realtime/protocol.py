"""The OpenAI Realtime protocol's wire: client events parsed into the ``openai`` SDK's own pydantic types, the
session's settings, refusals as ``error`` events, and PCM16 audio in base64.

We parse with the SDK's types (GA event names, ``openai.types.realtime``) rather than hand-written dicts, so a field
the protocol doesn't have, or a value it doesn't allow, is refused the way the protocol defines it. Two places where
we differ, on purpose:
- **Input audio at 16 kHz**: the SDK's ``audio/pcm`` allows only ``rate: 24000`` (OpenAI's rate); SGLang-Omni takes
  16 kHz PCM16, the rate the model hears. We take either (24 kHz by default, as OpenAI's clients send it) and echo
  the rate in ``session.updated``. Output is always 24 kHz PCM16, the model's own rate.
- **Voices** are the checkpoint's speakers (``BackendInfo.speakers``), not OpenAI's names.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pydantic
from openai.types.realtime import (ConversationItemCreateEvent, ConversationItemDeleteEvent,
                                   ConversationItemRetrieveEvent, ConversationItemTruncateEvent,
                                   InputAudioBufferAppendEvent, InputAudioBufferClearEvent,
                                   InputAudioBufferCommitEvent, OutputAudioBufferClearEvent,
                                   RealtimeResponseCreateParams, RealtimeSessionCreateRequest, ResponseCancelEvent,
                                   ResponseCreateEvent,
                                   SessionUpdateEvent)
from openai.types.realtime.audio_transcription import AudioTranscription
from openai.types.realtime.realtime_audio_config import RealtimeAudioConfig
from openai.types.realtime.realtime_audio_config_input import RealtimeAudioConfigInput
from openai.types.realtime.realtime_audio_config_output import RealtimeAudioConfigOutput
from openai.types.realtime.realtime_audio_formats import AudioPCM
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad
from openai.types.realtime.realtime_error import RealtimeError
from openai.types.realtime.realtime_error_event import RealtimeErrorEvent

import media
from backends.events import OUTPUT_SAMPLE_RATE
from turns.voice import VOICE_ASSISTANT_PROMPT, default_speaker

SPEECH_LANGUAGES = {"en": "English", "zh": "Chinese", "ko": "Korean", "ja": "Japanese", "de": "German",
                    "ru": "Russian", "it": "Italian", "fr": "French", "es": "Spanish", "pt": "Portuguese",
                    "ms": "Malay", "nl": "Dutch", "id": "Indonesian", "tr": "Turkish", "vi": "Vietnamese",
                    "ar": "Arabic", "ur": "Urdu"}
"""The speech Qwen3-Omni understands (its model card's list; Cantonese has no ISO-639-1 code): a transcription's
``language`` names one of these, by its ISO-639-1 code."""

INPUT_RATES = (24_000, 16_000)
"""PCM16 rates we take in: OpenAI's (the default), and SGLang-Omni's (what the model hears, no resampling)."""

CLIENT_EVENTS: dict[str, type[pydantic.BaseModel]] = {
    "session.update": SessionUpdateEvent,
    "input_audio_buffer.append": InputAudioBufferAppendEvent,
    "input_audio_buffer.commit": InputAudioBufferCommitEvent,
    "input_audio_buffer.clear": InputAudioBufferClearEvent,
    "conversation.item.create": ConversationItemCreateEvent,
    "conversation.item.delete": ConversationItemDeleteEvent,
    "conversation.item.retrieve": ConversationItemRetrieveEvent,
    "conversation.item.truncate": ConversationItemTruncateEvent,
    "output_audio_buffer.clear": OutputAudioBufferClearEvent,
    "response.create": ResponseCreateEvent,
    "response.cancel": ResponseCancelEvent,
}


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (``event_…``, ``item_…``, ``resp_…``)."""
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class ClientGone(Exception):
    """Sending to the client failed: it left or stopped reading. The session ends; no response failed."""


class Refusal(Exception):
    """A client event we won't act on: answered by an ``error`` event, and the session goes on."""

    def __init__(self, code: str, message: str, *, param: str | None = None, event_id: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.code, self.message, self.param, self.event_id, self.kind = code, message, param, event_id, kind

    def event(self) -> RealtimeErrorEvent:
        return RealtimeErrorEvent(type="error", event_id=new_id("event"),
                                  error=RealtimeError(type=self.kind, code=self.code, message=self.message,
                                                      param=self.param, event_id=self.event_id))


def parse_client_event(text: str) -> Any:
    """One client message → the SDK's event model; a ``Refusal`` for malformed JSON, an unknown type or bad fields.
    Input audio at 16 kHz is taken out of the session's format before the SDK's type sees it (module docstring)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Refusal("invalid_json", f"The message is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise Refusal("invalid_json", "A client event is a JSON object with a 'type'.")
    kind, event_id = data.get("type"), data.get("event_id") if isinstance(data.get("event_id"), str) else None
    model = CLIENT_EVENTS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise Refusal("unknown_event", f"Unknown client event type {kind!r}; this server takes "
                      f"{', '.join(CLIENT_EVENTS)}.", param="type", event_id=event_id)
    input_rate = _take_input_rate(data) if kind == "session.update" else None
    try:
        event = model.model_validate(data)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Refusal("invalid_event", f"{kind}: {where}: {first['msg']}", param=where, event_id=event_id) from None
    if input_rate is not None:  # put back, past the SDK's check
        event.session.audio.input.format = AudioPCM.model_construct(type="audio/pcm", rate=input_rate)
    return event


def _take_input_rate(data: dict) -> int | None:
    """The input format's rate when it is one we take but the SDK's type doesn't (16 kHz), removed from ``data``."""
    audio = (data.get("session") or {}).get("audio") if isinstance(data.get("session"), dict) else None
    fmt = ((audio or {}).get("input") or {}).get("format") if isinstance(audio, dict) else None
    if isinstance(fmt, dict) and fmt.get("rate") in INPUT_RATES and fmt.get("rate") != 24_000:
        return int(fmt.pop("rate"))
    return None


@dataclass(frozen=True)
class SessionConfig:
    """What one session answers with; ``session.update`` changes it field by field (``updated``)."""

    speakers: tuple[str, ...]
    voice: str | None
    instructions: str = ""
    output_modalities: tuple[str, ...] = ("audio",)
    input_rate: int = 24_000
    turn_detection: ServerVad | None = field(default_factory=lambda: ServerVad(
        type="server_vad", threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500,
        create_response=True, interrupt_response=True))
    max_output_tokens: int | None = None
    """None: the app's default for one spoken reply."""
    transcription: AudioTranscription | None = None
    """Input transcription (``transcription.py``): off unless a client asks."""

    @classmethod
    def default(cls, speakers: tuple[str, ...]) -> SessionConfig:
        """Qwen3-Omni's recommended voice-chat prompt and voice when it speaks (a client may change both)."""
        if not speakers:
            return cls(speakers, None, output_modalities=("text",))
        return cls(speakers, default_speaker(speakers), instructions=VOICE_ASSISTANT_PROMPT)

    @property
    def speaks(self) -> bool:
        return "audio" in self.output_modalities

    def updated(self, event: SessionUpdateEvent) -> SessionConfig:
        """This config with what ``event`` sets; a ``Refusal`` (and no change at all) for what we can't do."""
        session, eid = event.session, event.event_id
        if not isinstance(session, RealtimeSessionCreateRequest):
            raise Refusal("unsupported_session_type", "Only 'realtime' sessions are served here (no transcription "
                          "sessions).", param="session.type", event_id=eid)
        config, fields = self, session.model_fields_set
        if "instructions" in fields:
            config = replace(config, instructions=session.instructions or "")
        if "output_modalities" in fields and session.output_modalities is not None:
            modalities = tuple(dict.fromkeys(session.output_modalities))
            if not modalities or ("audio" in modalities and not self.speakers):
                raise Refusal("invalid_value", "This model answers in text only: output_modalities must be "
                              "['text'].", param="session.output_modalities", event_id=eid)
            config = replace(config, output_modalities=modalities)
        if "max_output_tokens" in fields:
            value = session.max_output_tokens
            config = replace(config, max_output_tokens=None if value in (None, "inf") else int(value))
            if config.max_output_tokens is not None and config.max_output_tokens < 1:
                raise Refusal("invalid_value", "max_output_tokens must be at least 1.",
                              param="session.max_output_tokens", event_id=eid)
        if session.audio is not None:
            config = config._audio_updated(session.audio, eid)
        return config

    def updated_for_response(self, params: RealtimeResponseCreateParams, eid: str | None) -> SessionConfig:
        """The settings one ``response.create`` overrides for itself (instructions, modalities, tokens, voice)."""
        fields = {k: getattr(params, k) for k in ("instructions", "output_modalities", "max_output_tokens")
                  if k in params.model_fields_set}
        audio = None
        if params.audio is not None and params.audio.output is not None:
            audio = RealtimeAudioConfig(output=RealtimeAudioConfigOutput(**params.audio.output.model_dump(
                exclude_unset=True)))
        update = SessionUpdateEvent(type="session.update", event_id=eid, session=RealtimeSessionCreateRequest(
            type="realtime", **fields, **({"audio": audio} if audio is not None else {})))
        return self.updated(update)

    def _audio_updated(self, audio: RealtimeAudioConfig, eid: str | None) -> SessionConfig:
        config = self
        if audio.input is not None:
            fields = audio.input.model_fields_set
            if "format" in fields and audio.input.format is not None:
                if audio.input.format.type not in (None, "audio/pcm"):
                    raise Refusal("unsupported_audio_format", "Input audio must be audio/pcm (PCM16 mono, 24000 or "
                                  "16000 Hz).", param="session.audio.input.format", event_id=eid)
                config = replace(config, input_rate=getattr(audio.input.format, "rate", None) or 24_000)
            if "turn_detection" in fields:
                detection = audio.input.turn_detection
                if detection is not None and detection.type != "server_vad":
                    raise Refusal("unsupported_turn_detection", "semantic_vad is not available here (no semantic "
                                  "end-of-turn model ships offline); use server_vad or null.",
                                  param="session.audio.input.turn_detection.type", event_id=eid)
                config = replace(config, turn_detection=_checked_vad(detection, self.turn_detection, eid))
            if "transcription" in fields:
                config = replace(config, transcription=_checked_transcription(audio.input.transcription, eid))
        if audio.output is not None:
            fields = audio.output.model_fields_set
            if "format" in fields and audio.output.format is not None and audio.output.format.type not in (
                    None, "audio/pcm"):
                raise Refusal("unsupported_audio_format", "Output audio is audio/pcm at 24000 Hz (PCM16 mono).",
                              param="session.audio.output.format", event_id=eid)
            if "voice" in fields and audio.output.voice is not None:
                voice = audio.output.voice if isinstance(audio.output.voice, str) else getattr(
                    audio.output.voice, "id", "")
                if voice.lower() not in self.speakers:
                    raise Refusal("invalid_value", f"Unknown voice {voice!r}; this model speaks with "
                                  f"{', '.join(self.speakers) or 'no voice (text only)'}.",
                                  param="session.audio.output.voice", event_id=eid)
                config = replace(config, voice=voice.lower())
        return config

    def session(self, model: str) -> RealtimeSessionCreateRequest:
        """The effective session, as ``session.created`` / ``session.updated`` carry it."""
        input_format = AudioPCM(type="audio/pcm", rate=24_000) if self.input_rate == 24_000 else \
            AudioPCM.model_construct(type="audio/pcm", rate=self.input_rate)  # our 16 kHz (module docstring)
        return RealtimeSessionCreateRequest(
            type="realtime", model=model, instructions=self.instructions,
            output_modalities=["audio" if self.speaks else "text"],
            max_output_tokens=self.max_output_tokens if self.max_output_tokens is not None else "inf",
            audio=RealtimeAudioConfig(
                input=RealtimeAudioConfigInput(format=input_format, turn_detection=self.turn_detection,
                                               transcription=self.transcription),
                output=RealtimeAudioConfigOutput(format=AudioPCM(type="audio/pcm", rate=OUTPUT_SAMPLE_RATE),
                                                 voice=self.voice)))


def _checked_vad(update: ServerVad | None, current: ServerVad | None, eid: str | None) -> ServerVad | None:
    """server_vad's settings merged over the current ones (the protocol updates only what is sent), in range."""
    if update is None:
        return None
    merged = (current or SessionConfig.default(()).turn_detection).model_copy(
        update={k: getattr(update, k) for k in update.model_fields_set if getattr(update, k) is not None})
    param = "session.audio.input.turn_detection"
    if not 0.0 < (merged.threshold or 0.5) < 1.0:
        raise Refusal("invalid_value", "threshold is between 0 and 1.", param=f"{param}.threshold", event_id=eid)
    if not 100 <= (merged.silence_duration_ms or 0) <= 10_000:
        raise Refusal("invalid_value", "silence_duration_ms is 100–10000.", param=f"{param}.silence_duration_ms",
                      event_id=eid)
    if not 0 <= (merged.prefix_padding_ms or 0) <= 2_000:
        raise Refusal("invalid_value", "prefix_padding_ms is 0–2000.", param=f"{param}.prefix_padding_ms",
                      event_id=eid)
    if merged.idle_timeout_ms is not None:
        raise Refusal("unsupported_value", "idle_timeout_ms is not supported here.", param=f"{param}.idle_timeout_ms",
                      event_id=eid)
    return merged


def _checked_transcription(update: AudioTranscription | None, eid: str | None) -> AudioTranscription | None:
    """The transcription settings as sent (a new object replaces the old whole), if we can serve them: any model
    name (Qwen3-Omni transcribes, whatever it is called), a language it hears, and a prompt."""
    if update is None:
        return None
    param = "session.audio.input.transcription"
    for name in ("delay", "keywords", "languages"):
        if getattr(update, name) is not None:
            raise Refusal("unsupported_value", f"{name} is not supported here; a transcription takes model, language "
                          "and prompt.", param=f"{param}.{name}", event_id=eid)
    if update.language is not None:
        code = update.language.strip().lower()
        if code not in SPEECH_LANGUAGES:
            raise Refusal("invalid_value", f"Qwen3-Omni understands speech in {', '.join(SPEECH_LANGUAGES)} (ISO-639-1 "
                          f"codes), not {update.language!r}; leave language out to let it tell.",
                          param=f"{param}.language", event_id=eid)
        update = update.model_copy(update={"language": code})
    return update


def decode_pcm16(data: str, *, param: str, event_id: str | None) -> np.ndarray:
    """Base64 PCM16 little-endian mono → float32 in [-1, 1]."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal("invalid_audio", "Audio must be base64 PCM16.", param=param, event_id=event_id) from None
    if len(raw) % 2:
        raise Refusal("invalid_audio", "PCM16 audio has an even number of bytes.", param=param, event_id=event_id)
    return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0


def encode_pcm16(samples: np.ndarray) -> str:
    """float32 [-1, 1] → base64 PCM16 little-endian, what ``response.output_audio.delta`` carries."""
    return base64.b64encode(media.pcm16(samples).astype("<i2").tobytes()).decode("ascii")
