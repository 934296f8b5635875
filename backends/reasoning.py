"""Split a raw text stream into reasoning (inside <think>…</think>) and reply text.

Engines hand us text in arbitrary pieces, so a tag may arrive split across deltas:
the splitter holds back any tail that could still become a tag.
"""

from __future__ import annotations

from backends.events import ReasoningDelta, TextDelta

OPEN, CLOSE = "<think>", "</think>"


class ReasoningSplitter:
    """Feed raw text, get ``TextDelta``/``ReasoningDelta`` events.

    Example::

        splitter = ReasoningSplitter(starts_in_reasoning=True)   # Thinking checkpoint
        splitter.feed("weigh it up</thi") + splitter.feed("nk>Yes.") + splitter.flush()
        # -> [ReasoningDelta("weigh it up"), TextDelta("Yes.")]
    """

    def __init__(self, starts_in_reasoning: bool = False):
        self.in_reasoning = starts_in_reasoning
        self._pending = ""
        self._seen_text = False
        self._after_reasoning = False  # drop the blank lines that follow </think>

    def feed(self, text: str) -> list[TextDelta | ReasoningDelta]:
        self._pending += text
        events: list[TextDelta | ReasoningDelta] = []
        while True:
            tag = CLOSE if self.in_reasoning else OPEN
            index = self._pending.find(tag)
            if index < 0:
                break
            before, self._pending = self._pending[:index], self._pending[index + len(tag) :]
            # An opening tag only counts at the start of the reply; later it is just text.
            if not self.in_reasoning and (self._seen_text or before.strip()):
                events += self._emit(before + tag)
                continue
            events += self._emit(before)
            self.in_reasoning = not self.in_reasoning
            self._after_reasoning = not self.in_reasoning
        keep = _partial_tag_length(self._pending, CLOSE if self.in_reasoning else OPEN)
        ready, self._pending = self._pending[: len(self._pending) - keep], self._pending[len(self._pending) - keep :]
        return events + self._emit(ready)

    def flush(self) -> list[TextDelta | ReasoningDelta]:
        rest, self._pending = self._pending, ""
        return self._emit(rest)

    def _emit(self, text: str) -> list[TextDelta | ReasoningDelta]:
        if not text:
            return []
        if self.in_reasoning:
            return [ReasoningDelta(text)]
        if self._after_reasoning:
            text = text.lstrip("\n")
            if not text:
                return []
            self._after_reasoning = False
        self._seen_text = self._seen_text or bool(text.strip())
        return [TextDelta(text)]


def _partial_tag_length(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
