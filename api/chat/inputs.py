"""Chat messages → the conversation the engine takes (``backends.request.Turn``): text as it is, every medium a file
in the request's own folder, checked by ``media`` against the app's limits before the engine is asked.

Media come inline only: ``image_url``, ``audio_url`` and ``video_url`` as base64 ``data:`` URLs, ``input_audio`` as
base64 with its format, read by ``api.media_urls`` (the types the realtime API takes too; no URL is fetched, and why).
Files are decoded here once to refuse a bad one with a 400 naming it, and again by the engine (a second decode of the
same bytes, cheap beside a reply).

Runs in a worker thread (``read_messages`` blocks on decoding), so no other request's stream waits on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import media
from api.chat.protocol import (AudioURLPart, ChatMessage, ImagePart, InputAudioPart, RefusalPart, TextPart,
                               VideoURLPart)
from api.media_urls import MediaURLError, decode_base64, read_data_url
from backends.request import MediaPart, Part, Turn
from backends.request import TextPart as TurnText


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


def _data_url(url: str, kind: media.MediaKind, param: str) -> tuple[str, bytes]:
    try:
        return read_data_url(url, kind)
    except MediaURLError as err:
        raise InputError(str(err), param) from None


def _base64(data: str, param: str) -> bytes:
    try:
        return decode_base64(data)
    except MediaURLError as err:
        raise InputError(str(err), param) from None
