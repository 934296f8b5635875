"""Answering an evaluation row: one request per side, each its own engine request.

A run never holds the model for longer than one answer: between answers the engine serves whoever else is
waiting (engines take requests in arrival order), so people chatting during a run are not locked out.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import soundfile

from backends.base import Backend
from messages import joined
from studies.generation import timings
from ui.evaluate.results import Answer, EvalRow, EvalRun, audio_name
from ui.evaluate.setup import Setup
from ui.evaluate.sheet import Prompt
from ui.reply import ReplyState


async def answer(backend: Backend, setup: Setup, prompt: Prompt, audio_path: Path) -> Answer:
    """The engine's answer to ``prompt`` under ``setup``; its speech goes to ``audio_path``."""
    reply = ReplyState()
    stream = backend.stream(setup.request(prompt, backend.info.can_speak))
    try:
        async for event in stream:
            reply.handle(event)
    finally:
        await stream.aclose()  # a Stop lands here: the engine stops this request too
    result = Answer(text=reply.text, error="; ".join(e.message for e in reply.errors),
                    error_message=joined(e.msg for e in reply.errors) if reply.errors else None,
                    finish_reason=reply.finish_reason or "", **timings(reply.metrics))
    samples = reply.audio()
    if samples is not None and samples.size:
        await asyncio.to_thread(soundfile.write, audio_path, samples, reply.sample_rate)
        result.audio = str(audio_path)
    return result


async def answer_row(run: EvalRun, row: EvalRow, engines: dict[str, Backend]) -> None:
    """Fill in the row's missing answers (A, then B when the run has two set-ups)."""
    folder = Path(run.folder)
    if row.a is None:
        row.a = await answer(engines[run.setup_a.engine], run.setup_a, row.prompt,
                             folder / audio_name(row.prompt, "a"))
    if run.setup_b is not None and row.b is None:
        row.b = await answer(engines[run.setup_b.engine], run.setup_b, row.prompt,
                             folder / audio_name(row.prompt, "b"))
