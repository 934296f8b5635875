"""A text reply as an engine streams it: text pieces with their token ids (the talker reads the ids)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from backends.events import Event, Metrics
from backends.reasoning import ReasoningSplitter


@dataclass
class TokenDelta:
    """What the engine adds to a reply in one step."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str | None


class TextReply:
    """Token deltas → text/reasoning events, with the timings of the reply."""

    def __init__(self, splitter: ReasoningSplitter):
        self.splitter = splitter
        self.token_ids: list[int] = []
        self.text_seen = False
        self.prompt_tokens = 0
        self.finish_reason: str | None = None
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None

    def add(self, delta: TokenDelta) -> list[Event]:
        if delta.token_ids:
            now = time.perf_counter()
            self.first_token_at = self.first_token_at or now
            self.last_token_at = now
        self.text_seen = self.text_seen or bool(delta.text)
        self.token_ids.extend(delta.token_ids)
        self.prompt_tokens = self.prompt_tokens or delta.prompt_tokens
        self.finish_reason = delta.finish_reason or self.finish_reason
        return self.splitter.feed(delta.text) if delta.text else []

    def flush(self) -> list[Event]:
        return self.splitter.flush()

    def metrics(self, started: float, **speech) -> Metrics:
        tokens = len(self.token_ids)
        decode_s = (self.last_token_at or 0) - (self.first_token_at or 0)
        return Metrics(
            time_to_first_token_s=None if self.first_token_at is None else self.first_token_at - started,
            prompt_tokens=self.prompt_tokens,
            output_tokens=tokens,
            tokens_per_s=(tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else None,
            total_s=time.perf_counter() - started,
            **speech,
        )
