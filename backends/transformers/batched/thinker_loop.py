"""The batched engine's thinker thread (its talker thread: ``talker_loop``).

It takes replies from a queue, runs new replies' prompt passes between two batched steps (one pass per step while
others decode, so a long queue of prompts can't stall the replies already streaming by more than one pass each
step; the replies waiting together share one packed pass of at most ``PACK_TOKENS`` prompt tokens, which reads the
weights once for all of them), and streams each step's tokens to their replies.

Per row it does what the one-reply loop (``ThinkerDecoder.generate``) does, in the same order, so a row's tokens
are those it would get alone (the same values on the CPU, where the tests compare them; on a GPU, products of
other shapes may round differently).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch

from backends.transformers.batched.thinker import ThinkerBatch, ThinkerRow
from backends.transformers.cuda_graphs import PACK_MAX
from backends.transformers.thinker_decoder import ThinkerSampling

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.05
"""How long an idle loop sleeps before it looks again (new work wakes it at once)."""

PACK_TOKENS = 4096
"""The most prompt tokens one packed prompt pass takes (``ThinkerLoop``)."""


@dataclass
class ThinkerJob:
    """One reply for the thinker's loop. ``streamer``: put()s the prompt ids, then each token (as generate()'s
    streamers get them); ``finished(reason)`` once it is over: "stop", "length", "cancelled" or "error"."""

    inputs: dict
    sampling: ThinkerSampling
    streamer: object
    stop: threading.Event
    finished: Callable[[str], None]
    prompt_states: dict | None = None
    row: ThinkerRow | None = None
    admitted_at: float | None = None
    delivered: int = 0
    """Tokens streamed so far (a step may already run past the last one)."""
    alone: Callable[[], None] | None = None
    """A reply too long for a slot: run by calling this on the loop's thread, in its turn, once the replies
    already decoding or speaking are done (the one-row decoders, the encoders' graphs and the thinker's rope
    offsets are shared with the batch's prompt passes). Replies that arrive after it wait for it, so no one
    waits longer than the work of the replies ahead of them; it is not refused, since the one-row caches can
    hold what a slot can't."""


class ThinkerLoop:
    """Example::

        loop = ThinkerLoop(ThinkerBatch(...))
        loop.submit(ThinkerJob(inputs, sampling, streamer, stop, finished=print))
    """

    def __init__(self, batch: ThinkerBatch, progressed: Callable[[], None] = lambda: None,
                 others_idle: Callable[[], bool] = lambda: True, pack_tokens: int | None = None):
        """``others_idle()``: whether the talker's loop speaks no reply (a reply run alone waits for it);
        ``pack_tokens``: the most prompt tokens one packed prompt pass takes (how long the replies already
        decoding may wait for newcomers' prompts, between two steps); None: ``PACK_TOKENS`` on a GPU, where a
        pass's time is mostly reading the weights, and 1 (no packing) on the CPU, where it grows with the
        tokens, so that packing only makes the first prompts wait for the others (BENCHMARKS.md)."""
        self.batch, self.progressed, self.others_idle = batch, progressed, others_idle
        if pack_tokens is None:
            pack_tokens = PACK_TOKENS if batch.token_in.is_cuda else 1
        # A packed pass as long as the longest captured one at most: a captured pass then serves it.
        self.pack_tokens = min(pack_tokens, max(batch.prompts.prefill_lengths, default=batch.prompts.max_tokens))
        self._waiting: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list[ThinkerJob] = []
        self._jobs: dict[int, ThinkerJob] = {}
        self._in_flight = None
        """The step launched last, whose tokens are not streamed yet."""
        self.died: str | None = None
        self.max_rows = 0
        """The most replies decoded together so far."""
        self._thread = threading.Thread(target=self._serve, daemon=True, name="omni-thinker-batch")
        self._thread.start()

    def submit(self, job: ThinkerJob) -> None:
        self._waiting.put(job)

    @property
    def alive(self) -> bool:
        return self.died is None and self._thread.is_alive()

    def stop(self) -> None:
        self._waiting.put(None)

    def _serve(self) -> None:
        try:
            while self._take_new(block=not self._jobs):
                self._admit()
                self._step()
        except BaseException as err:
            self.died = f"{err.__class__.__name__}: {err}"
            log.exception("the thinker's batch loop died")
            for job in [*self._jobs.values(), *self._pending]:
                job.finished("error")

    def _take_new(self, block: bool) -> bool:
        """Move submitted jobs to the pending list; False once stop() was called."""
        try:
            job = self._waiting.get(timeout=IDLE_WAIT_S) if block else self._waiting.get_nowait()
        except queue.Empty:
            return True
        while True:
            if job is None:
                return False
            self._pending.append(job)
            try:
                job = self._waiting.get_nowait()
            except queue.Empty:
                return True

    def _admit(self) -> None:
        """Prompt passes for waiting replies between two steps: while fewer than two replies decode, passes
        until two do; else one pass per step. The replies waiting together share one packed pass, up to
        ``pack_tokens`` of prompt."""
        while self._pending and self.batch.free:
            job = self._pending[0]
            if job.alone is not None and not job.stop.is_set():
                if self._jobs or not self.others_idle():
                    return  # the rows busy now finish first; nobody joins meanwhile
                self._pending.pop(0)
                self._run_alone(job)
                continue
            if job.stop.is_set():
                self._pending.pop(0)
                job.finished("cancelled")
                continue
            group = self._packable()
            del self._pending[:len(group)]
            try:
                if len(group) > 1:
                    admitted = self.batch.admit_packed([(j.inputs, j.sampling, j.prompt_states) for j in group])
                else:
                    alone = not self._jobs and not self._pending
                    admitted = [self.batch.admit(job.inputs, job.sampling, job.prompt_states, alone)]
            except Exception:
                log.exception("a prompt pass failed")
                for failed in group:
                    failed.finished("error")
                continue
            for job, result in zip(group, admitted):
                if isinstance(result, Exception):
                    job.finished("error")
                    continue
                row, first = result
                job.row, job.admitted_at = row, time.perf_counter()
                self._jobs[job.row.slot] = job
                self.max_rows = max(self.max_rows, len(self._jobs))
                job.streamer.put(job.inputs["input_ids"].cpu())
                self._deliver(job, first)
            self.progressed()
            if len(self._jobs) > len(group):
                break

    def _packable(self) -> list[ThinkerJob]:
        """The waiting replies at the head of the queue that one packed prompt pass takes (at least the first):
        as many as there are free slots, up to ``PACK_MAX`` and ``pack_tokens`` of prompt in all."""
        group, tokens = [], 0
        for job in self._pending[:min(self.batch.free, PACK_MAX)]:
            length = int(job.inputs["input_ids"].shape[1])
            if job.alone is not None or job.stop.is_set() or (group and tokens + length > self.pack_tokens):
                break
            group.append(job)
            tokens += length
        return group

    def _run_alone(self, job: ThinkerJob) -> None:
        try:
            job.alone()
        except Exception:
            log.exception("a reply run alone failed")
            job.finished("error")

    def _step(self) -> None:
        """Launch the next step, then stream the tokens of the one before (the GPU computes meanwhile). A row
        that ended at the earlier step was in the later one too: its token there is dropped."""
        if not self._jobs:
            self._in_flight = None
            return
        launched, earlier = self.batch.launch(), self._in_flight
        self._in_flight = launched
        if earlier is not None:
            for slot, token in earlier.read().items():
                job = self._jobs.get(slot)
                if job is not None and job.row is earlier.rows[slot]:
                    self._deliver(job, token)
        self.progressed()

    def _deliver(self, job: ThinkerJob, token: int) -> None:
        """A row's token to its reply; the row leaves at its end, its length limit or Stop."""
        try:
            job.streamer.put(torch.tensor([token]))
        except Exception:
            log.exception("streaming a token failed")
            return self._leave(job, "error")
        job.delivered += 1
        sampling = job.sampling
        if token == sampling.eos_token_id:
            self._leave(job, "stop")
        elif job.delivered >= sampling.max_new_tokens:
            self._leave(job, "length")
        elif job.stop.is_set():
            self._leave(job, "cancelled")

    def _leave(self, job: ThinkerJob, reason: str) -> None:
        self.batch.release(job.row)
        del self._jobs[job.row.slot]
        job.finished(reason)
