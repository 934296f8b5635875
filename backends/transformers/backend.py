"""Qwen3-Omni in this process through transformers: the stock path that can speak.

The model and what serves it are an ``OmniModel`` (model.py); this engine adds the reply job. The model runs
in one worker thread (``generate`` blocks; backends/transformers/engine_thread.py); events
cross into asyncio through a queue filled with ``loop.call_soon_threadsafe``, and a turn
waiting on a dead or stuck thread gets an error instead of waiting forever. A ``threading.Event`` checked
by stopping criteria on both the thinker and the talker is how closing the stream
stops the engine.
"""

from __future__ import annotations

import contextlib
import logging
import functools
import threading
import time
from dataclasses import replace
from typing import AsyncIterator, Callable

import media
from backends.base import Backend, BackendInfo
from backends.checkpoints import Checkpoint, detect_kind
from backends.conversation import fit_to_context
from backends.transformers.batched.engine import BatchedEngine, Prepared
from backends.transformers.batched.thinker_loop import ThinkerJob
from backends.transformers.batched.reply import BatchedReply, speaking_feed
from backends.transformers.engine_thread import HEALTH_CHECK_S, EngineThread
from backends.transformers.loading import load_model, weight_loading_progress
from backends.transformers.model import FRAMES_PER_SECOND, OmniModel, free_accelerator_memory
from backends.transformers.options import TransformersOptions
from backends.transformers.preparing import PreparingProcesses
from backends.transformers.reply_text import TextStreamer, finish_reason, reply_metrics
from backends.events import Done, Error, Event, Notice
from backends.reasoning import ReasoningSplitter
from backends.request import ChatRequest
from backends.transformers.thinker_decoder import ThinkerSampling
from messages import Message

log = logging.getLogger(__name__)

LOADING_WEIGHTS = Message("warm_up.loading_weights")
WAITING_TO_COMPILE = Message("warm_up.waiting_to_compile")
COMPILING_TALKER = Message("warm_up.compiling_talker")
COMPILING_THINKER = Message("warm_up.compiling_thinker")
"""Warm-up progress: the header shows it (``Backend.warming_up``), and a turn that waits on it says it."""


def loading_progress(share: float) -> Message:
    """The loading progress in 10 % steps: the header is read once a second, and loading takes minutes."""
    return Message("warm_up.loading_weights_percent", {"percent": 10 * int(10 * share)})


