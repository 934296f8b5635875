"""What the user heard of a spoken reply, as text: the conversation keeps only that.

The engine's speech carries no word timings, so this is an estimate, bounded two ways: speech can't say text
before it is written (``spoken_chars``: what was written when the last audio came), and it can't say more than a
fast speaker would in the time played (``MAX_CHARS_PER_S``). Within that, the speech is taken to cover the text
evenly. The cut ends at the last whole word, or at a character in scripts written without spaces.
"""

from __future__ import annotations

import unicodedata

MAX_CHARS_PER_S = {"narrow": 20.0, "wide": 7.0}
"""Faster than speech gets: about 15 characters a second in English, 5 Chinese characters (wide) a second."""


def wide(char: str) -> bool:
    """A character of a script written without spaces between words (Chinese, Japanese: East Asian wide)."""
    return unicodedata.east_asian_width(char) in ("W", "F")


def speakable(text: str, seconds: float) -> int:
    """How many of ``text``'s first characters a fast speaker could say in ``seconds``."""
    budget = seconds
    for count, char in enumerate(text):
        budget -= 1 / MAX_CHARS_PER_S["wide" if wide(char) else "narrow"]
        if budget < 0:
            return count
    return len(text)


def heard_text(text: str, spoken_chars: int, fraction: float, played_s: float | None = None) -> str:
    """The part of a reply's ``text`` that ``fraction`` of its speech said, its speech covering the first
    ``spoken_chars`` characters; ``played_s``: how long the part played lasted (bounds it by ``speakable``)."""
    end = round(min(spoken_chars, len(text)) * fraction)
    if played_s is not None:
        end = min(end, speakable(text, played_s))
    if end >= len(text):
        return text
    cut = text[:end]
    left, right = (text[end - 1], text[end]) if end else (" ", " ")
    if left.isalnum() and right.isalnum() and not wide(left) and not wide(right) and " " in cut:
        cut = cut[:cut.rfind(" ")]  # a word cut in half is dropped
    return cut.rstrip()
