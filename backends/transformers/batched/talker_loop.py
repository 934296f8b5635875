"""The batched engine's talker thread: it speaks every reply that asked for speech.

A reply joins once its first spoken token is known; each tick samples a first code for every row that has logits,
predicts all their frames at once, and steps every row whose next text is known (a row waiting for the thinker sits
the step out). It runs on its own CUDA stream, as the one-reply engine's talker thread does. Per row it does what
the one-reply loop (``Talker.frames``) does, in the same order, so a row's codes and noise are those it would get
alone (the same values on the CPU, where the tests compare them).
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
from backends.transformers.batched.thinker_loop import IDLE_WAIT_S
from backends.transformers.cuda_graphs import PACK_MAX, compute_device
from backends.transformers.speech import Talker, talker_stream
from backends.transformers.vocoder import StreamingVocoder

log = logging.getLogger(__name__)

ADMIT_TOKENS = 2048
"""The most prompt tokens whose talker prompts one tick of the talker's loop runs (``TalkerLoop``)."""

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