class TransformersBackend(OmniModel, Backend):
    """The engine around an ``OmniModel``: it is one (tests and benchmarks reach its decoders and kernels as the
    backend's), with the thread and the reply job added.

    Example::

        backend = TransformersBackend(resolve_checkpoint("tiny"))
        async for event in backend.stream(ChatRequest(turns=(Turn.user("Hi"),))): print(event)
    """

    def __init__(self, checkpoint: Checkpoint, options: TransformersOptions = TransformersOptions(), *,
                 loaded: tuple | None = None):
        """``loaded``: an already built ``(model, processor)`` (benchmarks build full-size random models)."""
        super().__init__(checkpoint, options, config=loaded[0].config if loaded else None)
        self.load_error: Message | None = None
        """Why the weights could not be loaded in the background (turns answer with it)."""
        self._lock = threading.Lock()  # generate() is not re-entrant: one reply at a time
        self.batched: BatchedEngine | None = None
        """Serves the replies once the model is warm when it decodes several at once (``batch_slots`` > 1)."""
        self.preparing: PreparingProcesses | None = None
        """Worker processes that prepare the batched engine's replies (``prepare_processes``)."""
        config = self.plan.config
        self.info = BackendInfo(
            backend="transformers",
            model=checkpoint.name,
            kind=detect_kind(checkpoint, config),
            device=self.plan.device_label,
            speakers=tuple(config.talker_config.speaker_id) if config.enable_audio_output else (),
            random_weights=checkpoint.random_weights,
            max_concurrency=self.plan.batch_slots,
        )
        if not (options.load_in_background and not loaded):
            self._load(loaded or load_model(self.plan))
        # One long-lived generation thread runs the jobs (loading, warm-up, replies) one after another:
        # the model and its static caches serve one reply at a time.
        self.engine = EngineThread("omni-generate", options.stall_timeout_s)
        if options.load_in_background and not loaded:
            self.warming_up = LOADING_WEIGHTS
            self.engine.submit(self._load_in_background)

    def _load(self, loaded: tuple) -> None:
        self.take(loaded)
        if self.compiled:
            self.warming_up = WAITING_TO_COMPILE
        if self.thinker_batch is not None:
            self.batched = BatchedEngine(self.thinker_batch, self.talker_batch, workers=self.batch_slots,
                                         stall_s=self.options.stall_timeout_s)
            if self.options.prepare_processes > 0:
                self.preparing = PreparingProcesses(self.checkpoint.path,
                                                    min(self.options.prepare_processes, self.batch_slots))
        self.info = replace(self.info, device=self.device_name, max_concurrency=self.batch_slots)

    def _load_in_background(self) -> None:
        def loaded_share(done: int, total: int) -> None:
            self.warming_up = loading_progress(done / total)
            self.engine.progressed()

        started = time.perf_counter()
        log.info("loading %s behind the page", self.checkpoint.name)
        try:
            with weight_loading_progress(loaded_share):
                loaded = load_model(self.plan)
            self.warming_up = None
            self._load(loaded)
            log.info("%s loaded in %.1f s", self.checkpoint.name, time.perf_counter() - started)
        except Exception as err:
            log.exception("loading %s failed", self.checkpoint.name)
            self.load_error = Message("engine.load_failed", {"cause": str(err)})
            self.warming_up = None

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        if self.batched is not None and not self.warming_up and not self.load_error:
            async for event in self.batched.stream(functools.partial(self._prepare, request)):
                yield event
            return
        if self.warming_up and self.engine.health() is None:
            yield Notice(Message("engine.warming_up", {"what": self.warming_up}))
        async for event in self.engine.stream(functools.partial(self._run, request),
                                              patient=lambda: bool(self.warming_up)):
            yield event

    def _run(self, request: ChatRequest, emit: Callable[[Event], None], stop: threading.Event,
             fitted: tuple | None = None) -> None:
        """``fitted``: the turn's (inputs, prompt tokens, start time) when they are made already."""
        with self._lock:
            if stop.is_set():
                return emit(Done("cancelled"))
            if self.load_error:
                emit(Error(self.load_error, "generation"))
                return emit(Done("error"))
            try:
                if fitted is None:
                    self._generate(request, emit, stop)
                else:
                    inputs, prompt_tokens, started = fitted
                    self._reply(request, inputs, prompt_tokens, emit, stop, started)
            except Exception as err:  # never let a worker die silently: the UI would wait forever
                log.exception("generation failed")
                emit(Error(Message("engine.generation_failed", {"cause": str(err)}), "generation"))
                emit(Done("error"))

    def _generate(self, request: ChatRequest, emit: Callable[[Event], None], stop: threading.Event) -> None:
        started = time.perf_counter()
        fitted = self._fit(request, emit, stop)
        if fitted is not None:
            self._reply(request, *fitted, emit, stop, started)

    def _fit(self, request: ChatRequest, emit: Callable[[Event], None], stop: threading.Event,
             preparing: PreparingProcesses | None = None) -> tuple[dict, int] | None:
        """The turn's inputs and prompt length, fitted to the context (its notes emitted); None when it already
        ended (a bad file, or Stop while its media was decoded). ``preparing``: in a worker process."""
        started = time.perf_counter()
        try:
            if preparing is not None:
                inputs, notes = preparing.fit(request, self.context_tokens, self.options.media_limits)
                inputs = self.on_model(inputs)
            else:
                _, inputs, notes = fit_to_context(request, self.count_tokens, self.context_tokens,
                                                  self.options.media_limits)
        except media.MediaError as err:
            emit(Error(err.msg, "input"))
            emit(Done("error"))
            return None
        for note in notes:
            emit(Notice(note))
        if stop.is_set():  # Stop while the media was decoded: don't start the prefill
            emit(Done("cancelled"))
            return None
        prompt_tokens = int(inputs["input_ids"].shape[1])
        log.debug("prompt of %d tokens ready %.1f ms after the request (media decoding, the processor)", prompt_tokens,
                  (time.perf_counter() - started) * 1e3)
        return inputs, prompt_tokens

    def _reply(self, request: ChatRequest, inputs: dict, prompt_tokens: int, emit: Callable[[Event], None],
               stop: threading.Event, started: float) -> None:
        """One reply on this thread, the thinker's decoder and the talker's thread to itself."""
        from transformers import set_seed

        if request.sampling.seed is not None:
            set_seed(request.sampling.seed)
        speech = self.speech_run(request, inputs, emit, stop, started) if request.return_audio and self.info.can_speak \
            else None
        streamer = TextStreamer(self.processor.tokenizer, ReasoningSplitter(self.info.reasons), emit,
                                speech.feed if speech else None)
        with speech.running() if speech else contextlib.nullcontext() as prompt_states:
            try:
                self._think(request, inputs, prompt_tokens, streamer, stop, prompt_states)
            except Exception:
                if not stop.is_set():
                    raise
        streamer.flush()
        emit(reply_metrics(streamer, started, prompt_tokens, speech))
        emit(Done(finish_reason(streamer, request.sampling.max_new_tokens, stop)))

    def _prepare(self, request: ChatRequest, emit: Callable[[Event], None], stop: threading.Event) -> Prepared | None:
        """A turn for the batched engine (on one of its preparing threads): fitted, with its text streamer and
        speech; a turn too long for a slot runs alone on the thinker loop's thread."""
        started = time.perf_counter()
        fitted = self._fit(request, emit, stop, self.preparing)
        if fitted is None:
            return None
        inputs, prompt_tokens = fitted
        max_new_tokens, speaks = request.sampling.max_new_tokens, request.return_audio and self.info.can_speak
        frames = int(self.options.max_speech_seconds * FRAMES_PER_SECOND)
        if not (self.thinker_batch.fits(prompt_tokens, max_new_tokens)
                and (not speaks or self.talker_batch.fits(prompt_tokens, frames))):
            def outside() -> None:
                self._run(request, emit, stop, fitted=(inputs, prompt_tokens, started))

            return Prepared(ThinkerJob(inputs, None, None, stop, lambda reason: None, alone=outside))
        speech = self.speech_run(request, inputs, emit, stop, started, feed=speaking_feed()) if speaks else None
        reply = BatchedReply(request, emit, stop, started, prompt_tokens, self.processor.tokenizer, self.info.reasons,
                             speech)
        return reply.prepared(inputs, self.model.config.im_end_token_id, self.thinker_batch.token_in.device)

    def _think(self, request: ChatRequest, inputs: dict, prompt_tokens: int, streamer, stop: threading.Event,
               prompt_states: dict | None = None) -> None:
        """The thinker's reply into ``streamer``: our captured decode loop when compiled and the turn fits one
        of its caches (the smallest that does), else stock generate(). ``prompt_states``: the talker's
        (SpeechRun.running()), for a captured prompt pass to fill."""
        import torch

        sampling = request.sampling
        decoder = next((d for d in self.thinker_decoders if d.fits(prompt_tokens, sampling.max_new_tokens)), None)
        eos = self.model.config.im_end_token_id
        if decoder is not None:
            generator = None
            if sampling.seed is not None and not sampling.greedy:  # its own: the talker draws beside it
                generator = torch.Generator(decoder.token_in.device).manual_seed(sampling.seed)
            settings = ThinkerSampling(sampling.temperature, sampling.top_k, sampling.top_p, sampling.max_new_tokens,
                                       eos, generator)
            return decoder.generate(inputs, settings, streamer, stop, prompt_states)
        kwargs = {
            "max_new_tokens": sampling.max_new_tokens,
            "eos_token_id": eos,
            "do_sample": not sampling.greedy,
            "streamer": streamer,
            "stopping_criteria": [_StopOnEvent(stop)],
        }
        if not sampling.greedy:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        self.model.thinker.generate(**inputs, **kwargs)

    def warm_up(self) -> dict:
        """Compile and capture before the first user turn (when compiling); returns seconds per stage.

        It runs as a job of the generation thread, so turns sent meanwhile wait behind it (and
        say so), and the thinker's CUDA graphs are recorded in the thread that replays them.
        torch.compile keeps compiled code in its on-disk caches (TORCHINDUCTOR_CACHE_DIR): a
        restart skips most of the work. If compiling fails the backend runs eagerly.
        """
        times: dict = {}
        finished = threading.Event()

        def compile_once_loaded() -> None:  # a job: it runs after the weights are in (loading is one too)
            try:
                if self.compiled:
                    self._compile(times)
            finally:
                finished.set()

        self.engine.submit(compile_once_loaded)
        while not finished.wait(HEALTH_CHECK_S) and self.engine.health(stalls=False) is None:
            pass
        return times

    def _compile(self, times: dict) -> None:
        from backends.request import Sampling, Turn

        try:
            if self.talker_decoder is not None:
                self._progress(COMPILING_TALKER)
                times.update(self.compile_talker())
            self._progress(COMPILING_THINKER)
            started = time.perf_counter()
            self.compile_thinker()
            if self.options.encoder_graphs and self.thinker_decoders:
                times["encoders_s"] = self.capture_encoders()
            times.update(self.capture_batches())
            request = ChatRequest(turns=(Turn.user("Say hello."),), sampling=Sampling(temperature=0, max_new_tokens=8),
                                  return_audio=self.info.can_speak)
            failures: list[str] = []
            self._run(request, lambda event: isinstance(event, Error) and failures.append(event.message),
                      threading.Event())
            if failures:
                raise RuntimeError("; ".join(failures))
            times["thinker_s"] = time.perf_counter() - started
            log.info("warm-up done: %s", {k: round(v, 1) for k, v in times.items()})
            free_accelerator_memory()  # what compiling and capturing left cached, and no graph holds
        except Exception:
            log.exception("compiling the thinker failed; it runs eagerly (slower, same answers)")
            self.run_thinker_eagerly()
        finally:
            self.warming_up = None

    def _progress(self, message: Message) -> None:
        self.warming_up = message
        self.engine.progressed()
        log.info("%s", message)

    def close(self) -> None:
        self.engine.stop()
        if self.batched is not None:
            self.batched.close()
        if self.preparing is not None:
            self.preparing.close()
        self.release()


class _StopOnEvent:
    """A StoppingCriteria that ends generation once the stream is closed."""

    def __init__(self, stop: threading.Event):
        self.stop = stop

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.stop.is_set(), dtype=torch.bool, device=input_ids.device)
