"""Chat messages → the conversation the engine takes (``backends.request.Turn``): text as it is, every medium a file
in the request's own folder, checked by ``media`` against the app's limits before the engine is asked.

Media come inline only: ``image_url``, ``audio_url`` and ``video_url`` as base64 ``data:`` URLs, ``input_audio`` as
base64 with its format. The server fetches no URL: a fetch on a caller's behalf reaches whatever this machine can
reach (its own network, cloud metadata), and the app has no fetcher guarded against that (Gradio's SSRF guard covers
only its own inputs). Files are decoded here once to refuse a bad one with a 400 naming it, and again by the engine
(a second decode of the same bytes, cheap beside a reply).

Runs in a worker thread (``read_messages`` blocks on decoding), so no other request's stream waits on it.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

import media
from api.chat.protocol import (AudioURLPart, ChatMessage, ImagePart, InputAudioPart, RefusalPart, TextPart,
                               VideoURLPart)
from backends.request import MediaKind, MediaPart, Part, Turn
from backends.request import TextPart as TurnText

MIME_TYPES: dict[MediaKind, dict[str, str]] = {
    "image": {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp",
              "image/gif": ".gif", "image/bmp": ".bmp", "image/tiff": ".tiff"},
    "audio": {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/vnd.wave": ".wav",
              "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/flac": ".flac", "audio/x-flac": ".flac",
              "audio/ogg": ".ogg", "audio/opus": ".opus", "audio/webm": ".webm", "audio/mp4": ".m4a",
              "audio/x-m4a": ".m4a", "audio/aac": ".aac"},
    "video": {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov", "video/x-matroska": ".mkv",
              "video/x-msvideo": ".avi", "video/x-m4v": ".m4v"},
}
"""The media types a data: URL may declare, and the file name extension ``media`` reads each kind by."""


class InputError(ValueError):
    """A message the engine can't be asked with: answered 400, ``param`` naming where it is."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message, self.param = message, param


@dataclass(frozen=True)
class Conversation:
    system_prompt: str
    turns: tuple[Turn, ...]


def read_messages(messages: list[ChatMessage], folder: str,
                  limits: media.MediaLimits = media.DEFAULT_LIMITS) -> Conversation:
    """The conversation, its files written to ``folder`` and checked; an ``InputError`` for the first problem.

    System and developer messages, wherever they stand, make the system prompt (in order). The last message is the
    user's: the reply answers it (an assistant message last would ask for a continuation, not served here).
    """
    system: list[str] = []
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if message.role in ("system", "developer"):
            system.append(_plain_text(message, where))
        elif message.role == "assistant":
            text = _plain_text(message, where)
            if not text and message.audio:
                raise InputError("An assistant message's audio id refers to nothing here (replies are not kept): "
                                 "send its transcript as the content.", f"{where}.audio")
            turns.append(Turn.assistant(text))
        else:
            turns.append(Turn("user", _user_parts(message, index, folder, limits)))
    if not turns or turns[-1].role != "user":
        raise InputError("The last message must be the user's: the reply answers it.", f"messages[{len(messages) - 1}]")
    return Conversation("\n\n".join(s for s in system if s), tuple(turns))


def _plain_text(message: ChatMessage, where: str) -> str:
    """A system or assistant message's text; media there is refused (the model takes media from the user)."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    texts = []
    for index, part in enumerate(message.content):
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, RefusalPart) and message.role == "assistant":
            texts.append(part.refusal)
        else:
            raise InputError(f"A {message.role} message holds text only, not {part.type}.",
                             f"{where}.content[{index}]")
    return "".join(texts)


def _user_parts(message: ChatMessage, number: int, folder: str, limits: media.MediaLimits) -> tuple[Part, ...]:
    where = f"messages[{number}]"
    if isinstance(message.content, str):
        if not message.content:
            raise InputError("The message is empty.", f"{where}.content")
        return (TurnText(message.content),)
    parts: list[Part] = []
    files = 0
    for index, part in enumerate(message.content or []):
        param = f"{where}.content[{index}]"
        if isinstance(part, TextPart):
            if part.text:
                parts.append(TurnText(part.text))
            continue
        if isinstance(part, RefusalPart):
            raise InputError("A user message holds text, image_url, input_audio, audio_url or video_url parts, not "
                             "refusal.", f"{param}.type")
        files += 1
        if files > limits.max_items_per_turn:
            raise InputError(f"A message may hold {limits.max_items_per_turn} files at most.", param)
        parts.append(_media_part(part, param, os.path.join(folder, f"{number}-{index}"), limits))
    if not parts:
        raise InputError("The message is empty.", f"{where}.content")
    return tuple(parts)


def _media_part(part, param: str, stem: str, limits: media.MediaLimits) -> MediaPart:
    if isinstance(part, InputAudioPart):
        suffix = "." + part.input_audio.format.lower().lstrip(".")
        if suffix not in media.EXTENSIONS["audio"]:
            raise InputError(f"input_audio.format {part.input_audio.format!r} is not one this server reads; it "
                             f"takes {', '.join(sorted(s[1:] for s in media.EXTENSIONS['audio']))}.",
                             f"{param}.input_audio.format")
        kind, raw, param = "audio", _base64(part.input_audio.data, f"{param}.input_audio.data"), \
            f"{param}.input_audio.data"
    else:
        kind, field = {ImagePart: ("image", "image_url"), AudioURLPart: ("audio", "audio_url"),
                       VideoURLPart: ("video", "video_url")}[type(part)]
        param = f"{param}.{field}.url"
        suffix, raw = _data_url(getattr(part, field).url, kind, param)
    path = stem + suffix
    with open(path, "wb") as file:
        file.write(raw)
    try:
        if kind == "image":
            media.load_image(path, limits)
        elif kind == "audio":
            media.load_audio(path, limits)
        else:
            media.check_video(path, limits)
    except media.MediaError as err:
        raise InputError(f"{err.problem} ({kind} at {param})", param) from None
    return MediaPart(kind, path)


def _data_url(url: str, kind: MediaKind, param: str) -> tuple[str, bytes]:
    """A base64 data: URL's bytes and the extension its media type names."""
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url[:12] else "this"
        raise InputError(f"This server fetches no {scheme} URLs: send the {kind} inline, as a base64 data: URL "
                         f"(data:{next(iter(MIME_TYPES[kind]))};base64,...).", param)
    head, comma, data = url.partition(",")
    mime, *options = head[5:].split(";")
    if not comma or "base64" not in options:
        raise InputError("A data: URL here is base64 (data:<type>;base64,<data>).", param)
    suffix = MIME_TYPES[kind].get(mime.strip().lower())
    if suffix is None:
        raise InputError(f"{mime or 'no media type'} is not a {kind} type this server reads; it takes "
                         f"{', '.join(MIME_TYPES[kind])}.", param)
    return suffix, _base64(data, param)


def _base64(data: str, param: str) -> bytes:
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("The file's base64 is broken.", param) from None
    if not raw:
        raise InputError("The file is empty.", param)
    return raw
