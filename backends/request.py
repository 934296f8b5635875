"""What the UI (or an API caller) asks a backend for.

A conversation is a list of turns whose parts are text or media *files* (paths on
this machine). Decoding the files is the backend's job, through ``media``,
so a remote backend can send the original bytes and a local one can decode them once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal, Union

from media.probe import MediaKind

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True)
class MediaPart:
    """An image, audio or video file; ``path`` is a local file the backend may read."""

    kind: MediaKind
    path: str
    type: Literal["media"] = "media"


Part = Union[TextPart, MediaPart]


@dataclass(frozen=True)
class Turn:
    """One message. Assistant turns may hold their spoken reply as an audio part:
    backends drop assistant audio (the model conditions on its own *text*)."""

    role: Role
    parts: tuple[Part, ...]

    @classmethod
    def user(cls, *parts: Part | str) -> Turn:
        return cls("user", tuple(TextPart(p) if isinstance(p, str) else p for p in parts))

    @classmethod
    def assistant(cls, text: str, *extra: Part) -> Turn:
        return cls("assistant", (TextPart(text), *extra))

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def media(self) -> tuple[MediaPart, ...]:
        return tuple(p for p in self.parts if isinstance(p, MediaPart))


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; ``temperature == 0`` means greedy."""

    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    max_new_tokens: int = 1024
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass(frozen=True)
class ChatRequest:
    """One reply to generate for ``turns`` (the last turn is the user's).

    Example::

        request = ChatRequest(turns=(Turn.user("Describe this.", MediaPart("image", "cat.png")),),
                              speaker="ethan", return_audio=True)
        async for event in backend.stream(request): ...
    """

    turns: tuple[Turn, ...]
    system_prompt: str = ""
    speaker: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    return_audio: bool = True
    use_audio_in_video: bool = True
    """Also listen to a video's sound track; keep it the same for every turn of a conversation."""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


__all__ = ["ChatRequest", "MediaKind", "MediaPart", "Part", "Role", "Sampling", "TextPart", "Turn"]
