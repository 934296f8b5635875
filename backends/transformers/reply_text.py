"""A reply's token ids → the text events it streams, and the numbers it ends with (both engines' replies)."""

from __future__ import annotations

import threading
import time
from typing import Callable

from backends.events import Event, Metrics
from backends.reasoning import ReasoningSplitter
from backends.transformers.incremental_text import IncrementalDecoder
from backends.transformers.speech import SpeechRun, TextFeed


class TextStreamer:
    """transformers streamer contract (``put``/``end``): decodes new tokens into events."""

    def __init__(self, tokenizer, splitter: ReasoningSplitter, emit: Callable[[Event], None],
                 feed: TextFeed | None = None):
        self.splitter, self.emit, self.feed = splitter, emit, feed
        self.decoder = IncrementalDecoder(tokenizer)
        self.prompt_seen = False
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None

    @property
    def tokens(self) -> int:
        return len(self.decoder.ids)

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        now = time.perf_counter()
        self.first_token_at = self.first_token_at or now
        self.last_token_at = now
        new_ids = value.reshape(-1).tolist()
        if self.feed is not None:
            self.feed.extend(new_ids)
        delta = self.decoder.add(new_ids)
        for event in self.splitter.feed(delta) if delta else ():
            self.emit(event)

    def end(self) -> None:
        """Nothing to do: SpeechRun.running() finishes the talker's feed when generate() returns."""

    def flush(self) -> None:
        """Emit what put() held back (an incomplete character, a possible tag) once generation ended."""
        for event in self.splitter.feed(self.decoder.flush()) + self.splitter.flush():
            self.emit(event)


def reply_metrics(streamer: TextStreamer, started: float, prompt_tokens: int, speech: SpeechRun | None) -> Metrics:
    """A reply's ``Metrics`` event, from its text streamer and its speech (None: it didn't speak)."""
    ttft = None if streamer.first_token_at is None else streamer.first_token_at - started
    decode_s = (streamer.last_token_at or 0) - (streamer.first_token_at or 0)
    speech_metrics = speech.metrics() if speech else {}
    return Metrics(
        time_to_first_token_s=ttft,
        prompt_tokens=prompt_tokens,
        output_tokens=streamer.tokens,
        tokens_per_s=(streamer.tokens - 1) / decode_s if streamer.tokens > 1 and decode_s > 0 else None,
        total_s=time.perf_counter() - started,
        **speech_metrics,
    )


def finish_reason(streamer: TextStreamer, max_new_tokens: int, stop: threading.Event) -> str:
    if stop.is_set():
        return "cancelled"
    return "length" if streamer.tokens >= max_new_tokens else "stop"
