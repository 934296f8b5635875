"""How one side of an evaluation answers: its engine and its request's settings, and the bounds they keep.

The Evaluate tab builds its sliders and fields from ``RANGES`` and ``ENGINES``, and every set-up that doesn't
come from those controls (an imported export, a tool call) is checked against the same bounds by
``check_setup``: an import can't ask for more than the tab offers (a reply a million tokens long, holding the
engine from everyone else).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any, Mapping

from backends.request import ChatRequest, MediaPart, Sampling, TextPart, Turn
from media import kind_of
from messages import Message
from ui.evaluate.sheet import MAX_FIELD_CHARS, Prompt


@dataclass(frozen=True)
class Range:
    """A number the tab offers (a slider's or a field's bounds)."""

    low: float
    high: float
    step: float = 1
    whole: bool = False


RANGES = {
    "temperature": Range(0.0, 2.0, 0.05),
    "top_p": Range(0.05, 1.0, 0.05),
    "top_k": Range(1, 200, whole=True),
    "max_new_tokens": Range(1, 8192, whole=True),
    "seed": Range(0, 2**32 - 1, whole=True),
}
"""The seed's bounds are NumPy's (``transformers.set_seed`` seeds it); the tab's -1 means a random one (None)."""
ENGINES = ("app", "compare")
"""The app's own engine, and the server of ``--compare-api-base`` (where the app runs with one)."""
MAX_SPEAKER_CHARS = 100


@dataclass(frozen=True)
class Setup:
    """How one side answers: which engine ("app" or "compare") and the request's settings."""

    engine: str = "app"
    speaker: str | None = None
    system_prompt: str = ""
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    max_new_tokens: int = 1024
    seed: int | None = None
    speech: bool = True

    def request(self, prompt: Prompt, can_speak: bool) -> ChatRequest:
        parts = tuple(MediaPart(kind_of(path), path) for path in prompt.paths)
        if prompt.text:
            parts += (TextPart(prompt.text),)
        return ChatRequest(
            turns=(Turn("user", parts),), system_prompt=prompt.system_prompt or self.system_prompt,
            speaker=self.speaker or None, return_audio=self.speech and can_speak,
            sampling=Sampling(self.temperature, self.top_p, self.top_k, self.max_new_tokens, self.seed))


class SetupError(ValueError):
    """A set-up value the tab doesn't offer; ``msg`` names the field and what it takes."""

    def __init__(self, msg: Message):
        super().__init__(str(msg))
        self.msg = msg


def check_setup(values: Any, name: str) -> Setup:
    """The set-up ``values`` (``Setup``'s fields, by name; others are ignored) describe, if every value is one the
    tab offers; else ``SetupError`` naming the field as ``name.field``."""
    if not isinstance(values, Mapping):
        raise _error(name, values, "setup.wrong_type", expected=Message("setup.type.object"))
    known = {f.name: f.default for f in fields(Setup)}
    checked = {}
    for key, value in values.items():
        if key not in known:
            continue
        where = f"{name}.{key}"
        if key in RANGES:
            checked[key] = _number(where, value, RANGES[key], optional=key == "seed")
        elif key == "engine":
            if value not in ENGINES:
                raise _error(where, value, "setup.not_a_choice", choices=", ".join(ENGINES))
            checked[key] = value
        elif key == "speech":
            if not isinstance(value, bool):
                raise _error(where, value, "setup.wrong_type", expected=Message("setup.type.bool"))
            checked[key] = value
        else:  # speaker, system_prompt: text
            limit = MAX_SPEAKER_CHARS if key == "speaker" else MAX_FIELD_CHARS
            if value is not None and not isinstance(value, str):
                raise _error(where, value, "setup.wrong_type", expected=Message("setup.type.text"))
            if value is not None and len(value) > limit:
                raise _error(where, value, "setup.too_long", limit=limit)
            checked[key] = value or (None if key == "speaker" else "")
    return Setup(**checked)


def unavailable(setup: Setup, side: str, engines: Mapping[str, Any]) -> Message | None:
    """Why this server can't answer with ``setup`` (an engine or a voice it doesn't have), or None. ``engines``:
    name → ``Backend``."""
    if setup.engine not in engines:
        return Message("setup.no_engine", {"side": side, "engine": setup.engine})
    speakers = engines[setup.engine].info.speakers
    if setup.speaker and speakers and setup.speaker not in speakers:
        return Message("setup.no_speaker", {"side": side, "speaker": setup.speaker, "speakers": ", ".join(speakers)})
    return None


def _number(where: str, value: Any, bounds: Range, optional: bool) -> float | int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(where, value, "setup.wrong_type",
                     expected=Message("setup.type.whole" if bounds.whole else "setup.type.number"))
    if not bounds.low <= value <= bounds.high:  # NaN too
        raise _error(where, value, "setup.out_of_range", low=_plain(bounds.low), high=_plain(bounds.high))
    if bounds.whole:
        if value != int(value):
            raise _error(where, value, "setup.wrong_type", expected=Message("setup.type.whole"))
        return int(value)
    return float(value)


def _error(where: str, value: Any, code: str, **values) -> SetupError:
    return SetupError(Message(code, {"field": where, "value": shown(value), **values}))


def shown(value: Any) -> str:
    """A value as the file wrote it, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


def _plain(number: float) -> str:
    return f"{number:g}" if number < 10**6 else str(int(number))
