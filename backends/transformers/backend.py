"""Qwen3-Omni in this process through transformers: the stock path that can speak.

The model runs in one worker thread (``generate`` blocks; backends/transformers/engine_thread.py); events
cross into asyncio through a queue filled with ``loop.call_soon_threadsafe``, and a turn
waiting on a dead or stuck thread gets an error instead of waiting forever. A ``threading.Event`` checked
by stopping criteria on both the thinker and the talker is how closing the stream
stops the engine.
"""

from __future__ import annotations

import contextlib
import logging
import functools
import os
import threading
import time
from dataclasses import replace
from typing import AsyncIterator, Callable

import media
from backends.base import Backend, BackendInfo
from backends.checkpoints import Checkpoint, detect_kind
from backends.conversation import PromptInputs, fit_to_context, run_processor
from backends.transformers.encoder_cache import EncoderCache
from backends.transformers.engine_thread import HEALTH_CHECK_S, EngineThread
from backends.transformers.encoder_graphs import EncoderGraphs
from backends.transformers.kernels.fused_projections import fuse_attention_projections
from backends.transformers.loading import device_label, expected_device, load_model, model_config, weight_loading_progress
from backends.transformers.options import TransformersOptions
from backends.transformers.incremental_text import IncrementalDecoder
from backends.events import Done, Error, Event, Metrics, Notice
from backends.reasoning import ReasoningSplitter
from backends.request import ChatRequest
from backends.transformers.speech import SpeechRun, TalkerSampling, TalkerSetup, TextFeed
from backends.transformers.talker_decoder import TalkerDecoder
from backends.transformers.thinker_decoder import ThinkerDecoder, ThinkerSampling
from backends.transformers.vocoder import CapturedVocoder, StreamingVocoder
from messages import Message

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = 12.5
"""One talker step is one 80 ms codec frame."""
TALKER_PROMPT_LENGTHS = (32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048)
"""The talker's prompt passes captured when compiling: a turn's prompt (its user turns, media included,
and the assistant's header) runs in the shortest that holds it; a longer one runs eagerly."""
THINKER_PROMPT_LENGTHS = (32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
"""Likewise for the thinker's text model, per cache (those shorter than the cache)."""


CUBLAS_WORKSPACE = ":4096:2:16:8"
CUBLAS_WORKSPACE_BYTES = (4096 * 2 + 16 * 8) * 1024
"""cuBLAS's workspace per stream: 8 MiB, PyTorch's default before Hopper, instead of its 32 MiB on Hopper. The
compiled path keeps one per capture stream and thread (about ten, so 0.2 GB less at the same peak), and a
decode step's products, one token wide, need a few KiB."""

OUR_KERNELS = ("_stock_experts", "_stock_attention", "_stock_projections", "_stock_encoders")
"""The backend's attributes that put transformers' own back while ours serve (each None when not)."""

LOADING_WEIGHTS = Message("warm_up.loading_weights")
WAITING_TO_COMPILE = Message("warm_up.waiting_to_compile")
COMPILING_TALKER = Message("warm_up.compiling_talker")
COMPILING_THINKER = Message("warm_up.compiling_thinker")
"""Warm-up progress: the header shows it (``Backend.warming_up``), and a turn that waits on it says it."""


def loading_progress(share: float) -> Message:
    """The loading progress in 10 % steps: the header is read once a second, and loading takes minutes."""
    return Message("warm_up.loading_weights_percent", {"percent": 10 * int(10 * share)})


class TransformersBackend(Backend):
    """Example::

        backend = TransformersBackend(resolve_checkpoint("tiny"))
        async for event in backend.stream(ChatRequest(turns=(Turn.user("Hi"),))): print(event)
    """

    def __init__(self, checkpoint: Checkpoint, options: TransformersOptions = TransformersOptions(), *,
                 loaded: tuple | None = None):
        """``loaded``: an already built ``(model, processor)`` (benchmarks build full-size random models)."""
        self.checkpoint, self.options = checkpoint, options
        self.model = self.processor = self.talker_decoder = self.vocoder = None
        self.encoder_cache: EncoderCache | None = None
        self.thinker_decoders: list[ThinkerDecoder] = []
        """The compiled path's decoder (none: eager); a turn takes the first that holds it (benchmarks swap them)."""
        self.compiled = False
        self._stock_experts = None
        """Puts transformers' experts back in the thinker while the fused kernels serve it (fused_moe.py)."""
        self._stock_attention = None
        """Puts sdpa back in the thinker and talker while the decode-attention kernel serves them."""
        self._stock_projections = None
        """Puts transformers' attention forward (three projections) back while ours (one) serves."""
        self._stock_encoders = None
        """Puts transformers' encoders back while their padded, captured passes serve (encoder_graphs.py)."""
        self.encoder_graphs: EncoderGraphs | None = None
        self.load_error: Message | None = None
        """Why the weights could not be loaded in the background (turns answer with it)."""
        self._lock = threading.Lock()  # generate() is not re-entrant: one reply at a time
        config = loaded[0].config if loaded else model_config(checkpoint, options)
        self.info = BackendInfo(
            backend="transformers",
            model=checkpoint.name,
            kind=detect_kind(checkpoint, config),
            device=expected_device(options),
            speakers=tuple(config.talker_config.speaker_id) if config.enable_audio_output else (),
            random_weights=checkpoint.random_weights,
        )
        if not (options.load_in_background and not loaded):
            self._load(loaded or load_model(checkpoint, options))
        # One long-lived generation thread runs the jobs (loading, warm-up, replies) one after another:
        # the model and its static caches serve one reply at a time.
        self.engine = EngineThread("omni-generate", options.stall_timeout_s)
        if options.load_in_background and not loaded:
            self.warming_up = LOADING_WEIGHTS
            self.engine.submit(self._load_in_background)

    def _load(self, loaded: tuple) -> None:
        self.model, self.processor = loaded
        if self.options.encoder_cache_mb > 0:
            self.encoder_cache = EncoderCache.on(self.model.thinker, self.options.encoder_cache_mb << 20)
        if self.model.has_talker:
            # transformers 5.x: the talker's rope code reads audio_config.n_window, which only the
            # thinker config has; without it audio + image/video input with speech crashes.
            self.model.talker.config.audio_config = self.model.config.thinker_config.audio_config
        # Offloaded layers move to the GPU at every step, through hooks no CUDA graph can hold.
        offloaded = bool({"cpu", "disk"} & set(getattr(self.model, "hf_device_map", {}).values()))
        options = self.options
        self.compiled = not offloaded and (
            options.compile == "on" or (options.compile == "auto" and self.model.device.type == "cuda"))
        if self.compiled:
            if self.model.device.type == "cuda":  # before the first product: the kernel checks below
                _smaller_cublas_workspaces()
            talker_layer = self.model.config.talker_config.accept_hidden_layer if self.model.has_talker else None
            if options.fused_moe and self.model.device.type == "cuda":
                from backends.transformers.kernels.fused_moe import use_fused_decode_experts  # imports triton: GPUs only

                self._stock_experts = use_fused_decode_experts(self.model.thinker)
            if options.decode_attention and self.model.device.type == "cuda":
                from backends.transformers.kernels.decode_attention import use_decode_attention  # imports triton: GPUs only

                self._stock_attention = use_decode_attention(self.model)
            if options.fused_projections:
                self._stock_projections = fuse_attention_projections(self.model)
            self.thinker_decoders = [ThinkerDecoder(self.model.thinker, options.static_cache_tokens,
                                                    THINKER_PROMPT_LENGTHS, talker_layer)] \
                if options.static_cache_tokens else []
            self.warming_up = WAITING_TO_COMPILE
        if self.model.has_talker:
            max_frames = int(options.max_speech_seconds * FRAMES_PER_SECOND)
            self.talker_decoder = TalkerDecoder(self.model.talker, options.static_cache_tokens + max_frames + 16,
                                                TALKER_PROMPT_LENGTHS if self.compiled else ())
            if self.compiled:
                left_context = options.left_context_frames
                if left_context is None:
                    left_context = StreamingVocoder.default_left_context(self.model.code2wav)
                # The first two chunks: the first sound, and the one due before it has played, when code2wav
                # decodes it whole (a later chunk upsamples only its new frames: vocoder.decode_tail).
                self.vocoder = CapturedVocoder(self.model.code2wav, StreamingVocoder.chunk_frame_counts(
                    options.first_chunk_frames, options.chunk_frames, left_context, whole_only=True)[:2])
        self.info = replace(self.info, device=device_label(str(next(self.model.thinker.parameters()).device)))

    def _load_in_background(self) -> None:
        def loaded_share(done: int, total: int) -> None:
            self.warming_up = loading_progress(done / total)
            self.engine.progressed()

        started = time.perf_counter()
        log.info("loading %s behind the page", self.checkpoint.name)
        try:
            with weight_loading_progress(loaded_share):
                loaded = load_model(self.checkpoint, self.options)
            self.warming_up = None
            self._load(loaded)
            log.info("%s loaded in %.1f s", self.checkpoint.name, time.perf_counter() - started)
        except Exception as err:
            log.exception("loading %s failed", self.checkpoint.name)
            self.load_error = Message("engine.load_failed", {"cause": str(err)})
            self.warming_up = None

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        if self.warming_up and self.engine.health() is None:
            yield Notice(Message("engine.warming_up", {"what": self.warming_up}))
        async for event in self.engine.stream(functools.partial(self._run, request),
                                              patient=lambda: bool(self.warming_up)):
            yield event

    def _run(self, request: ChatRequest, emit: Callable[[Event], None], stop: threading.Event) -> None:
        with self._lock:
            if stop.is_set():
                return emit(Done("cancelled"))
            if self.load_error:
                emit(Error(self.load_error, "generation"))
                return emit(Done("error"))
            try:
                self._generate(request, emit, stop)
            except Exception as err:  # never let a worker die silently: the UI would wait forever
                log.exception("generation failed")
                emit(Error(Message("engine.generation_failed", {"cause": str(err)}), "generation"))
                emit(Done("error"))

    def _generate(self, request: ChatRequest, emit: Callable[[Event], None], stop: threading.Event) -> None:
        from transformers import set_seed

        started = time.perf_counter()
        try:
            _, inputs, notes = fit_to_context(request, self._count_tokens, self.context_tokens, self.options.media_limits)
        except media.MediaError as err:
            emit(Error(err.msg, "input"))
            return emit(Done("error"))
        for note in notes:
            emit(Notice(note))
        if stop.is_set():  # Stop while the media was decoded: don't start the prefill
            return emit(Done("cancelled"))
        prompt_tokens = int(inputs["input_ids"].shape[1])
        log.debug("prompt of %d tokens ready %.1f ms after the request (media decoding, the processor)", prompt_tokens,
                  (time.perf_counter() - started) * 1e3)
        if request.sampling.seed is not None:
            set_seed(request.sampling.seed)
        speech = self.speech_run(request, inputs, emit, stop, started) if request.return_audio and self.info.can_speak \
            else None
        streamer = _TextStreamer(self.processor.tokenizer, ReasoningSplitter(self.info.reasons), emit,
                                 speech.feed if speech else None)
        with speech.running() if speech else contextlib.nullcontext() as prompt_states:
            try:
                self._think(request, inputs, prompt_tokens, streamer, stop, prompt_states)
            except Exception:
                if not stop.is_set():
                    raise
        streamer.flush()
        emit(self._metrics(streamer, started, prompt_tokens, speech))
        emit(Done(_finish_reason(streamer, request, stop)))

    def speech_run(self, request: ChatRequest, inputs: dict, emit, stop: threading.Event, started: float,
                   feed: TextFeed | None = None) -> SpeechRun:
        """The talker side of one reply; ``feed`` gets the reply's token ids (else the thinker's streamer fills it)."""
        speaker = request.speaker or self.info.speakers[0]
        if speaker.lower() not in self.info.speakers:
            raise ValueError(f"Unknown speaker {speaker!r}; this checkpoint has {', '.join(self.info.speakers)}")
        options = self.options
        sampling = TalkerSampling(
            do_sample=options.talker_do_sample,
            max_frames=max(1, int(options.max_speech_seconds * FRAMES_PER_SECOND)),
            seed=request.sampling.seed,
        )
        vocoder = StreamingVocoder(self.model.code2wav, options.first_chunk_frames, options.chunk_frames,
                                   options.left_context_frames, decode=self.vocoder)
        return SpeechRun(TalkerSetup(self.model, inputs, speaker, sampling, self.talker_decoder), vocoder, emit, stop,
                         started, feed)

    @property
    def context_tokens(self) -> int:
        return self.options.max_context_tokens or self.model.config.thinker_config.text_config.max_position_embeddings

    def _count_tokens(self, prompt: PromptInputs) -> tuple[dict, int]:
        inputs = self.encode(prompt)
        return inputs, int(inputs["input_ids"].shape[1])

    def encode(self, prompt: PromptInputs) -> dict:
        """The model's inputs (token ids, features, grids) for a decoded conversation."""
        text = self.processor.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
        inputs = run_processor(self.processor, text, prompt, return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.thinker.device)
        for key, value in inputs.items():  # features follow the model's dtype (bf16 on GPU)
            if value.is_floating_point():
                inputs[key] = value.to(self.model.thinker.dtype)
        return dict(inputs, use_audio_in_video=prompt.use_audio_in_video)

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

    def _metrics(self, streamer: _TextStreamer, started: float, prompt_tokens: int, speech: SpeechRun | None) -> Metrics:
        ttft = None if streamer.first_token_at is None else streamer.first_token_at - started
        decode_s = (streamer.last_token_at or 0) - (streamer.first_token_at or 0)
        speech_metrics = speech.metrics() if speech else {}
        return Metrics(
            time_to_first_token_s=ttft,
            prompt_tokens=prompt_tokens,
            output_tokens=streamer.tokens,
            tokens_per_s=(streamer.tokens - 1) / decode_s if streamer.tokens > 1 and decode_s > 0 else None,
            total_s=time.perf_counter() - started,
            **speech_metrics,
        )

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
            for decoder in self.thinker_decoders:
                decoder.compile()
            if not all(d.compiled for d in self.thinker_decoders) and self._put_stock_back(OUR_KERNELS):
                log.warning("the thinker did not compile with our kernels; again with transformers' own")
                for decoder in self.thinker_decoders:
                    decoder.compile()
            if self.options.encoder_graphs and self.thinker_decoders:
                times["encoders_s"] = self._capture_encoders()
            request = ChatRequest(turns=(Turn.user("Say hello."),), sampling=Sampling(temperature=0, max_new_tokens=8),
                                  return_audio=self.info.can_speak)
            failures: list[str] = []
            self._run(request, lambda event: isinstance(event, Error) and failures.append(event.message),
                      threading.Event())
            if failures:
                raise RuntimeError("; ".join(failures))
            times["thinker_s"] = time.perf_counter() - started
            log.info("warm-up done: %s", {k: round(v, 1) for k, v in times.items()})
            _free_accelerator_memory()  # what compiling and capturing left cached, and no graph holds
        except Exception:
            log.exception("compiling the thinker failed; it runs eagerly (slower, same answers)")
            self.compiled, self.thinker_decoders = False, []
            self._put_stock_back(OUR_KERNELS)  # one of our kernels may be what failed
        finally:
            self.warming_up = None

    def _capture_encoders(self) -> float:
        """The encoders' padded passes installed, and captured on a GPU; returns the seconds it took."""
        import torch

        started = time.perf_counter()
        put_back = None
        # They replay just before the thinker's prompt pass, on the same thread: one pool and stream for both.
        decoder = self.thinker_decoders[-1]
        before = torch.cuda.memory_allocated() if decoder.token_in.is_cuda else 0
        try:
            graphs = EncoderGraphs(self.model.thinker)
            put_back = graphs.install()
            graphs.capture(pool=decoder.prompt_pool, stream=decoder.capture_stream)
        except Exception:
            log.exception("capturing the encoders failed; they run eagerly (slower, same answers)")
            if put_back is not None:
                put_back()
            return time.perf_counter() - started
        self._stock_encoders, self.encoder_graphs = put_back, graphs
        if before:
            log.info("the encoders' captured passes hold %.2f GB", (torch.cuda.memory_allocated() - before) / 1e9)
        return time.perf_counter() - started

    def compile_talker(self) -> dict:
        """The talker's decode steps compiled and captured, then its prompt passes and code2wav's chunks
        captured; returns seconds per stage."""
        import torch

        times = {"talker_s": self.talker_decoder.compile()}
        if not self.talker_decoder.compiled and self._put_stock_back(("_stock_attention", "_stock_projections")):
            log.warning("the talker did not compile with our attention kernel and projections; again with "
                        "transformers' own (the thinker's too)")
            times["talker_s"] += self.talker_decoder.compile()
        if self.vocoder is not None:
            before = torch.cuda.memory_allocated() if self.vocoder.device.type == "cuda" else 0
            times["code2wav_s"] = self.vocoder.capture()
            if before:
                log.info("code2wav's captured chunks hold %.2f GB", (torch.cuda.memory_allocated() - before) / 1e9)
        return times

    def _put_stock_back(self, kernels: tuple[str, ...]) -> bool:
        """Put transformers' own back where ``kernels`` (of OUR_KERNELS) serve; returns whether any did."""
        restored = False
        for name in kernels:
            put_back = getattr(self, name)
            if put_back is not None:
                put_back()
                setattr(self, name, None)
                restored = True
        if self._stock_encoders is None:
            self.encoder_graphs = None  # their buffers and graphs go too
        return restored

    def _progress(self, message: Message) -> None:
        self.warming_up = message
        self.engine.progressed()
        log.info("%s", message)

    def close(self) -> None:
        self.engine.stop()
        self.model = None  # type: ignore[assignment]
        _free_accelerator_memory()


def _smaller_cublas_workspaces() -> None:
    """CUBLAS_WORKSPACE's size for every cuBLAS workspace made from now on, unless the user set
    CUBLAS_WORKSPACE_CONFIG: through PyTorch's setter where it has one (nothing for vLLM's processes or
    deterministic mode to inherit), else through the variable, which PyTorch reads at its first product."""
    import torch

    if "CUBLAS_WORKSPACE_CONFIG" in os.environ:
        return
    setter = getattr(torch._C, "_cuda_setCublasWorkspaceSize", None)
    if setter is not None:
        setter(CUBLAS_WORKSPACE_BYTES)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE


def _finish_reason(streamer: _TextStreamer, request: ChatRequest, stop: threading.Event) -> str:
    if stop.is_set():
        return "cancelled"
    return "length" if streamer.tokens >= request.sampling.max_new_tokens else "stop"


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class _StopOnEvent:
    """A StoppingCriteria that ends generation once the stream is closed."""

    def __init__(self, stop: threading.Event):
        self.stop = stop

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.stop.is_set(), dtype=torch.bool, device=input_ids.device)


class _TextStreamer:
    """transformers streamer contract (``put``/``end``): decodes new tokens into events."""

    def __init__(self, tokenizer, splitter: ReasoningSplitter, emit: Callable[[Event], None],
                 feed: TextFeed | None = None):
        self.splitter, self.emit, self.feed = splitter, emit, feed
        self.decoder = IncrementalDecoder(tokenizer)
        self.prompt_seen = False
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None

    @property
    def tokens(self) -> int:
        return len(self.decoder.ids)

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        now = time.perf_counter()
        self.first_token_at = self.first_token_at or now
        self.last_token_at = now
        new_ids = value.reshape(-1).tolist()
        if self.feed is not None:
            self.feed.extend(new_ids)
        delta = self.decoder.add(new_ids)
        for event in self.splitter.feed(delta) if delta else ():
            self.emit(event)

    def end(self) -> None:
        """Nothing to do: SpeechRun.running() finishes the talker's feed when generate() returns."""

    def flush(self) -> None:
        """Emit what put() held back (an incomplete character, a possible tag) once generation ended."""
        for event in self.splitter.feed(self.decoder.flush()) + self.splitter.flush():
            self.emit(event)
