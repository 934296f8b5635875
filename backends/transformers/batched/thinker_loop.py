"""The two threads of the batched engine: the thinker's loop and the talker's loop.

The thinker's loop takes replies from a queue, runs new replies' prompt passes between two batched steps (one
pass per step while others decode, so a long queue of prompts can't stall the replies already streaming by more
than one pass each step; the replies waiting together share one packed pass of at most ``PACK_TOKENS`` prompt
tokens, which reads the weights once for all of them), and streams each step's tokens to their replies. The
talker's loop speaks every reply that asked for speech: a reply joins once its first spoken token is known,
each tick samples a first code for every row that has logits, predicts all their frames at once, and steps
every row whose next text is known (a row waiting for the thinker sits the step out). Each thread runs on its
own CUDA stream, as the one-reply engine's two threads do.

Per row, both loops do what the one-reply loops (ThinkerDecoder.generate, Talker.frames) do, in the same
order, so a row's tokens, codes and noise are those it would get alone (the same values on the CPU, where the
tests compare them; on a GPU, products of other shapes may round differently).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from backends.transformers.batched.talker import TalkerBatch
from backends.transformers.batched.thinker import ThinkerBatch, ThinkerRow
from backends.transformers.cuda_graphs import PACK_MAX, compute_device
from backends.transformers.speech import Talker, TextFeed, talker_stream
from backends.transformers.thinker_decoder import ThinkerSampling
from backends.transformers.vocoder import StreamingVocoder

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.05
"""How long an idle loop sleeps before it looks again (new work wakes it at once)."""

PACK_TOKENS = 4096
"""The most prompt tokens one packed prompt pass takes (``ThinkerLoop``)."""

ADMIT_TOKENS = 2048
"""The most prompt tokens whose talker prompts one tick of the talker's loop runs (``TalkerLoop``)."""


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


@dataclass
class SpeakingRow:
    """One reply's speech in the talker's loop: its ``Talker`` (prompt, text, sampling, generator), its
    vocoder, and where it is."""

    talker: Talker
    vocoder: StreamingVocoder
    send: Callable[[torch.Tensor | None], None]
    """Gets each chunk of audio (None: nothing new)."""
    finished: Callable[[], None]
    failed: Callable[[Exception], None] = lambda err: None
    """Told why the row's speech stopped early (before ``finished``): the reply says so and keeps its text."""
    slot: int | None = None
    frame: int = 0
    tts: tuple = ()
    text_ended: bool = False
    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    token: torch.Tensor | None = None
    frames_made: int = 0
    prefilled_at: float | None = None
    extra: dict = field(default_factory=dict)


