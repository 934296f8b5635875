"""The one thread that runs a local engine's jobs (loading, warm-up, replies), one after another.

A model in this process serves one reply at a time from one thread (its static caches and
CUDA graphs belong to it). Waiting turns are entries in a queue, not parked threads. The
thread outlives any job that fails, and says when it can't serve any more: it died, or one
job has made no progress for too long (hung in a kernel or a deadlock); the streams waiting
on it ask ``health()`` instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from typing import Any, AsyncIterator, Callable

from backends.events import Done, Error, Event
from messages import Message

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 1.0
"""How often a turn waiting on the engine thread checks that it is alive and not stuck."""
_JOB_ENDED = object()
"""What a streamed job sends last, whatever happened to it."""


class EngineThread:
    """Example::

        engine = EngineThread("omni-generate", stall_s=600)
        engine.submit(lambda: print("runs on the engine thread"))
        result = await engine.call(lambda: 6 * 7)  # from asyncio: waits without holding a thread
        assert engine.health() is None  # else: why the engine can't answer
    """

    def __init__(self, name: str, stall_s: float = 600.0):
        self.stall_s = stall_s
        self.died: str | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._job_started: float | None = None
        self._progress_at = time.monotonic()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=name)
        self._thread.start()

    def submit(self, job: Callable[[], Any]) -> None:
        """Run ``job`` after those before it. An exception it raises is logged; the thread goes on."""
        self._jobs.put(job)

    async def call(self, fn: Callable[[], Any], *, patient: Callable[[], bool] = lambda: False) -> Any:
        """``fn()``'s result (or exception) once the engine thread has run it; waiting holds no thread.

        Raises ``EngineUnavailable`` if the thread dies or stalls (unless ``patient()``) before it is done."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def settle(outcome: Callable[[], None]) -> None:
            if not done.done():
                outcome()

        def job() -> None:
            try:
                result = fn()
            except BaseException as err:  # bound now: Python unbinds ``err`` when the except block ends
                loop.call_soon_threadsafe(settle, functools.partial(done.set_exception, err))
                raise
            loop.call_soon_threadsafe(settle, lambda: done.set_result(result))

        if (problem := self.health(stalls=not patient())) is not None:
            raise EngineUnavailable(problem)
        self.submit(job)
        while not (await asyncio.wait({done}, timeout=HEALTH_CHECK_S))[0]:
            if (problem := self.health(stalls=not patient())) is not None:
                raise EngineUnavailable(problem)
        return done.result()

    def run(self, fn: Callable[[], Any]) -> Any:
        """``fn()``'s result (or exception) from another thread, once the engine thread has run it (warm-up)."""
        outcome: dict = {}
        finished = threading.Event()

        def job() -> None:
            try:
                outcome["result"] = fn()
            except BaseException as err:
                outcome["error"] = err
                raise
            finally:
                finished.set()

        self.submit(job)
        while not finished.wait(HEALTH_CHECK_S):
            if (problem := self.health(stalls=False)) is not None:
                raise EngineUnavailable(problem)
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("result")

    @property
    def busy(self) -> bool:
        """A job is running."""
        return self._job_started is not None

    async def stream(self, run: Callable[[Callable[[Event], None], threading.Event], None], *,
                     patient: Callable[[], bool] = lambda: False) -> AsyncIterator[Event]:
        """Run ``run(emit, stop)`` as a job and yield what it emits, up to its ``Done``; closing the stream sets
        ``stop``. If the job ends without a Done, or the thread dies or stalls (unless ``patient()``: loading,
        compiling), the stream ends with an Error instead of waiting forever."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def emit(event: Event | object) -> None:
            self.progressed()
            if stop.is_set():
                return  # nobody listens any more (and the loop may be gone)
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop closed under us
                stop.set()

        def job() -> None:
            try:
                run(emit, stop)
            except BaseException as err:
                if not isinstance(err, Exception):
                    self._died_of(err)  # before the stream hears the job ended, so it can say so
                raise
            finally:
                emit(_JOB_ENDED)

        if (problem := self.health(stalls=not patient())) is not None:
            yield Error(problem, "backend")
            yield Done("error")
            return
        self.submit(job)
        getter = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(events.get())
                if not (await asyncio.wait({getter}, timeout=HEALTH_CHECK_S))[0]:
                    if (problem := self.health(stalls=not patient())) is not None:
                        yield Error(problem, "backend")
                        yield Done("error")
                        return
                    continue
                event, getter = getter.result(), None
                if event is _JOB_ENDED:
                    yield Error(self.health(stalls=False) or Message("engine.no_reply"), "generation")
                    yield Done("error")
                    return
                yield event
                if isinstance(event, Done):
                    return
        finally:
            stop.set()  # the stream was closed (Stop, closed tab) or finished: end the job
            if getter is not None:
                getter.cancel()

    def progressed(self) -> None:
        """The running job is alive (a token, an audio chunk): called from the job."""
        self._progress_at = time.monotonic()

    def health(self, stalls: bool = True) -> Message | None:
        """None while the thread can serve; else what to tell the user. ``stalls``: a job running ``stall_s``
        without progress counts as hung (False while a slow job, like a model's load, is expected)."""
        if self.died is not None or not self._thread.is_alive():
            return Message("engine.thread_stopped", {"cause": self.died or Message("engine.thread_exited")})
        started = self._job_started
        if stalls and started is not None and time.monotonic() - max(started, self._progress_at) > self.stall_s:
            return Message("engine.stuck", {"seconds": f"{self.stall_s:.0f}"})
        return None

    def stop(self) -> None:
        """End the thread once the jobs already queued have run."""
        self._jobs.put(None)

    def _serve(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                self._job_started = self._progress_at = time.monotonic()
                try:
                    job()
                except Exception:  # one failed job must not take every later turn with it
                    log.exception("an engine job failed")
                finally:
                    self._job_started = None
        except BaseException as err:  # SystemExit and the like: the thread ends, nothing runs after it
            self._died_of(err)
            log.exception("the engine thread died")

    def _died_of(self, err: BaseException) -> None:
        self.died = f"{err.__class__.__name__}: {err}" if str(err) else err.__class__.__name__


class EngineUnavailable(RuntimeError):
    """The engine thread can't run jobs any more; ``msg`` says so to the user."""

    def __init__(self, msg: Message):
        super().__init__(str(msg))
        self.msg = msg
