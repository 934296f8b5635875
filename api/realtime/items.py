"""A realtime conversation's items, each held twice: what the model is given of it (a ``Turn``, or system text) and
what the client is shown of it (the SDK's item, as ``conversation.item.added`` echoed it).

``conversation.item.retrieve`` answers with the item in full (``retrieved``): the user's audio and images, which
the echo leaves out, are read back from the files the model is given, so the client sees what the model hears
(the audio at 16 kHz resampled to the session's input rate, not the bytes it sent). A spoken reply's own audio is
not kept (minutes of it per reply; the client has it), so an assistant item holds its transcript only: after
``conversation.item.truncate``, just the text the part played said, as the model is then given it.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import soundfile
from openai.types.realtime import ConversationItem, RealtimeConversationItemUserMessage
from openai.types.realtime.realtime_conversation_item_assistant_message import Content as AssistantContent

import media
from api.media_urls import MIME_TYPES
from api.realtime.protocol import encode_pcm16
from backends.request import Turn

IMAGE_TYPES = {suffix: mime for mime, suffix in reversed(MIME_TYPES["image"].items())}
"""A stored image's media type by its file's suffix (the first type naming a suffix: ``.jpg`` is image/jpeg)."""


@dataclass
class Item:
    """One conversation item: a user or assistant turn, or system text (added to the instructions)."""

    id: str
    view: ConversationItem
    """The item as the client was shown it, without audio or images (those are ``files``)."""
    turn: Turn | None = None
    system_text: str = ""
    files: tuple[str, ...] = ()
    """A user item's audio and images, in the order of its content parts."""
    audio_ms: int = 0
    """An assistant reply's speech, all of it the client was sent."""
    spoken_chars: int = 0
    """How much of its text that speech covers (``Response.spoken_chars``; all of it once the reply completed)."""

    def truncate(self, heard: str, audio_end_ms: int) -> None:
        """Only ``audio_end_ms`` of this spoken reply was played, saying ``heard``: both the model and the client
        keep only that (nothing heard: nothing said, in the model's history)."""
        self.turn = Turn.assistant(heard) if heard else None
        self.audio_ms, self.spoken_chars = audio_end_ms, len(heard)
        self.view = self.view.model_copy(update={"content": [AssistantContent(type="output_audio",
                                                                                transcript=heard)]})


def retrieved(item: Item, input_rate: int) -> ConversationItem:
    """``item`` in full: a user item's audio as base64 PCM16 at ``input_rate`` and its images as data: URLs, read
    from its files (blocking: run it in a thread)."""
    view = item.view
    if not isinstance(view, RealtimeConversationItemUserMessage):
        return view
    files, content = iter(item.files), []
    for part in view.content:
        if part.type == "input_audio":
            part = part.model_copy(update={"audio": _pcm16(next(files), input_rate)})
        elif part.type == "input_image":
            part = part.model_copy(update={"image_url": _data_url(next(files))})
        content.append(part)
    return view.model_copy(update={"content": content})


def _pcm16(path: str, rate: int) -> str:
    samples, file_rate = soundfile.read(path, dtype="float32")
    return encode_pcm16(media.resample(samples, file_rate, rate))


def _data_url(path: str) -> str:
    mime = IMAGE_TYPES[os.path.splitext(path)[1]]
    with open(path, "rb") as file:
        return f"data:{mime};base64,{base64.b64encode(file.read()).decode('ascii')}"