class TalkerLoop:
    """Example::

        loop = TalkerLoop(TalkerBatch(...))
        loop.add(SpeakingRow(Talker(setup, feed, captured, stop), vocoder, send, finished))
    """

    def __init__(self, batch: TalkerBatch, progressed: Callable[[], None] = lambda: None,
                 admit_tokens: int = ADMIT_TOKENS, pack: bool | None = None):
        """``admit_tokens``: the most prompt tokens (the thinker's prompts, which the talker's follow) whose talker
        prompts one tick runs; ``pack``: in one pass (None: on a GPU, as ``ThinkerLoop``'s ``pack_tokens``)."""
        self.batch, self.progressed, self.admit_tokens = batch, progressed, admit_tokens
        self.pack = batch.codec_in.is_cuda if pack is None else pack
        self.admitted: collections.deque[int] = collections.deque(maxlen=64)
        """The prompt tokens admitted in each of the last ticks that admitted any."""
        self._admitting = 0
        """Rows between the waiting list and the batch (their prompts running): the loop isn't idle."""
        self._lock = threading.Lock()
        """Held while rows move between the new queue, the waiting list, admission and the batch, so that
        ``idle`` and ``speaking``, read from other threads, never see a row in none of them."""
        self.wake = threading.Event()
        """Set by anything that may let a row go on: a new row, new text (TextFeed.listener), Stop."""
        self._new: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: list[SpeakingRow] = []
        self._rows: dict[int, SpeakingRow] = {}
        self._stopping = False
        self.died: str | None = None
        self.max_rows = 0
        self._thread = threading.Thread(target=self._serve, daemon=True, name="omni-talker-batch")
        self._thread.start()

    def add(self, row: SpeakingRow) -> None:
        row.talker.feed.listener = self.wake
        self._new.put(row)
        self.wake.set()

    @property
    def alive(self) -> bool:
        return self.died is None and self._thread.is_alive()

    @property
    def idle(self) -> bool:
        """No reply speaks, is being admitted or waits to."""
        with self._lock:
            return not self._rows and not self._admitting and not self._waiting and self._new.empty()

    @property
    def speaking(self) -> bool:
        """A reply speaks, is being admitted, or may be in the next tick (its first text is known). Rows still
        waiting for their first text don't count: their replies' thinker jobs are queued, and no text comes
        before the thinker's loop admits them, so a reply run alone on that loop may use the one-row talker
        meanwhile (were they counted, a reply run alone would wait for them, and they for it: a deadlock)."""
        with self._lock:
            return bool(self._rows or self._admitting or not self._new.empty()
                        or any(map(self._known_first, self._waiting)))

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()

    def _serve(self) -> None:
        device = compute_device(self.batch.talker)
        try:
            with torch.cuda.stream(talker_stream(device)) if device.type == "cuda" else contextlib.nullcontext():
                while not self._stopping:
                    self.wake.clear()
                    if not self._tick():
                        self.wake.wait(IDLE_WAIT_S)
        except BaseException as err:
            self.died = f"{err.__class__.__name__}: {err}"
            log.exception("the talker's batch loop died")
            for row in [*self._rows.values(), *self._waiting]:
                row.finished()

    @torch.inference_mode()
    def _tick(self) -> bool:
        """One round over every row; returns whether any made progress."""
        with self._lock:
            while not self._new.empty():
                self._waiting.append(self._new.get())
        progressed = self._admit()
        stepping = self._next_texts()
        for row in [r for r in self._rows.values() if r.talker.stop.is_set()]:
            self._leave(row, flush=False)
            stepping.discard(row.slot)
        if stepping:
            for slot, (logits, hidden) in self.batch.step(stepping).items():
                self._rows[slot].logits, self._rows[slot].hidden = logits, hidden
        framing = self._sample()
        if framing:
            self._frames(framing)
        if progressed or stepping or framing:
            self.progressed()
            return True
        return False

    def _admit(self) -> bool:
        """The talker prompts of the rows whose first spoken token is known, up to ``admit_tokens`` of prompt in
        a tick (at least one row): rows whose first texts came together start speaking in the same tick, while
        the rows already speaking wait for at most that much prompt between two frames. On a GPU their
        prompts share one pass (packed.py)."""
        ready, ended, tokens = [], [], 0
        with self._lock:
            for row in list(self._waiting):
                talker = row.talker
                known, first_text = talker.feed.ready_token(0)
                if talker.stop.is_set() or (known and first_text is None):
                    self._waiting.remove(row)  # a reply of one token (or none) has nothing to speak
                    ended.append(row)
                    continue
                if not known or len(ready) >= min(self.batch.free, PACK_MAX):
                    continue
                length = int(talker.inputs["input_ids"].shape[1])
                if ready and tokens + length > self.admit_tokens:
                    break
                self._waiting.remove(row)
                ready.append((row, first_text))
                tokens += length
            self._admitting = len(ready)
        for row in ended:
            row.finished()
        if not ready:
            return False
        admitted: list = []
        try:
            prompts = [self._talker_prompt(row, first_text) for row, first_text in ready]
            if len(ready) > 1 and self.pack:
                admitted = self.batch.admit_packed(prompts)
            else:
                alone = len(ready) == 1 and not self._rows and not any(map(self._known_first, self._waiting))
                for prompt in prompts:
                    admitted.append(self.batch.admit(*prompt, alone=alone))
        except Exception as err:  # these replies go on without speech; the others keep speaking
            log.exception("the talker's prompt failed")
            for slot, _, _ in admitted:
                self.batch.release(slot)
            with self._lock:
                self._admitting = 0
            for row, _ in ready:
                row.failed(err)
                row.finished()
            return True
        with self._lock:
            for (row, _), (slot, logits, hidden) in zip(ready, admitted):
                row.slot, row.logits, row.hidden, row.prefilled_at = slot, logits, hidden, time.perf_counter()
                self._rows[slot] = row
            self._admitting = 0
        self.max_rows = max(self.max_rows, len(self._rows))
        self.admitted.append(tokens)
        return True

    @staticmethod
    def _talker_prompt(row: SpeakingRow, first_text: int) -> tuple:
        """The row's talker prompt: ``TalkerBatch.admit``'s embeddings, ids, attention mask and rope inputs."""
        talker, config = row.talker, row.talker.config
        if talker.device.type == "cuda":  # the prompt's states come from the thinker's stream
            torch.cuda.current_stream(talker.device).wait_stream(torch.cuda.default_stream(talker.device))
        row.tts = talker.text_hidden([config.tts_bos_token_id, config.tts_eos_token_id,
                                      config.tts_pad_token_id]).split(1, dim=1)
        embeds, ids = talker.prompt_embeds(first_text, *row.tts)
        attention_mask = torch.ones(ids.shape, dtype=torch.long, device=talker.device)
        return embeds, ids, attention_mask, talker.rope_inputs()

    @staticmethod
    def _known_first(row: SpeakingRow) -> bool:
        return row.talker.feed.ready_token(0)[0]

    def _next_texts(self) -> set[int]:
        """Sets the next text input of every row that waits for one and whose text is known (the thinker's
        tokens projected for all of them at once); returns their slots."""
        tokens, texts = {}, {}
        for slot, row in self._rows.items():
            if row.logits is not None:
                continue
            if row.text_ended:
                texts[slot] = row.tts[2]  # tts_pad
                continue
            known, token = row.talker.feed.ready_token(row.frame)
            if not known:
                continue
            if token is None:
                texts[slot], row.text_ended = row.tts[1], True  # tts_eos
            else:
                tokens[slot] = token
        if tokens:
            talker = self._rows[next(iter(tokens))].talker
            projected = talker.text_hidden(list(tokens.values()))[0].unsqueeze(1)  # (rows, 1, H)
            self.batch.text_in.index_copy_(0, self.batch.index(list(tokens)), projected)
        for slot, text in texts.items():
            self.batch.text_in[slot].copy_(text[0])
        return set(tokens) | set(texts)

    def _sample(self) -> dict[int, SpeakingRow]:
        """The first code of the next frame of every row that has logits, all at once (the host waits once, to
        read them); returns the rows that go on (a row ends at its end code, its frame limit or Stop)."""
        rows = {slot: row for slot, row in self._rows.items() if row.logits is not None}
        if not rows:
            return {}
        codes = self.batch.first_codes({slot: (row.logits, row.talker.sampling, row.talker.generator)
                                        for slot, row in rows.items()})
        going = {}
        for (slot, row), code, value in zip(rows.items(), codes, codes.view(-1).tolist()):
            talker = row.talker
            row.logits = None
            row.frame += 1
            if value == talker.config.talker_config.codec_eos_token_id or row.frame >= talker.sampling.max_frames:
                self._leave(row, flush=True)  # stock generate() never decodes the last sampled token
            elif talker.stop.is_set():
                self._leave(row, flush=False)
            else:
                row.token, going[slot] = code.view(1, 1), row
        return going

    def _frames(self, rows: dict[int, SpeakingRow]) -> None:
        """The frames of ``rows``: their residual codes predicted together, each frame to its vocoder."""
        slots = list(rows)
        first = rows[slots[0]].talker
        tokens = torch.cat([row.token for row in rows.values()])  # (rows, 1)
        residual, codec_embeds = self.batch.predict(
            slots, torch.cat([row.hidden for row in rows.values()]), first.talker.get_input_embeddings()(tokens),
            [row.talker.generator if row.talker.sampling.do_sample else None for row in rows.values()])
        self.batch.codec_in.index_copy_(0, self.batch.index(slots), codec_embeds)
        frames = torch.cat([tokens, residual], dim=1)  # (rows, code groups)
        for row, frame in zip(rows.values(), frames):
            row.frames_made += 1
            row.send(row.vocoder.push(frame))

    def _leave(self, row: SpeakingRow, flush: bool) -> None:
        self.batch.release(row.slot)
        del self._rows[row.slot]
        if flush and not row.talker.stop.is_set():
            row.send(row.vocoder.flush())
        row.finished()
