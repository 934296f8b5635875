"""Many replies at once on one model: the batched loops behind the same stream of events as one reply.

A reply is prepared off the loops (the conversation fitted to the context, its media decoded, the processor
run: CPU work) by a small pool of threads, then handed to the thinker's loop and, when it speaks, to the
talker's loop; its events reach asyncio through a queue. Closing the stream sets the reply's stop, which
both loops read at the reply's next token or frame: its rows leave and the others go on. A turn waiting on
the engine gets an error, not an endless wait, if a loop dies or makes no progress for ``stall_s`` while it
has work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from backends.events import Done, Error, Event
from backends.transformers.batched.talker_loop import SpeakingRow, TalkerLoop
from backends.transformers.batched.thinker_loop import ThinkerJob, ThinkerLoop
from backends.transformers.batched.talker import TalkerBatch
from backends.transformers.batched.thinker import ThinkerBatch
from backends.transformers.engine_thread import HEALTH_CHECK_S
from messages import Message

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A reply ready for the loops: its thinker job and, when it speaks, its talker row."""

    job: ThinkerJob
    speech: SpeakingRow | None = None


Prepare = Callable[[Callable[[Event], None], threading.Event], "Prepared | None"]
"""``prepare(emit, stop)``: a reply's inputs and rows, or None when it already ended (emitted its Done)."""


class BatchedEngine:
    """Example::

        engine = BatchedEngine(ThinkerBatch(...), TalkerBatch(...), workers=8)
        async for event in engine.stream(prepare): ...
    """

    def __init__(self, thinker: ThinkerBatch, talker: TalkerBatch | None, workers: int, stall_s: float = 600.0):
        """``talker``: None for a model that doesn't speak. ``workers``: replies prepared at once."""
        self.talker = TalkerLoop(talker, self.progressed) if talker is not None else None
        self.thinker = ThinkerLoop(thinker, self.progressed,
                                   others_idle=lambda: self.talker is None or not self.talker.speaking)
        self.stall_s = stall_s
        self._prepare = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="omni-prepare")
        self._progress_at = time.monotonic()
        self.replies = 0
        """Replies streaming now (prepared or decoding)."""

    def progressed(self) -> None:
        """A loop made progress (a token, a frame): called from the loops."""
        self._progress_at = time.monotonic()

    def health(self) -> Message | None:
        """None while both loops serve; else what to tell the user."""
        for loop in (self.thinker, self.talker):
            if loop is not None and not loop.alive:
                return Message("engine.thread_stopped", {"cause": loop.died or Message("engine.thread_exited")})
        if self.replies and time.monotonic() - self._progress_at > self.stall_s:
            return Message("engine.stuck", {"seconds": f"{self.stall_s:.0f}"})
        return None

    async def stream(self, prepare: Prepare) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def emit(event: Event) -> None:
            self.progressed()  # a reply run outside the loops' steps (too long for a slot) shows it is alive so
            if stop.is_set() and not isinstance(event, Done):
                return
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop closed under us
                stop.set()

        if (problem := self.health()) is not None:
            yield Error(problem, "backend")
            yield Done("error")
            return
        if not self.replies:  # the clock starts with work to do; later arrivals don't restart it
            self._progress_at = time.monotonic()
        self.replies += 1
        getter = None
        try:
            try:
                prepared = await loop.run_in_executor(self._prepare, prepare, emit, stop)
            except Exception as err:  # a reply that can't be prepared ends alone: the engine goes on
                log.exception("preparing a reply failed")
                yield Error(Message("engine.generation_failed", {"cause": str(err)}), "generation")
                yield Done("error")
                return
            if prepared is not None:
                if prepared.speech is not None and self.talker is not None and prepared.job.alone is None:
                    self.talker.add(prepared.speech)
                self.thinker.submit(prepared.job)
            while True:
                getter = getter or asyncio.ensure_future(events.get())
                if not (await asyncio.wait({getter}, timeout=HEALTH_CHECK_S))[0]:
                    if (problem := self.health()) is not None:
                        yield Error(problem, "backend")
                        yield Done("error")
                        return
                    continue
                event, getter = getter.result(), None
                yield event
                if isinstance(event, Done):
                    return
        finally:
            stop.set()  # closed (Stop, a closed tab) or finished: the loops drop the reply's rows
            self.replies -= 1
            if getter is not None:
                getter.cancel()

    def close(self) -> None:
        self.thinker.stop()
        if self.talker is not None:
            self.talker.stop()
        self._prepare.shutdown(wait=False, cancel_futures=True)
