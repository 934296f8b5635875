"""Replies' media decoding and processor in worker processes, beside the engine's.

Decoding a reply's files and running the processor (audio features, image patches, tokens) is Python that
holds the GIL most of the time: on this project's 2-core machine 8 replies prepared in 2 threads took as long
as 8 one after another (BENCHMARKS.md), so with many people arriving at once the eighth prompt was ready only
after the other seven. Worker processes prepare them side by side; the engine's process gets each reply's
inputs as CPU tensors and moves them to the model (``OmniModel.on_model``).

Example::

    preparing = PreparingProcesses(checkpoint.path, workers=4)
    inputs, notes = preparing.fit(request, context_tokens, limits)   # raises media.MediaError, as fit_to_context
    preparing.close()
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import media
from backends.request import ChatRequest

log = logging.getLogger(__name__)

_PROCESSOR = None
"""The worker process's own processor (loaded once, when the worker starts)."""


class PreparingProcesses:
    def __init__(self, processor_path: str, workers: int):
        self.processor_path, self.workers = processor_path, workers
        self._lock = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn: the engine's process has CUDA up, which a forked child can't use or safely inherit.
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_load_processor, initargs=(self.processor_path,))
        for _ in range(self.workers):  # start them now: a worker imports torch and transformers, seconds each
            pool.submit(_started)
        return pool

    def fit(self, request: ChatRequest, context_tokens: int, limits: media.MediaLimits) -> tuple[dict, list]:
        """``fit_to_context`` in a worker: the reply's inputs (CPU tensors) and notes for the user. A worker that
        dies (a decoder crashing on a file) breaks the pool for every reply in it: the pool starts afresh and
        the reply is tried once more, so a reply caught beside the culprit still gets its answer; the culprit
        breaks the new pool too and gets an error."""
        for attempt in range(2):
            pool = self._pool
            try:
                return pool.submit(_fit, request, context_tokens, limits).result()
            except BrokenProcessPool:
                log.warning("a process preparing replies died; starting them again")
                with self._lock:
                    if self._pool is pool:
                        pool.shutdown(wait=False, cancel_futures=True)
                        self._pool = self._start()
        raise RuntimeError("the process preparing this reply stopped (its files could not be read)")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _load_processor(path: str) -> None:
    global _PROCESSOR
    import torch
    from transformers import Qwen3OmniMoeProcessor

    torch.set_num_threads(1)  # several workers share the machine's cores with the engine
    _PROCESSOR = Qwen3OmniMoeProcessor.from_pretrained(path)


def _started() -> bool:
    return _PROCESSOR is not None


def _fit(request: ChatRequest, context_tokens: int, limits: media.MediaLimits) -> tuple[dict, list]:
    from backends.conversation import fit_to_context, processor_inputs

    def count_tokens(prompt):
        inputs = processor_inputs(_PROCESSOR, prompt)
        return inputs, int(inputs["input_ids"].shape[1])

    _, inputs, notes = fit_to_context(request, count_tokens, context_tokens, limits)
    return inputs, notes
