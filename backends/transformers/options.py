"""How the Transformers backend loads and runs Qwen3-Omni: one frozen dataclass, shared with the hybrid's talker side."""

from __future__ import annotations

from dataclasses import dataclass

import media


@dataclass(frozen=True)
class TransformersOptions:
    audio_output: bool = True
    """False drops the talker and code2wav at load time (~10 GB less on the real model)."""
    attn_implementation: str = "auto"
    """"auto": flash_attention_2 when flash-attn imports on CUDA, else sdpa."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N"""
    max_speech_seconds: float = 300.0
    """Caps the talker (a random tiny talker rarely stops by itself)."""
    talker_do_sample: bool = True
    first_chunk_frames: int = 4
    """Codec frames (80 ms each) in the first audio chunk: small, so the first sound comes early."""
    chunk_frames: int = 25
    left_context_frames: int | None = None
    """Frames re-decoded before each chunk; default: code2wav's attention window + 8 (exact output)."""
    media_limits: media.MediaLimits = media.DEFAULT_LIMITS
    max_context_tokens: int | None = None
    """Prompt + reply; None: the model's own (65,536 for Qwen3-Omni). Longer conversations lose their oldest turns."""
    compile: str = "auto"
    """"auto": on CUDA, static KV caches + torch.compile + CUDA graphs for thinker, talker and code predictor
    (warm_up() compiles before the first turn); "on": also elsewhere (no CUDA graphs); "off": eager."""
    max_gpu_memory_gib: float | None = None
    """Cap per GPU; what doesn't fit stays in CPU memory (accelerate offload: works on small GPUs, slowly)."""
    static_cache_tokens: int = 8192
    """Prompt + reply tokens the static caches hold; a longer turn runs eagerly (dynamic cache)."""
    batch_slots: int | None = None
    """Replies decoded together, each in a cache slot of its own (``static_cache_tokens`` long; a slot of
    8,192 tokens takes about 1.05 GB on Qwen3-Omni-30B-A3B: docs/engine.md, "Many users at once"); None: 8 when compiled
    on a GPU, else 1. 1 serves one reply at a time, each in the one-row decoders. The hybrid's talker side
    batches its talker only (vLLM batches the text)."""
    prepare_processes: int = 0
    """With ``batch_slots`` > 1: worker processes that decode the replies' media and run the processor side by
    side (backends/transformers/preparing.py); 0: the engine's threads, where that Python holds the GIL. Off
    until measured on a GPU host's CPU (``benchmarks/prepare_many.py``): on this project's 2 cores it was no
    faster than threads (BENCHMARKS.md)."""
    compile_batched_steps: bool = True
    """Compiled: the batched steps (several replies at once) are torch.compiled before they are captured, once
    for every batch size (backends/transformers/batched/steps.py); False: captured with transformers' kernels as
    they are (minutes less warm-up on the 30B model, a slower step with several rows: BENCHMARKS.md)."""
    fused_moe: bool = True
    """Compiled on a GPU: the thinker's decode steps run its MoE router and experts in backends/transformers/kernels/fused_moe.py's
    Triton kernels (one token's MoE layer in about half transformers' kernel time on an H200); prompts keep
    transformers' router and grouped_mm."""
    decode_attention: bool = True
    """Compiled on a GPU: the thinker's and talker's decode steps attend in backends/transformers/kernels/decode_attention.py's Triton
    kernel, which reads only the cache slots the conversation filled (sdpa reads every slot of the static
    cache); prompts keep sdpa."""
    fused_projections: bool = True
    """Compiled: each text attention layer (thinker, talker) computes its query, key and value in one matrix
    product instead of three (backends/transformers/kernels/fused_projections.py; the same weights, viewed as one tensor)."""
    encoder_graphs: bool = True
    """Compiled: the audio and vision encoders run padded to the next of a ladder of sizes, each captured as a
    CUDA graph on a GPU (backends/transformers/encoder_graphs.py): their kernel launches were most of a turn's time to the
    first token. Longer clips and larger images run eagerly."""
    encoder_cache_mb: int = 256
    """Keeps the audio and vision encoders' outputs for files already seen (inputs and outputs up to this
    many MB, in host memory), so a conversation's later turns don't encode its earlier files again; 0: off
    (backends/transformers/encoder_cache.py)."""
    stall_timeout_s: float = 600.0
    """A reply, load or warm-up step that makes no progress (no token, no audio chunk) this long counts as hung:
    the turns waiting on it end with an error that says the app needs a restart."""
    load_in_background: bool = False
    """Load the weights on the generation thread: the constructor returns at once (the app's page opens
    while a 70 GB model loads, with progress in ``warming_up``); turns wait for the load."""
