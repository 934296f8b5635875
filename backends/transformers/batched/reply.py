"""One reply of the batched engine: its thinker job and talker row made from the reply's inputs, and its end.

The reply's text goes out as the thinker's loop streams its tokens; its speech as the talker's loop makes it.
It ends, with its Metrics and Done, once both loops are through with it (the thinker's end finishes the
talker's text feed, and the talker speaks what is left).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import torch

from backends.events import Done, Error, Event
from backends.reasoning import ReasoningSplitter
from backends.request import ChatRequest
from backends.transformers.batched.engine import Prepared
from backends.transformers.batched.talker_loop import SpeakingRow
from backends.transformers.batched.thinker_loop import ThinkerJob
from backends.transformers.reply_text import TextStreamer, finish_reason, reply_metrics
from backends.transformers.speech import SpeechRun, Talker, TextFeed
from backends.transformers.thinker_decoder import ThinkerSampling
from messages import Message


class BatchedReply:
    """Example::

        reply = BatchedReply(request, emit, stop, started, prompt_tokens, tokenizer, reasons, speech)
        prepared = reply.prepared(inputs, eos_token_id, device)   # for BatchedEngine.stream
    """

    def __init__(self, request: ChatRequest, emit: Callable[[Event], None], stop: threading.Event, started: float,
                 prompt_tokens: int, tokenizer, reasons: bool, speech: SpeechRun | None):
        self.request, self.emit, self.stop, self.started = request, emit, stop, started
        self.prompt_tokens, self.speech = prompt_tokens, speech
        self.streamer = TextStreamer(tokenizer, ReasoningSplitter(reasons), emit, speech.feed if speech else None)
        self._lock = threading.Lock()
        self._open = 2 if speech is not None else 1
        self._failed = False
        self._row: SpeakingRow | None = None

    def prepared(self, inputs: dict, eos_token_id: int, device: torch.device,
                 alone: Callable[[], None] | None = None) -> Prepared:
        """The thinker job (and talker row) for the loops. ``alone``: run the reply outside the batch instead
        (it doesn't fit a slot)."""
        sampling = self.request.sampling
        generator = None
        if sampling.seed is not None and not sampling.greedy:  # its own: the talker draws beside it
            generator = torch.Generator(device).manual_seed(sampling.seed)
        settings = ThinkerSampling(sampling.temperature, sampling.top_k, sampling.top_p, sampling.max_new_tokens,
                                   eos_token_id, generator)
        prompt_states: dict | None = {} if self.speech is not None else None
        job = ThinkerJob(inputs, settings, self.streamer, self.stop, self._thinker_finished, prompt_states,
                         alone=alone)
        row = None
        if self.speech is not None and alone is None:
            speech = self.speech
            row = self._row = SpeakingRow(Talker(speech.setup, speech.feed, prompt_states, self.stop),
                                          speech.vocoder, self._send, self._talker_finished, self._talker_failed)
        return Prepared(job, row)

    def _send(self, wav) -> None:
        speech = self.speech
        if speech.talker_started is None:
            speech.talker_started = time.perf_counter()
        speech.send(wav)

    def _thinker_finished(self, reason: str) -> None:
        self._failed = reason == "error"
        try:
            self.streamer.flush()
        finally:
            if self.speech is not None:
                self.speech.feed.finish()
            self._done_one()

    def _talker_failed(self, err: Exception) -> None:
        if not self.stop.is_set():  # speech is extra: the text reply goes on without it
            self.emit(Error(Message("speech.failed_reply_kept", {"cause": f"{err.__class__.__name__}: {err}"}),
                            "speech"))

    def _talker_finished(self) -> None:
        self.speech.finished_at = time.perf_counter()
        self.speech.frames = self._row.frames_made
        self._done_one()

    def _done_one(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open:
                return
        if self._failed:
            self.emit(Error(Message("engine.generation_failed", {"cause": "the batched engine failed"}),
                            "generation"))
            return self.emit(Done("error"))
        self.emit(reply_metrics(self.streamer, self.started, self.prompt_tokens, self.speech))
        self.emit(Done(finish_reason(self.streamer, self.request.sampling.max_new_tokens, self.stop)))


def speaking_feed() -> TextFeed:
    """A batched reply's text feed: the thinker's loop never waits on it (the one-reply path's feed pauses the
    thinker while the talker starts, which here would pause every reply)."""
    return TextFeed(yields_to_talker=False)
