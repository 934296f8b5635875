"""Qwen3-Omni's weights in this process and what serves them: prompts encoded, one reply's speech, our kernels,
and the static-cache decoders compiled and captured.

Both engines that run the model here hold one: the Transformers backend (thinker, talker and code2wav) and the
hybrid's talker side (``talker_only``: vLLM writes the reply, so the thinker here only encodes prompts and
needs neither decode kernels, a static cache nor a batch; the talker batches as the Transformers backend's
does). Neither the engine thread nor the reply job lives here.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from backends.checkpoints import Checkpoint
from backends.conversation import PromptInputs, processor_inputs
from backends.request import ChatRequest
from backends.transformers.batched.talker import TalkerBatch
from backends.transformers.batched.thinker import ThinkerBatch
from backends.transformers.encoder_cache import EncoderCache
from backends.transformers.encoder_graphs import EncoderGraphs
from backends.transformers.kernels.fused_projections import fuse_attention_projections
from backends.transformers.options import TransformersOptions
from backends.transformers.plan import EnginePlan, device_label, plan_engine
from backends.transformers.speech import SpeechRun, TalkerSampling, TalkerSetup, TextFeed
from backends.transformers.talker_decoder import TalkerDecoder
from backends.transformers.thinker_decoder import ThinkerDecoder
from backends.transformers.vocoder import CapturedVocoder, StreamingVocoder

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
"""The holder's attributes that put transformers' own back while ours serve (each None when not)."""


class OmniModel:
    """Example::

        omni = OmniModel(resolve_checkpoint("tiny"))
        omni.take(load_model(omni.plan))
        inputs = omni.encode(build_prompt_inputs(request))
        speech = omni.speech_run(request, inputs, emit, threading.Event(), time.perf_counter())
        with speech.running():           # the talker speaks what the thinker writes
            omni.model.thinker.generate(**inputs, streamer=<something that calls speech.feed.extend>)
    """

    def __init__(self, checkpoint: Checkpoint, options: TransformersOptions = TransformersOptions(), *,
                 talker_only: bool = False, config=None):
        """Holds nothing yet (``take`` brings the weights), so an engine can start before they are loaded.
        ``talker_only``: another engine writes the replies; the thinker here only encodes their prompts.
        ``config``: the checkpoint's config, when it is at hand (a model loaded already)."""
        self.checkpoint, self.options, self.talker_only = checkpoint, options, talker_only
        self.plan: EnginePlan = plan_engine(checkpoint, options, talker_only=talker_only, config=config)
        """Where and how it runs, decided here once (plan.py)."""
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
        self.thinker_batch: ThinkerBatch | None = None
        self.talker_batch: TalkerBatch | None = None
        """Several replies decoded together (``batch_slots`` > 1; batched/): None when one at a time."""

    def take(self, loaded: tuple) -> None:
        """Serve ``loaded`` (``(model, processor)``, from ``loading.load_model``): when compiling, our kernels go
        in and the static-cache decoders are made (``compile_talker``/``compile_thinker`` compile them)."""
        self.model, self.processor = loaded
        if self.options.encoder_cache_mb > 0:
            self.encoder_cache = EncoderCache.on(self.model.thinker, self.options.encoder_cache_mb << 20)
        if self.model.has_talker:
            # transformers 5.x: the talker's rope code reads audio_config.n_window, which only the
            # thinker config has; without it audio + image/video input with speech crashes.
            self.model.talker.config.audio_config = self.model.config.thinker_config.audio_config
        options = self.options
        self.compiled = self.plan.compiled and not self.offloaded
        if self.compiled:
            self._install_kernels()
            talker_layer = self.model.config.talker_config.accept_hidden_layer if self.model.has_talker else None
            if options.static_cache_tokens and not self.talker_only:
                self.thinker_decoders = [ThinkerDecoder(self.model.thinker, options.static_cache_tokens,
                                                        THINKER_PROMPT_LENGTHS, talker_layer)]
        if self.model.has_talker:
            max_frames = int(options.max_speech_seconds * FRAMES_PER_SECOND)
            self.talker_decoder = TalkerDecoder(self.model.talker, options.static_cache_tokens + max_frames + 16,
                                                TALKER_PROMPT_LENGTHS if self.compiled else ())
            if self.compiled:
                left_context = options.left_context_frames
                if left_context is None:
                    left_context = StreamingVocoder.default_left_context(self.model.code2wav)
                # The first two chunks: the first sound, and the one due before it has played, when code2wav
                # decodes it whole; then the later chunks, which upsample only their new frames (decode_tail).
                self.vocoder = CapturedVocoder(self.model.code2wav, StreamingVocoder.chunk_frame_counts(
                    options.first_chunk_frames, options.chunk_frames, left_context, whole_only=True)[:2],
                    StreamingVocoder.tail_shapes(options.first_chunk_frames, options.chunk_frames, left_context))
        self._make_batches()

    @property
    def offloaded(self) -> bool:
        """Some layers stayed in CPU memory (accelerate found the GPUs full): they move to the GPU at every step,
        through hooks no CUDA graph can hold, so nothing is compiled or batched."""
        return bool({"cpu", "disk"} & set(getattr(self.model, "hf_device_map", {}).values()))

    @property
    def batch_slots(self) -> int:
        """Replies decoded together (1: one at a time)."""
        return 1 if self.offloaded else self.plan.batch_slots

    def _make_batches(self) -> None:
        """The slots and batched steps; a lone reply and every prompt pass use the one-row decoders.
        ``talker_only``: the talker's batch alone (vLLM batches the text)."""
        slots = self.batch_slots
        if slots <= 1:
            return
        if self.talker_only:
            self.talker_batch = TalkerBatch(self.model.talker, self.talker_decoder, slots)
            log.info("%d replies spoken at once: their talker caches hold %.2f GB", slots,
                     self.talker_batch.store.bytes / 1e9)
            return
        talker_layer = self.model.config.talker_config.accept_hidden_layer if self.model.has_talker else None
        prompts = self.thinker_decoders[-1] if self.thinker_decoders else ThinkerDecoder(
            self.model.thinker, self.options.static_cache_tokens, (), talker_layer)
        self.thinker_batch = ThinkerBatch(self.model.thinker, prompts, slots)
        if self.talker_decoder is not None:
            self.talker_batch = TalkerBatch(self.model.talker, self.talker_decoder, slots)
        log.info("%d replies at once: their caches hold %.2f GB", slots,
                 (self.thinker_batch.store.bytes + (self.talker_batch.store.bytes if self.talker_batch else 0)) / 1e9)

    def capture_batches(self) -> dict:
        """The batched steps compiled (``compile_batched_steps``) and captured as CUDA graphs, one per batch
        size; returns seconds per stage."""
        times, torch_compile = {}, self.options.compile_batched_steps
        if self.thinker_batch is not None:
            times["thinker_batch_s"] = self.thinker_batch.compile(torch_compile)
        if self.talker_batch is not None:
            times["talker_batch_s"] = self.talker_batch.compile(torch_compile)
        return times

    def _install_kernels(self) -> None:
        """Ours in place of transformers' where the options want them (the Triton ones on GPUs only)."""
        options, on_gpu = self.options, self.plan.gpu_kernels
        if on_gpu:  # before the first product: the kernel checks below
            _smaller_cublas_workspaces()
        if options.fused_moe and on_gpu and not self.talker_only:  # the thinker's decode steps only
            from backends.transformers.kernels.fused_moe import (  # imports triton: GPUs only
                FUSED_MAX_TOKENS, use_fused_decode_experts)

            self._stock_experts = use_fused_decode_experts(self.model.thinker,
                                                           max(FUSED_MAX_TOKENS, self.batch_slots))
        if options.decode_attention and on_gpu:
            from backends.transformers.kernels.decode_attention import use_decode_attention  # imports triton: GPUs only

            self._stock_attention = use_decode_attention(self.model)
        if options.fused_projections:
            self._stock_projections = fuse_attention_projections(self.model)

    @property
    def speakers(self) -> tuple[str, ...]:
        """The voices the loaded talker has (none without one)."""
        return tuple(self.model.config.talker_config.speaker_id) if self.model.has_talker else ()

    @property
    def device_name(self) -> str:
        """Where the thinker's weights are, for the header."""
        return device_label(str(next(self.model.thinker.parameters()).device))

    @property
    def context_tokens(self) -> int:
        return self.options.max_context_tokens or self.model.config.thinker_config.text_config.max_position_embeddings

    def count_tokens(self, prompt: PromptInputs) -> tuple[dict, int]:
        """``fit_to_context``'s counter: the prompt's inputs and their length."""
        inputs = self.encode(prompt)
        return inputs, int(inputs["input_ids"].shape[1])

    def encode(self, prompt: PromptInputs) -> dict:
        """The model's inputs (token ids, features, grids) for a decoded conversation."""
        return self.on_model(processor_inputs(self.processor, prompt))

    def on_model(self, inputs: dict) -> dict:
        """``processor_inputs``' CPU tensors on the thinker's device, features in its dtype (bf16 on GPU)."""
        import torch

        thinker = self.model.thinker
        return {key: value.to(thinker.device, thinker.dtype if value.is_floating_point() else value.dtype)
                if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}

    def speech_run(self, request: ChatRequest, inputs: dict, emit, stop: threading.Event, started: float,
                   feed: TextFeed | None = None) -> SpeechRun:
        """The talker side of one reply; ``feed`` gets the reply's token ids (else the thinker's streamer fills it)."""
        speakers = self.speakers
        speaker = request.speaker or speakers[0]
        if speaker.lower() not in speakers:
            raise ValueError(f"Unknown speaker {speaker!r}; this checkpoint has {', '.join(speakers)}")
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

    def compile_talker(self) -> dict:
        """The talker's decode steps compiled and captured, then its prompt passes and code2wav's chunks
        captured; returns seconds per stage."""
        import torch

        times = {"talker_s": self.talker_decoder.compile()}
        if not self.talker_decoder.compiled and self.put_stock_back(("_stock_attention", "_stock_projections")):
            log.warning("the talker did not compile with our attention kernel and projections; again with "
                        "transformers' own (the thinker's too)")
            times["talker_s"] += self.talker_decoder.compile()
        if self.vocoder is not None:
            before = torch.cuda.memory_allocated() if self.vocoder.device.type == "cuda" else 0
            times["code2wav_s"] = self.vocoder.capture()
            if before:
                log.info("code2wav's captured chunks hold %.2f GB", (torch.cuda.memory_allocated() - before) / 1e9)
        return times

    def compile_thinker(self) -> None:
        """The thinker's decoders compiled and captured; again with transformers' own kernels if ours kept one
        from compiling."""
        for decoder in self.thinker_decoders:
            decoder.compile()
        if not all(d.compiled for d in self.thinker_decoders) and self.put_stock_back(OUR_KERNELS):
            log.warning("the thinker did not compile with our kernels; again with transformers' own")
            for decoder in self.thinker_decoders:
                decoder.compile()

    def capture_encoders(self) -> float:
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

    def run_thinker_eagerly(self) -> None:
        """After compiling failed: stock generate() for every reply, with transformers' own kernels (one of ours
        may be what failed)."""
        self.compiled, self.thinker_decoders = False, []
        self.put_stock_back(OUR_KERNELS)

    def put_stock_back(self, kernels: tuple[str, ...]) -> bool:
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

    def release(self) -> None:
        """Let the weights go, and the accelerator's cached memory with them."""
        self.model = None
        free_accelerator_memory()


def free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
