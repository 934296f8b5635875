"""Every study's answers, made once through the shared engine and kept with their speech.

One background task on the server's event loop makes the answers still missing, one engine request at a time,
oldest study first and prompt by prompt (a study's first prompts can be rated while the rest are answered). Its
store calls run in threads (a write may wait for the database's lock), and an unexpected error is logged and the
task goes on ``PAUSE_S`` later. The task ends with the server's event loop: when the app stops, the answer under
way is dropped (its engine request closed) before the engines close.
Engines take requests in arrival order, so a chat turn sent meanwhile waits for the answer in progress only,
never for the whole study. An answer is stored when it is complete: one cut short by a shutdown is made again
after the restart, and nothing is made twice.

An answer the engine failed to make (stage "backend" or "generation": the engine stalled, a compare server can't be
reached) is not kept: it is tried again after ``RETRY_AFTER_S``, its set-up's other answers waiting meanwhile, and
after the last attempt it waits until the app restarts; ``Generator.waiting`` says which set-up fails and why. As in
the Evaluate tab, an answer keeps its error when the text is whole (stage "speech": speaking it failed) or when the
engine refused the request itself (stage "input": the same prompt would be refused again).

A closed study gets no new answer (``missing_answers`` leaves it out; the one under way is kept, for a reopening).
A deleted study's answer under way is dropped (``drop``: its engine request closed at the next event), and one that
comes back while the study is deleted is not kept: the store refuses it, and its speech file is removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import soundfile

from backends.base import Backend
from backends.events import AudioChunk, Done, Error, Metrics, TextDelta
from backends.request import ChatRequest
from messages import Message, joined
from studies.records import StudyAnswer, StudyError, StudyPrompt, StudySetup
from studies.store import StudyStore

log = logging.getLogger(__name__)

RETRY_AFTER_S = (30.0, 120.0, 600.0)
"""An answer the engine failed to make is tried again after these waits (then it waits for a restart)."""
PAUSE_S = 10.0
"""After an unexpected error (the store's, say), the task goes on this much later."""
PASSING = ("backend", "generation")
"""Error stages that say nothing about the answer itself: the engine or the server failed, and may not next time."""

RequestFor = Callable[[StudySetup, StudyPrompt, tuple[str, ...], Backend], ChatRequest]
"""The request that answers a prompt (its media as local files) under a set-up, on the engine given. The set-up's
settings are the UI's (``ui.evaluate.setup.Setup``), so the UI says how they become a request."""


@dataclass
class _Reply:
    """One answer's events, accumulated."""

    text: str = ""
    chunks: list[np.ndarray] = field(default_factory=list)
    sample_rate: int = 24_000
    errors: list[Error] = field(default_factory=list)
    metrics: Metrics | None = None
    finish_reason: str = ""

    def handle(self, event) -> None:
        if isinstance(event, TextDelta):
            self.text += event.text
        elif isinstance(event, AudioChunk):
            self.chunks.append(event.samples)
            self.sample_rate = event.sample_rate
        elif isinstance(event, Error):
            self.errors.append(event)
        elif isinstance(event, Metrics):
            self.metrics = event
        elif isinstance(event, Done):
            self.finish_reason = event.finish_reason

    @property
    def engine_failed(self) -> Message | None:
        """Why the engine failed to make this answer, or None (an answer, maybe with an error of its own)."""
        failures = [e.msg for e in self.errors if e.stage in PASSING]
        return joined(failures) if failures else None


@dataclass
class _Failure:
    """An answer the engine failed to make."""

    label: str
    cause: Message
    attempts: int
    retry_at: float
    """``time.monotonic()`` of the next attempt; infinity once the attempts are spent."""


class Generator:
    """Makes the missing answers of every study in ``store``; ``wake`` after a study is created (and when the app
    starts, so a study interrupted by a restart is finished). ``engines``: the engine names a set-up's ``engine``
    setting takes ("app", "compare") → the backend."""

    def __init__(self, store: StudyStore, engines: Mapping[str, Backend], request_for: RequestFor,
                 retry_after_s: Sequence[float] = RETRY_AFTER_S, pause_s: float = PAUSE_S):
        self.store, self.engines, self.request_for = store, dict(engines), request_for
        self.retry_after_s, self.pause_s = tuple(retry_after_s), pause_s
        self.current: tuple[str, int, int] | None = None
        """(study, prompt, set-up) being answered now."""
        self._no_engine: dict[tuple[str, int], Message] = {}
        """(study, set-up) → why its answers can't be made on this server (an engine it lacks), until woken."""
        self._failures: dict[tuple[str, int, int], _Failure] = {}
        self._dropped: set[str] = set()
        """Studies deleted: an answer under way for one stops (set from any thread: a set's add is one step)."""
        self._task: asyncio.Task | None = None
        self._resting = False
        self._more: asyncio.Event | None = None

    @property
    def waiting(self) -> dict[str, Message]:
        """study → why some of its answers aren't made: an engine this server lacks, or one that fails. (Read from
        any thread: the task changes what it reads, so it reads copies, each taken in one step.)"""
        now, why = time.monotonic(), {}
        for (study_id, _setup), message in list(self._no_engine.items()):
            if study_id in self._dropped:
                continue
            why.setdefault(study_id, []).append(message)
        by_setup: dict[tuple[str, int], list[_Failure]] = {}
        for (study_id, _prompt, setup), failure in list(self._failures.items()):
            if study_id in self._dropped:
                continue
            by_setup.setdefault((study_id, setup), []).append(failure)
        for (study_id, _setup), failures in by_setup.items():
            last = failures[-1]
            pending = [f.retry_at for f in failures if f.retry_at < math.inf]
            if pending:
                why.setdefault(study_id, []).append(Message("studies.setup_failing", {
                    "setup": last.label, "cause": last.cause, "seconds": max(0, round(min(pending) - now))}))
            if spent := [f for f in failures if f.retry_at == math.inf]:
                why.setdefault(study_id, []).append(Message("studies.setup_gave_up", {
                    "setup": last.label, "cause": spent[-1].cause, "attempts": spent[-1].attempts,
                    "count": len(spent)}))
        return {study_id: joined(messages) for study_id, messages in why.items()}

    def wake(self) -> None:
        """Start the task if it isn't running, or make it look for new work. Call it on the server's event loop:
        the engines' streams belong to it."""
        if self._task is None or self._task.done():
            self._more = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._work(), name="study-answers")
        self._more.set()

    def drop(self, study_id: str) -> None:
        """The study is deleted: stop its answer under way, forget its failures. (Any thread may call it.)"""
        self._dropped.add(study_id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def idle(self) -> None:
        """Wait until every answer that can be made here is made (tests, benchmarks)."""
        while self._task is not None and not self._task.done() and not (self._resting and not self._more.is_set()):
            await asyncio.sleep(0.05)

    async def _work(self) -> None:
        while True:
            self._more.clear()
            try:
                await self._next()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store failed (a locked or full disk) or a bug: said, and tried again after a pause
                log.exception("study answers: the next answer failed; trying again in %.0f s", self.pause_s)
                await asyncio.sleep(self.pause_s)

    async def _next(self) -> None:
        """Make the next answer due, or wait until one is (woken, or a failed answer's next attempt)."""
        now = time.monotonic()
        for job in [job for job in self._failures if job[0] in self._dropped]:
            del self._failures[job]  # a deleted study's failed answer is never tried again
        for key in [key for key in self._no_engine if key[0] in self._dropped]:
            del self._no_engine[key]
        held = self._held_back(now)
        missing = await asyncio.to_thread(self.store.missing_answers)  # the store's calls never block the loop
        jobs = [job for job in missing if (job[0], job[2]) not in held and self._due(job, now)]
        if not jobs:
            retry_at = min((f.retry_at for f in self._failures.values() if f.retry_at > now), default=math.inf)
            self._resting = True  # nothing to make until woken (or a retry is due): what idle() waits for
            try:
                await asyncio.wait_for(self._more.wait(), None if retry_at == math.inf else retry_at - now)
            except TimeoutError:
                return  # an answer's next attempt is due
            finally:
                self._resting = False
            self._no_engine.clear()  # woken: look again (and say again what can't be made)
            return
        self.current = jobs[0]
        try:
            await self.answer(*jobs[0])
        finally:
            self.current = None

    def _held_back(self, now: float) -> set[tuple[str, int]]:
        """(study, set-up) whose answers wait: its engine is missing, or one of its answers failed and its next
        attempt isn't due (a failing engine would fail the set-up's other answers at once)."""
        return {*self._no_engine, *((study_id, setup) for (study_id, _prompt, setup), f in self._failures.items()
                                    if now < f.retry_at < math.inf)}

    def _due(self, job: tuple[str, int, int], now: float) -> bool:
        """Never failed, or failed and its next attempt is due (never, once the attempts are spent)."""
        return (failure := self._failures.get(job)) is None or failure.retry_at <= now

    def _failed(self, job: tuple[str, int, int], label: str, cause: Message) -> None:
        attempts = self._failures[job].attempts + 1 if job in self._failures else 1
        wait = self.retry_after_s[attempts - 1] if attempts <= len(self.retry_after_s) else math.inf
        self._failures[job] = _Failure(label, cause, attempts, time.monotonic() + wait)
        log.warning("study %s: set-up %s failed on prompt %s (attempt %s): %s; %s", job[0], label, job[1], attempts,
                    cause, f"trying again in {wait:.0f} s" if wait < math.inf else "waiting for a restart")

    async def answer(self, study_id: str, prompt: int, setup: int) -> StudyAnswer | None:
        """Make and keep one answer; None when this server lacks the set-up's engine or the engine failed
        (``waiting`` says so), or when the study is deleted meanwhile."""
        try:
            study = await asyncio.to_thread(self.store.study, study_id)
        except StudyError:  # deleted since missing_answers listed it
            return None
        the_setup, the_prompt = study.setups[setup], study.prompts[prompt]
        engine = str(the_setup.settings.get("engine", "app"))
        backend = self.engines.get(engine)
        if backend is None:
            self._no_engine[study_id, setup] = Message("studies.no_engine", {"setup": the_setup.label,
                                                                            "engine": engine})
            return None
        if not the_setup.engine:
            await asyncio.to_thread(self.store.set_engine, study_id, setup, {"model": backend.info.model,
                                                                            "backend": backend.info.backend})
        paths = tuple(str(self.store.file(m.file)) for m in the_prompt.media)
        reply = _Reply()
        try:
            stream = backend.stream(self.request_for(the_setup, the_prompt, paths, backend))
            try:
                async for event in stream:
                    if study_id in self._dropped:
                        break  # deleted: the engine's time goes to what is still wanted
                    reply.handle(event)
            finally:
                await stream.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # an engine that breaks its contract: the study goes on, the answer says why
            log.exception("answering %s prompt %s set-up %s failed", study_id, prompt, setup)
            reply.errors.append(Error(Message("engine.generation_failed", {"cause": str(err)})))
            reply.finish_reason = "error"
        if study_id in self._dropped:
            log.info("study %s was deleted: its answer under way is dropped", study_id)
            return None
        if (cause := reply.engine_failed) is not None:
            self._failed((study_id, prompt, setup), the_setup.label, cause)
            return None
        try:
            answer = await asyncio.to_thread(self._keep, study_id, prompt, setup, reply)
        except StudyError:  # deleted while the answer was made: nothing to keep it for, nothing to try again
            log.info("study %s was deleted: its answer to prompt %s by set-up %s is not kept", study_id, prompt, setup)
            return None
        except Exception as err:  # not kept (the disk, the database): made again later, as an engine's failure
            log.exception("study %s: keeping prompt %s's answer by set-up %s failed", study_id, prompt, setup)
            self._failed((study_id, prompt, setup), the_setup.label, Message("studies.not_kept", {"cause": str(err)}))
            return None
        self._failures.pop((study_id, prompt, setup), None)
        log.info("study %s: prompt %s answered by set-up %s", study_id, prompt, setup)
        return answer

    def _keep(self, study_id: str, prompt: int, setup: int, reply: _Reply) -> StudyAnswer:
        audio = sha = None
        if reply.chunks and (samples := np.concatenate(reply.chunks)).size:
            audio = self.store.new_audio_file()
            path = self.store.file(audio)
            partial = path.with_suffix(".part")
            soundfile.write(partial, samples, reply.sample_rate, format="WAV")
            os.replace(partial, path)
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
        answer = StudyAnswer(prompt, setup, reply.text, audio, sha,
                             error=str(joined(e.msg for e in reply.errors)) if reply.errors else "",
                             finish_reason=reply.finish_reason, **timings(reply.metrics))
        try:
            self.store.save_answer(study_id, answer)
        except BaseException:  # not kept (the study deleted meanwhile, the database): its speech goes too
            if audio:
                self.store.file(audio).unlink(missing_ok=True)
            raise
        return answer


def timings(metrics: Metrics | None) -> dict[str, float | None]:
    """An answer's timings as they are kept (here and in the Evaluate tab's runs): seconds to the first token and to
    the first audio to the millisecond, tokens per second to one decimal; None where the engine measured none."""
    def rounded(value: float | None, digits: int) -> float | None:
        return None if value is None else round(value, digits)

    if metrics is None:
        return {"first_token_s": None, "first_audio_s": None, "tokens_per_s": None}
    return {"first_token_s": rounded(metrics.time_to_first_token_s, 3),
            "first_audio_s": rounded(metrics.time_to_first_audio_s, 3),
            "tokens_per_s": rounded(metrics.tokens_per_s, 1)}
