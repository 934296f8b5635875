"""vLLM Thinker + Transformers Talker: fast text from vLLM, speech from the real talker classes.

vLLM (in this process, or a `vllm serve` elsewhere) writes the reply; each new token id goes to the talker as it
arrives, exactly as the Transformers thinker's would (``backends.transformers.speech``). The
Transformers side loads only what the talker reads: the thinker's embeddings, its audio
and vision encoders and its layers up to ``talker_config.accept_hidden_layer`` (half of
the real model's 48), then the talker and code2wav. It runs one pass over the prompt for
the states the talker conditions on. With greedy decoding on both sides the codec codes
equal stock ``generate()``'s (tests check it).

With ``batch_slots`` > 1 the talker side speaks many replies at once (a ``TalkerLoop`` over a ``TalkerBatch``,
as the Transformers backend's batched engine does), so vLLM's batched text is spoken for every user at once;
with 1 (the default on a CPU) it speaks one reply at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import replace
from typing import AsyncIterator, Callable

import media
from backends.base import Backend, BackendInfo
from backends.checkpoints import Checkpoint
from backends.conversation import PromptInputs, fit_off_loop, fit_to_context
from backends.transformers.batched.talker_loop import SpeakingRow, TalkerLoop
from backends.transformers.batched.thinker_loop import IDLE_WAIT_S
from backends.transformers.engine_thread import HEALTH_CHECK_S, EngineThread, EngineUnavailable
from backends.events import Done, Error, Event
from backends.reasoning import ReasoningSplitter
from backends.request import ChatRequest
from backends.transformers.speech import SpeechRun, Talker, TextFeed, capture_prompt_hidden
from backends.transformers.loading import load_model
from backends.transformers.model import OmniModel
from backends.transformers.options import TransformersOptions
from backends.openai.backend import OpenAIBackend, OpenAIOptions, ServerFailure
from backends.tokens import TextReply
from backends.vllm.backend import EngineInputError, VLLMEngine, VLLMOptions
from messages import Message

log = logging.getLogger(__name__)


class TalkerSide:
    """The Transformers half: a thinker cut at the talker's layer, the talker and code2wav (an ``OmniModel`` that
    serves the talker only), and the thread that runs its jobs (warm-up, each reply's speech) one after another.

    With ``batch_slots`` > 1 a reply's job there only prepares its speech (``start``) and the talker's loop
    (``loop``) speaks every reply at once; else the job speaks the whole reply (``speak``)."""

    def __init__(self, checkpoint: Checkpoint, options: TransformersOptions = TransformersOptions(), *,
                 loaded: tuple | None = None):
        self.omni = OmniModel(checkpoint, options, talker_only=True, config=loaded[0].config if loaded else None)
        if loaded is None:
            loaded = load_model(self.omni.plan, thinker_layers=self.omni.plan.config.talker_config.accept_hidden_layer)
        self.omni.take(loaded)
        self.model = self.omni.model
        self.layer = self.model.config.talker_config.accept_hidden_layer
        # The talker's static caches and CUDA graphs belong to one thread: it speaks one reply at a time, or, when
        # batching, prepares them one after another for the talker's loop.
        self.engine = EngineThread("omni-talker-side", options.stall_timeout_s)
        self.progress_at = time.monotonic()
        """When the talker's loop last made progress (a row admitted, a frame)."""
        self.loop: TalkerLoop | None = None
        """Speaks the replies together (``batch_slots`` > 1); None: one at a time, each a job of ``engine``."""
        if self.omni.talker_batch is not None:
            self.loop = TalkerLoop(self.omni.talker_batch, self._loop_progressed)

    @property
    def slots(self) -> int:
        """Replies spoken at once."""
        return self.omni.talker_batch.slots if self.loop is not None else 1

    def _loop_progressed(self) -> None:
        self.progress_at = time.monotonic()
        self.engine.progressed()  # a reply too long for a slot waits on the engine thread for the loop to empty

    @property
    def speakers(self) -> tuple[str, ...]:
        return self.omni.speakers

    @property
    def compiles(self) -> bool:
        return self.omni.compiled and self.omni.talker_decoder is not None

    def warm_up(self) -> None:
        """Compile the talker step and the code predictor's frame, capture the talker's prompt passes and
        code2wav's chunks (as CUDA graphs on a GPU), and the batched talker step and frame when batching."""
        if self.compiles:
            self.omni.compile_talker()
            self.omni.capture_batches()  # the talker's batch only: talker_only makes no thinker batch

    def prompt_states(self, inputs: dict):
        """One pass of the cut thinker over the prompt: the states the talker reads at media positions."""
        import torch

        with torch.inference_mode(), capture_prompt_hidden(self.model.thinker, self.layer) as captured:
            self.model.thinker(**inputs, use_cache=False)
        return captured["hidden"]

    def speak(self, request: ChatRequest, prompt: PromptInputs, feed: TextFeed, emit, stop: threading.Event,
              started: float) -> dict:
        """Speak the tokens arriving in ``feed`` until it is finished; returns the speech metrics."""
        inputs = self.omni.encode(prompt)
        hidden = self.prompt_states(inputs)
        speech = self.omni.speech_run(request, inputs, emit, stop, started, feed)
        with speech.running(prompt_hidden=hidden):
            feed.wait_finished(stop)
        return speech.metrics()

    def start(self, request: ChatRequest, prompt: PromptInputs, feed: TextFeed, emit, stop: threading.Event,
              started: float, finished: Callable[[], None]) -> SpeechRun:
        """Batching: prepare the speech of the tokens arriving in ``feed`` (a job of the engine thread) and hand
        it to the talker's loop, which calls ``finished()`` once it has spoken the reply or dropped it (Stop).
        A reply too long for a slot speaks here instead, alone once the loop is empty (the one-row decoder and
        the talker's rope offsets are shared; no other reply joins meanwhile: this thread adds them), then
        ``finished()``. Returns the reply's SpeechRun: its ``metrics()`` once finished."""
        if not self.loop.alive:
            raise EngineUnavailable(loop_stopped(self.loop))
        inputs = self.omni.encode(prompt)
        hidden = self.prompt_states(inputs)
        speech = self.omni.speech_run(request, inputs, emit, stop, started, feed)
        if not self.omni.talker_batch.fits(int(inputs["input_ids"].shape[1]), speech.setup.sampling.max_frames):
            try:
                while not (self.loop.idle or stop.is_set()):
                    if not self.loop.alive:
                        raise EngineUnavailable(loop_stopped(self.loop))
                    time.sleep(IDLE_WAIT_S)
                if not stop.is_set():
                    with speech.running(prompt_hidden=hidden):
                        feed.wait_finished(stop)
            finally:
                finished()
            return speech

        def send(wav) -> None:  # as BatchedReply's: the speech's clock starts at its first frame
            if speech.talker_started is None:
                speech.talker_started = time.perf_counter()
            speech.send(wav)

        def spoken() -> None:
            speech.finished_at = time.perf_counter()
            speech.frames = row.frames_made
            finished()

        row = SpeakingRow(Talker(speech.setup, feed, {"hidden": hidden}, stop), speech.vocoder, send, spoken)
        self.loop.add(row)
        return speech

    def health(self, since: float) -> Message | None:
        """Batching: None while the talker's loop serves; else what to tell a reply waiting on it since
        ``since`` (monotonic): the loop died, or it made no progress for ``stall_timeout_s``."""
        if not self.loop.alive:
            return loop_stopped(self.loop)
        stall_s = self.engine.stall_s
        if time.monotonic() - max(since, self.progress_at) > stall_s:
            return Message("engine.stuck", {"seconds": f"{stall_s:.0f}"})
        return None

    def close(self) -> None:
        self.engine.stop()
        if self.loop is not None:
            self.loop.stop()
        self.omni.release()


def loop_stopped(loop: TalkerLoop) -> Message:
    return Message("engine.thread_stopped", {"cause": loop.died or Message("engine.thread_exited")})


def place_on_gpus(engine: VLLMOptions, talker: TransformersOptions) -> tuple[VLLMOptions, TransformersOptions]:
    """With several GPUs vLLM keeps the first ones and the talker side gets the next; with one they share it."""
    import torch

    gpus = torch.cuda.device_count()
    if not gpus or talker.device != "auto":
        return engine, talker
    tp = engine.tensor_parallel_size
    if tp is None:  # the largest power of two that still leaves the talker a GPU of its own
        tp = 1
        while tp * 2 <= max(1, gpus - 1):
            tp *= 2
    return replace(engine, tensor_parallel_size=tp), replace(talker, device=f"cuda:{tp if gpus > tp else 0}")


def leave_room_for_talker(engine: VLLMOptions, talker: TransformersOptions) -> VLLMOptions:
    """On a shared GPU vLLM may take only what the loaded talker side left (minus room for its activations)."""
    import torch

    if engine.gpu_memory_utilization is not None or talker.device != "cuda:0":
        return engine
    free, total = torch.cuda.mem_get_info(0)
    return replace(engine, gpu_memory_utilization=round(free / total - 0.05, 2))


class HybridBackend(Backend):
    """Example::

        backend = HybridBackend(resolve_checkpoint("tiny"), VLLMOptions(enforce_eager=True))
        async for event in backend.stream(ChatRequest(turns=(Turn.user("Hi"),), speaker="ethan")): ...
    """

    def __init__(self, checkpoint: Checkpoint, vllm_options: VLLMOptions = VLLMOptions(),
                 talker_options: TransformersOptions = TransformersOptions(), *,
                 server: OpenAIOptions | None = None, engine: VLLMEngine | None = None,
                 talker: TalkerSide | None = None):
        """``server``: take the text from a vLLM server (``vllm serve``) instead of a vLLM in this process."""
        if server is None:
            vllm_options, talker_options = place_on_gpus(vllm_options, talker_options)
        # The talker side loads first, so a vLLM sharing its GPU can be told what is left.
        self.talker = talker or TalkerSide(checkpoint, talker_options)
        if server is not None:
            self.text_source: VLLMEngine | OpenAIBackend = OpenAIBackend(replace(server, speech="off"))
            text_device = f"vLLM server {server.api_base}"
        else:
            self.text_source = engine or VLLMEngine(checkpoint, leave_room_for_talker(vllm_options, talker_options))
            text_device = f"vLLM {self.text_source.device}"
        if not self.talker.speakers:
            self.close()
            raise ValueError(f"{checkpoint.name} has no talker, so the hybrid backend has nothing to add: "
                             "use --backend vllm for text (Thinking and Captioner checkpoints don't speak).")
        self.media_limits = vllm_options.media_limits
        if self.talker.compiles:
            self.warming_up = Message("warm_up.compiling_talker")
        if isinstance(self.text_source, OpenAIBackend):
            text_at_once = self.text_source.info.max_concurrency
        elif isinstance(self.text_source, VLLMEngine):
            text_at_once = self.text_source.options.max_num_seqs
        else:  # an engine of the caller's
            text_at_once = vllm_options.max_num_seqs
        self.info = BackendInfo(
            backend="hybrid",
            model=checkpoint.name,
            kind="instruct",
            device=f"{text_device} + Transformers {self.talker.omni.device_name}",
            speakers=self.talker.speakers,
            random_weights=checkpoint.random_weights,
            # Batching, the talker speaks as many replies at once as it has slots, and vLLM writes as many
            # as it batches. Else it speaks one reply at a time (its jobs run one after another on the talker
            # side's engine thread), though vLLM could batch the text of max_num_seqs: more users at once would
            # hold their queue slots waiting for speech that starts only after the previous reply's.
            max_concurrency=min(self.talker.slots, text_at_once) if self.talker.loop is not None else 1,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        started = time.perf_counter()
        prompt, opening = await fit_off_loop(self._fit, request)
        for event in opening:
            yield event
        if prompt is None:
            return
        request = replace(request, turns=request.turns[prompt.first_turn:])  # a server gets the same turns
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        feed = TextFeed()
        reply = TextReply(ReasoningSplitter(self.info.reasons))
        speech_metrics: dict = {}

        def emit(event: Event) -> None:  # from the talker thread
            self.talker.engine.progressed()
            if not stop.is_set():
                loop.call_soon_threadsafe(events.put_nowait, event)

        def speak() -> None:  # a job of the talker's engine thread: turns waiting for it are queued, not threads
            if stop.is_set():
                return
            try:
                speech_metrics.update(self.talker.speak(request, prompt, feed, emit, stop, started))
            except Exception as err:  # speech is extra: the text reply goes on without it
                log.exception("hybrid speech failed")
                emit(Error(Message("speech.failed_text_kept", {"cause": f"{err.__class__.__name__}: {err}"}),
                           "speech"))

        async def speak_in_turn() -> None:
            try:
                await self.talker.engine.call(speak, patient=lambda: bool(self.warming_up))
            except EngineUnavailable as err:
                events.put_nowait(Error(Message("speech.unavailable", {"cause": err.msg}), "speech"))

        spoken: asyncio.Future = loop.create_future()  # batching: the talker's loop is through with the reply

        def finished() -> None:  # from the talker's loop (or the engine thread)
            try:
                loop.call_soon_threadsafe(lambda: spoken.done() or spoken.set_result(None))
            except RuntimeError:  # the event loop closed under us
                pass

        def start() -> SpeechRun | None:  # a job of the talker's engine thread: this reply's speech prepared
            if stop.is_set():
                return None
            try:
                return self.talker.start(request, prompt, feed, emit, stop, started, finished)
            except EngineUnavailable:
                raise
            except Exception as err:  # speech is extra: the text reply goes on without it
                log.exception("hybrid speech failed")
                emit(Error(Message("speech.failed_text_kept", {"cause": f"{err.__class__.__name__}: {err}"}),
                           "speech"))
                return None

        async def speak_in_batch() -> None:
            """The reply's row speaks in the talker's loop with the others; this waits for it, holding no thread."""
            try:
                speech = await self.talker.engine.call(start, patient=lambda: bool(self.warming_up))
            except EngineUnavailable as err:
                events.put_nowait(Error(Message("speech.unavailable", {"cause": err.msg}), "speech"))
                return
            if speech is None:
                return
            since = time.monotonic()
            while not (await asyncio.wait({spoken}, timeout=HEALTH_CHECK_S))[0]:
                if (problem := self.talker.health(since)) is not None:
                    events.put_nowait(Error(Message("speech.unavailable", {"cause": problem}), "speech"))
                    return
            if not self.talker.loop.alive:  # it let its rows go as it died
                events.put_nowait(Error(Message("speech.unavailable", {"cause": loop_stopped(self.talker.loop)}),
                                        "speech"))
            speech_metrics.update(speech.metrics())

        speaking = None
        if request.return_audio and self.info.can_speak:
            speaking = asyncio.ensure_future(speak_in_batch() if self.talker.loop is not None else speak_in_turn())
        text = asyncio.create_task(self._text(request, prompt, reply, feed, events))
        try:
            while not (text.done() and (speaking is None or speaking.done()) and events.empty()):
                getter = asyncio.ensure_future(events.get())
                # Only what is still running: a finished text task in the set would end every wait at once, and
                # this loop would spin (holding the GIL the talker's thread needs) until the speech is spoken.
                waiting = {getter} | {task for task in (text, speaking) if task is not None and not task.done()}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            failure = text.result()
        finally:
            stop.set()  # a closed stream (Stop, closed tab) ends the talker…
            feed.finish()
            text.cancel()  # …and aborts the vLLM request
            if speaking is not None:
                speaking.cancel()  # a turn still waiting for the talker leaves the queue
        if failure is not None:
            yield failure
            yield Done("error")
            return
        for event in reply.flush():
            yield event
        yield reply.metrics(started, **speech_metrics)
        yield Done("length" if reply.finish_reason == "length" else "stop")

    def warm_up(self) -> None:
        """Compile the talker side before its first reply (text turns stream meanwhile; speech waits)."""
        try:
            self.talker.engine.run(self.talker.warm_up)  # on the thread that replays its CUDA graphs
        finally:
            self.warming_up = None

    def _fit(self, request: ChatRequest) -> tuple[PromptInputs, list[Message]]:
        """The conversation as it fits: the vLLM engine's context, or the talker's for a server."""
        if isinstance(self.text_source, VLLMEngine):
            return self.text_source.fit(request)
        omni = self.talker.omni
        prompt, _, notes = fit_to_context(request, omni.count_tokens, omni.context_tokens, self.media_limits)
        return prompt, notes

    async def _text(self, request: ChatRequest, prompt: PromptInputs, reply: TextReply, feed: TextFeed,
                    events: asyncio.Queue) -> Error | None:
        """The text side: text events out, token ids to the talker. Returns the error that ended it, if any."""
        try:
            async for delta in self.text_source.tokens(request, prompt):
                feed.extend(delta.token_ids)
                for event in reply.add(delta):
                    events.put_nowait(event)
        except ServerFailure as failure:
            return failure.error
        except (EngineInputError, media.MediaError) as err:
            return Error(Message("engine.refused", {"cause": err.msg}), "input")
        except Exception as err:
            log.exception("vLLM generation failed")
            return Error(Message("engine.generation_failed", {"cause": str(err)}), "generation")
        finally:
            feed.finish()
        if reply.text_seen and not reply.token_ids and request.return_audio:
            events.put_nowait(Error(Message("speech.no_token_ids"), "speech"))
        return None

    def close(self) -> None:
        self.text_source.close()
        self.talker.close()
