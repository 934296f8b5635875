"""Run-time messages as codes with values, rendered in English or Chinese from one table.

Engines, media checks and the UI say *which* message they mean (a code from ``messages.table``)
and fill in its values; the words live only in the table, so rewording a sentence can't lose
its translation. A value is either text that stays as it is (a file name, an exception's text,
a server's reply) or another ``Message``, rendered in the same language.

Example::

    note = Message("media.file_problem", {"file": "clip.wav", "problem": Message("media.empty")})
    str(note)         # 'clip.wav: the file is empty'
    note.text("zh")   # 'clip.wav：文件是空的'

This package imports nothing of the app's, so backends, media and ui can all use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from messages.table import TABLE

Language = Literal["en", "zh"]
_COLUMN = {"en": 0, "zh": 1}


@dataclass(frozen=True)
class Message:
    """One message of ``TABLE`` with the values of its placeholders."""

    code: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.code not in TABLE:
            raise KeyError(f"no message {self.code!r} in messages.table")

    def text(self, language: Language = "en") -> str:
        template = TABLE[self.code][_COLUMN[language]]
        return template.format(**{name: _render(value, language) for name, value in self.values.items()})

    def __str__(self) -> str:
        return self.text("en")

    def __hash__(self) -> int:  # values is a dict: hash what it holds
        return hash((self.code, tuple(sorted((k, str(v)) for k, v in self.values.items()))))


def _render(value: Any, language: Language) -> str:
    return value.text(language) if isinstance(value, Message) else str(value)


def verbatim(text: str) -> Message:
    """Words that are not ours (an engine's, a server's), shown as they are in every language."""
    return Message("verbatim", {"text": text})


def joined(parts: Iterable[Message]) -> Message:
    """Several messages as one, separated by "; " (e.g. every error of a reply)."""
    parts = list(parts)
    if not parts:
        return verbatim("")
    message = parts[-1]
    for part in reversed(parts[:-1]):
        message = Message("joined", {"first": part, "rest": message})
    return message


__all__ = ["Language", "Message", "TABLE", "joined", "verbatim"]
