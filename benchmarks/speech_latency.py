"""Stock ``generate()`` vs our streaming backend on one prompt, side by side in one process.

    python benchmarks/speech_latency.py                 # tiny checkpoint on this machine (CPU)
    python benchmarks/speech_latency.py --full-size     # GPU: full-size Qwen3-Omni with random weights

The full-size model is built from ``shared/qwen3-omni-30b-a3b-instruct.config.json`` (bf16, random weights,
token ids remapped to the tiny offline tokenizer, image processor set to the real pixel limits). Prompt:
10 s of audio + a 448x448 image + a short question; 64 text tokens and ~6 s of speech. Prints a Markdown
table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.checkpoints import Checkpoint  # noqa: E402
from backends.conversation import build_prompt_inputs  # noqa: E402
from backends.events import AudioChunk, Error, Metrics, TextDelta  # noqa: E402
from backends.request import ChatRequest, MediaPart, Sampling, Turn  # noqa: E402

TEXT_TOKENS = 64
SPEECH_FRAMES = 75  # 6 s at 12.5 frames/s
REAL_CONFIG = Path(__file__).with_name("qwen3-omni-30b-a3b-instruct.config.json")  # the published config.json


def make_prompt_files(folder: Path) -> tuple[Path, Path]:
    import soundfile
    from PIL import Image

    rng = np.random.default_rng(0)
    t = np.arange(10 * 16_000) / 16_000
    speechlike = 0.3 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 3 * t)) * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    soundfile.write(folder / "ten_seconds.wav", (speechlike + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
                    16_000)
    Image.fromarray(rng.integers(0, 255, (448, 448, 3), dtype=np.uint8)).save(folder / "image.png")
    return folder / "ten_seconds.wav", folder / "image.png"


def full_size_config(tiny_path: Path):
    """The real architecture, with its text token ids moved to the tiny tokenizer's (codec ids stay)."""
    from transformers import AutoConfig

    tiny = json.loads((tiny_path / "config.json").read_text())
    real = json.loads(REAL_CONFIG.read_text())
    for section in (None, "thinker_config", "talker_config"):
        source, target = (tiny, real) if section is None else (tiny[section], real[section])
        for key in target:
            if key.endswith("token_id") and key in source and not key.startswith("codec"):
                target[key] = source[key]
    folder = Path(tempfile.mkdtemp())
    (folder / "config.json").write_text(json.dumps(real))
    return AutoConfig.from_pretrained(folder)


def full_size_model(tiny_path: Path, thinker_layers: int | None = None):
    """``(model, processor)``: full-size, random bf16 weights, on the GPU; ``thinker_layers`` cuts the thinker."""
    from transformers import Qwen3OmniMoeForConditionalGeneration, Qwen3OmniMoeProcessor

    config = full_size_config(tiny_path)
    if thinker_layers is not None:
        config.thinker_config.text_config.num_hidden_layers = thinker_layers
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3OmniMoeForConditionalGeneration._from_config(config, dtype=torch.bfloat16,
                                                                  attn_implementation="sdpa")
        for name, param in model.named_parameters():  # random init leaves some expert weights as raw memory
            if not torch.isfinite(param).all() or param.abs().max() > 1e3:
                param.data.normal_(0, 0.02)
        # Random weights pick from 152k token ids the tiny tokenizer can't spell: zero the rows it lacks so
        # greedy decoding stays inside its vocabulary (their logits become 0, below the best real one).
        tiny_vocab = json.loads((tiny_path / "config.json").read_text())["thinker_config"]["text_config"]["vocab_size"]
        model.thinker.lm_head.weight.data[tiny_vocab:] = 0
    model.eval()
    processor = Qwen3OmniMoeProcessor.from_pretrained(tiny_path)
    # The tiny processor keeps images small; the benchmark wants the real checkpoint's pixel limits.
    processor.image_processor.min_pixels, processor.image_processor.max_pixels = 128 * 32 * 32, 16384 * 32 * 32
    processor.image_processor.size = {"shortest_edge": 128 * 32 * 32, "longest_edge": 16384 * 32 * 32}
    return model, processor


def full_size_backends(tiny_path: Path, loaded=None, static_tokens: int = 8192,
                       modes: tuple[str, ...] = ("off", "auto")) -> dict:
    """TransformersBackends around one full-size random-weight model (GPU), by ``compile`` mode: "off" (eager)
    and "auto" (compiled). Their caches are the app's (300 s of speech); each reply stops after SPEECH_FRAMES."""
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.options import TransformersOptions

    loaded = loaded or full_size_model(tiny_path)
    checkpoint = Checkpoint("full-size random Qwen3-Omni-30B-A3B-Instruct", str(tiny_path), random_weights=True)
    # encoder_cache_mb=0: every turn here encodes its files (--encoder-cache-ab measures the cache)
    options = TransformersOptions(static_cache_tokens=static_tokens, encoder_cache_mb=0)
    backends = {mode: TransformersBackend(checkpoint, replace(options, compile=mode), loaded=loaded)
                for mode in modes}
    for backend in backends.values():  # after the caches are sized: replies read it
        backend.options = replace(backend.options, max_speech_seconds=SPEECH_FRAMES / 12.5)
    return backends


def tiny_backends(device: str = "cpu") -> dict:
    """Eager and compiled backends around one tiny model (``compile="on"``: inductor even on the CPU)."""
    from backends.checkpoints import resolve_checkpoint
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.loading import load_model
    from backends.transformers.options import TransformersOptions
    from backends.transformers.plan import plan_engine

    checkpoint = resolve_checkpoint("tiny")
    options = TransformersOptions(max_speech_seconds=SPEECH_FRAMES / 12.5, device=device, encoder_cache_mb=0)
    loaded = load_model(plan_engine(checkpoint, options))
    return {mode: TransformersBackend(checkpoint, replace(options, compile=mode), loaded=loaded)
            for mode in ("off", "on")}


def run_stock(backend, request: ChatRequest) -> dict:
    """transformers' own generate(): text streamed, speech only at the end."""
    from transformers import TextIteratorStreamer

    model = backend.model
    inputs = backend.encode(build_prompt_inputs(request, backend.options.media_limits))
    streamer = TextIteratorStreamer(backend.processor.tokenizer, skip_prompt=True)
    token_times: list[float] = []
    started = time.perf_counter()
    result: dict = {}

    def generate():
        result["out"] = model.generate(**inputs, speaker=request.speaker, return_audio=True,
                                       thinker_max_new_tokens=TEXT_TOKENS, thinker_min_new_tokens=TEXT_TOKENS,
                                       thinker_eos_token_id=model.config.im_end_token_id, thinker_do_sample=False,
                                       talker_max_new_tokens=SPEECH_FRAMES, thinker_streamer=streamer)

    worker = threading.Thread(target=generate)
    worker.start()
    for _ in streamer:
        token_times.append(time.perf_counter())
    worker.join()
    done = time.perf_counter()
    wav = result["out"][1].reshape(-1)
    audio_s = wav.numel() / 24_000
    thinker_end = token_times[-1] if token_times else started
    return {
        "ttft": token_times[0] - started,
        "tok_s": (len(token_times) - 1) / (thinker_end - token_times[0]),
        "first_audio": done - started,
        "total": done - started,
        "audio_s": audio_s,
        "rtf": (done - thinker_end) / audio_s if audio_s else float("nan"),
        "frames_s": audio_s * 12.5 / (done - thinker_end),  # talker + code2wav after the thinker, as stock runs
    }


def run_streaming(backend, request: ChatRequest) -> dict:
    async def collect():
        started = time.perf_counter()
        first_text = first_audio = None
        metrics = None
        async for event in backend.stream(request):
            now = time.perf_counter()
            if isinstance(event, TextDelta) and first_text is None:
                first_text = now - started
            elif isinstance(event, AudioChunk) and first_audio is None:
                first_audio = now - started
            elif isinstance(event, Metrics):
                metrics = event
            elif isinstance(event, Error):
                print("  backend error:", event.stage, event.message, flush=True)
        return first_text, first_audio, time.perf_counter() - started, metrics

    first_text, first_audio, total, metrics = asyncio.run(collect())
    return {"ttft": metrics.time_to_first_token_s, "tok_s": metrics.tokens_per_s, "first_audio": first_audio, "total": total,
            "audio_s": metrics.audio_seconds, "rtf": metrics.real_time_factor, "frames_s": metrics.talker_frames_per_s}


def greedy_outputs(backend, request: ChatRequest) -> tuple[list[int], torch.Tensor]:
    """Text token ids and codec codes of one greedy streamed reply."""
    from backends.transformers import speech

    frames: list[torch.Tensor] = []
    tokens: list[int] = []
    original_frames, original_extend = speech.Talker.frames, speech.TextFeed.extend

    def recording(self):
        for frame in original_frames(self):
            frames.append(frame.cpu())
            yield frame

    def extend(self, ids):
        tokens.extend(ids)
        original_extend(self, ids)

    speech.Talker.frames, speech.TextFeed.extend = recording, extend
    options = backend.options
    backend.options = replace(options, talker_do_sample=False)
    try:
        async def run():
            return [e async for e in backend.stream(request)]

        asyncio.run(run())
    finally:
        speech.Talker.frames, speech.TextFeed.extend = original_frames, original_extend
        backend.options = options
    return tokens, torch.stack(frames) if frames else torch.empty((0, 16), dtype=torch.long)


def agreement(eager, compiled, request: ChatRequest) -> str:
    """How far the compiled path's greedy tokens and codes agree with the eager path's."""
    eager_tokens, eager_codes = greedy_outputs(eager, request)
    tokens, codes = greedy_outputs(compiled, request)
    same_tokens = next((i for i, (a, b) in enumerate(zip(eager_tokens, tokens)) if a != b), min(len(tokens),
                                                                                                   len(eager_tokens)))
    n = min(len(codes), len(eager_codes))
    equal_frames = (codes[:n] == eager_codes[:n]).all(dim=1)
    first_diff = int((~equal_frames).nonzero()[0]) if n and not equal_frames.all() else n
    share = (codes[:n] == eager_codes[:n]).float().mean().item() if n else float("nan")
    return (f"text tokens: first {same_tokens} of {len(eager_tokens)} equal; codec codes: {share:.1%} of {n} frames x "
            f"16 equal, frames 0..{first_diff - 1} identical")


def wall_ms(call, calls: int, warm_up: int) -> float:
    """Wall time per call of ``call``, after ``warm_up`` calls (waiting for the GPU's work, where there is one)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warm_up):
        call()
    sync()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    sync()
    return (time.perf_counter() - started) / calls * 1e3


def kernels_of(call, calls: int) -> list:
    """The profiler's averages per GPU kernel over ``calls`` calls of ``call``, largest total first (GPU)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        torch.cuda.synchronize()
    return sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)


def wall_and_kernels(call, calls: int = 50, warm_up: int = 5) -> tuple[float, float]:
    """(wall ms, GPU kernel ms) per call of ``call``, after ``warm_up`` calls (GPU)."""
    wall = wall_ms(call, calls, warm_up)
    return wall, sum(e.self_device_time_total for e in kernels_of(call, calls)) / 1e3 / calls


def profile_decoder(decoder, steps: int = 50) -> dict:
    """Per call: wall time vs GPU kernel time, for one talker step and one predictor frame."""
    hidden = torch.randn_like(decoder.codec_in)
    with torch.inference_mode():
        decoder.cache.reset()
        results = {name: wall_and_kernels(call, steps)
                   for name, call in (("talker step", lambda: decoder.step(hidden, hidden)),
                                      ("predictor frame", lambda: decoder.predict(hidden, hidden, None)))}
        decoder.cache.reset()
    return results


def thinker_step_kernels(decoder, steps: int = 50, filled: int = 0) -> tuple[float, list]:
    """One captured thinker step replayed ``steps`` times from ``filled`` cached tokens (GPU): (wall ms per step,
    the profiler's averages per kernel, largest first)."""
    def from_filled():
        for layer in decoder.cache.layers:
            layer.cumulative_length.fill_(filled)

    with torch.inference_mode():
        from_filled()
        wall = wall_ms(decoder._step, steps, warm_up=5)
        from_filled()
        kernels = kernels_of(decoder._step, steps)
        decoder.cache.reset()
    return wall, kernels


def profile_thinker_step(decoder, steps: int = 50, top: int = 8) -> str:
    """One captured thinker step (GPU): wall vs kernel time, and the kernels that take the most of it."""
    wall, kernels = thinker_step_kernels(decoder, steps)
    per_step = sum(e.self_device_time_total for e in kernels) / 1e3 / steps
    biggest = ", ".join(f"{e.key[:60]} {e.self_device_time_total / steps:.0f} µs ({e.count // steps}×)"
                        for e in kernels[:top])
    return (f"{decoder.max_tokens}-slot cache: {wall:.2f} ms per step, GPU kernels {per_step:.2f} ms; "
            f"largest per step: {biggest}")


@contextmanager
def prompt_passes_eager(backend):
    """The compiled backend as it was before its prompt passes (thinker and talker) and code2wav's chunks
    were captured."""
    decoders = [backend.talker_decoder, *backend.thinker_decoders]
    prefills, vocoder = [decoder._prefills for decoder in decoders], backend.vocoder
    for decoder in decoders:
        decoder._prefills = {}
    backend.vocoder = None
    try:
        yield
    finally:
        for decoder, captured in zip(decoders, prefills):
            decoder._prefills = captured
        backend.vocoder = vocoder


@contextmanager
def encoders_eager(backend):
    """transformers' own encoders meanwhile, for every backend around the model ``backend`` (compiled) serves."""
    graphs = backend.encoder_graphs
    if backend._stock_encoders is None or graphs is None:
        yield
        return
    backend._stock_encoders()
    try:
        yield
    finally:
        backend._stock_encoders = graphs.install()


def run_streaming_prompt_passes_eager(backend, request: ChatRequest) -> dict:
    with prompt_passes_eager(backend):
        return run_streaming(backend, request)


def profile_prompt_passes(backend, prompt_tokens: int, runs: int = 10) -> list[str]:
    """Wall time of one talker prompt pass and of code2wav's chunks, captured vs eager (GPU)."""
    decoder = backend.talker_decoder
    hidden = torch.randn((1, prompt_tokens, decoder.codec_in.shape[-1]), device="cuda", dtype=decoder.codec_in.dtype)
    ids = torch.ones((1, prompt_tokens), dtype=torch.long, device="cuda")
    quantizers = backend.model.code2wav.config.num_quantizers

    lines = []
    for name, context in (("captured", nullcontext()), ("eager", prompt_passes_eager(backend))):
        with context, torch.inference_mode():
            prefill = wall_ms(lambda: decoder.prefill(hidden, ids, ids, {}), runs, warm_up=1)
            chunks = {n: wall_ms(lambda n=n: (backend.vocoder or backend.model.code2wav)(
                torch.zeros((1, quantizers, n), dtype=torch.long, device="cuda")), runs, warm_up=1) for n in (4, 105)}
        lines.append(f"{name}: talker prompt pass of {prompt_tokens} tokens {prefill:.1f} ms; code2wav 4 frames "
                     f"{chunks[4]:.1f} ms, 105 frames {chunks[105]:.1f} ms")
    return lines


def profile_prompt_stages(backend, request: ChatRequest, runs: int = 5) -> str:
    """Where the time to the first token goes (GPU, medians of ``runs``): media decoding, the processor, the
    audio and vision encoders, and the whole prompt pass into the thinker's cache, eager and with the
    captured text model."""
    thinker = backend.model.thinker
    decoder = backend.thinker_decoders[0]
    cache = decoder.cache
    stages: dict[str, list[float]] = {}

    def timed(name, call):
        torch.cuda.synchronize()
        started = time.perf_counter()
        result = call()
        torch.cuda.synchronize()
        stages.setdefault(name, []).append((time.perf_counter() - started) * 1e3)
        return result

    def whole_pass():
        cache.reset()
        return thinker(**inputs, past_key_values=cache, use_cache=True)

    with torch.inference_mode():
        for _ in range(runs + 1):
            prompt = timed("media decoding", lambda: build_prompt_inputs(request, backend.options.media_limits))
            inputs = timed("processor", lambda: backend.encode(prompt))
            for kind, context in (("captured", nullcontext()), ("eager", encoders_eager(backend))):
                with context:
                    timed(f"audio encoder, {kind}", lambda: thinker.get_audio_features(
                        inputs["input_features"], inputs["feature_attention_mask"]))
                    timed(f"vision encoder, {kind}", lambda: thinker.get_image_features(
                        inputs["pixel_values"], inputs["image_grid_thw"]))
            with encoders_eager(backend):
                timed("whole prompt pass, eager", whole_pass)
            cache.reset()
            timed("whole prompt pass, text model captured", lambda: decoder._prompt_pass(inputs, None))
        cache.reset()
    return ", ".join(f"{name} {statistics.median(times[1:]):.1f} ms" for name, times in stages.items())


def _cache_bytes(cache) -> int:
    return sum(t.numel() * t.element_size() for layer in cache.layers
               for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if isinstance(t, torch.Tensor))


def _place(frames: list[dict]) -> str:
    """Where an allocation was made: the innermost frames in transformers or torch and in this project."""
    frames = [f for f in frames if f["filename"].endswith(".py")]
    ours = next((f for f in frames if "/backends/" in f["filename"] or "/benchmarks/" in f["filename"]), None)
    theirs = next((f for f in frames if "/transformers/" in f["filename"] or "/torch/" in f["filename"]), None)
    return " ← ".join(f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in (theirs, ours) if f) \
        or "(no Python frame)"


def _largest(by_place: dict[str, int], top: int) -> list[str]:
    return [f"  {size / 1e6:8.1f} MB  {place}" for place, size in sorted(by_place.items(), key=lambda i: -i[1])[:top]]


def record_memory_history() -> int:
    """Start recording the GPU allocator's events (with Python stacks); returns the bytes allocated before."""
    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(max_entries=5_000_000, stacks="python")
    return torch.cuda.memory_allocated()


def memory_kept(backend, recorded_from: int, top: int = 16) -> list[str]:
    """What stays allocated (GPU) once the warm-up is done: the weights, the static caches, and the rest, made
    since record_memory_history() returned ``recorded_from`` (the model loaded), by where. Stops the recording."""
    import bisect

    model = backend.model
    owned = [t for t in (*model.parameters(), *model.buffers()) if t.is_cuda]
    weights = sum(t.numel() * t.element_size() for t in owned)
    caches = [decoder.cache for decoder in backend.thinker_decoders]
    thinker_caches = sum(_cache_bytes(cache) for cache in caches)
    talker = backend.talker_decoder
    if talker:
        caches += [talker.cache, talker.predictor_cache]
    talker_caches = _cache_bytes(talker.cache) + _cache_bytes(talker.predictor_cache) if talker else 0
    owned += [t for cache in caches for layer in cache.layers for t in (getattr(layer, "keys", None),
                                                                          getattr(layer, "values", None))
              if isinstance(t, torch.Tensor)]
    starts = sorted(t.data_ptr() for t in owned)
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated()
    segments = torch.cuda.memory._snapshot()["segments"]
    torch.cuda.memory._record_memory_history(enabled=None)
    by_place: dict[str, int] = {}
    for block in (b for segment in segments for b in segment["blocks"] if b["state"] == "active_allocated"):
        holds_owned = bisect.bisect_left(starts, block["address"]) < bisect.bisect_left(
            starts, block["address"] + block["size"])  # e.g. the fused q/k/v weights, made after the load
        if block.get("frames") and not holds_owned:
            place = _place(block["frames"])
            by_place[place] = by_place.get(place, 0) + block["size"]
    other = allocated - weights - thinker_caches - talker_caches
    return [f"reserved by the allocator (graph pools and cached blocks included): "
            f"{torch.cuda.memory_reserved() / 1e9:.2f} GB after the warm-up",
            f"the model loaded: {recorded_from / 1e9:.2f} GB; after the backend's start and warm-up "
            f"{allocated / 1e9:.2f} GB: weights {weights / 1e9:.2f}, thinker caches {thinker_caches / 1e9:.2f}, "
            f"talker + predictor caches {talker_caches / 1e9:.2f}, other {other / 1e9:.3f}, of which made since "
            f"the load {sum(by_place.values()) / 1e9:.3f} GB:", *_largest(by_place, top)]


def memory_at_peak(backend, request: ChatRequest, top: int = 12) -> list[str]:
    """One reply with the allocator's events recorded (GPU): its peak, and the allocations made during the reply
    that were live then, by where they were made."""
    device = torch.cuda.current_device()
    before = record_memory_history()
    torch.cuda.reset_peak_memory_stats()
    try:
        run_streaming(backend, request)
        torch.cuda.synchronize()
        events = torch.cuda.memory._snapshot()["device_traces"][device]
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    peak = torch.cuda.max_memory_allocated()

    def replay(until: int | None = None) -> tuple[int, int, dict]:
        live, current, highest, at = {}, before, before, -1
        for index, event in enumerate(events[:until]):
            if event["action"] == "alloc":
                live[event["addr"]] = event
                current += event["size"]
            elif event["action"] == "free_completed" and event["addr"] in live:
                current -= live.pop(event["addr"])["size"]
            if current > highest:
                highest, at = current, index
        return highest, at, live

    highest, at, _ = replay()
    by_place: dict[str, int] = {}
    for event in replay(at + 1)[2].values():
        place = _place(event.get("frames", []))
        by_place[place] = by_place.get(place, 0) + event["size"]
    return [f"before the reply {before / 1e9:.2f} GB; its peak {peak / 1e9:.2f} GB (replayed from the allocator's "
            f"events: {highest / 1e9:.2f}); made during the reply and live then:", *_largest(by_place, top)]


def stop_latency(backend, request: ChatRequest) -> float:
    """Seconds from closing the stream (Stop) to the engine being free, during speech."""

    async def stop_after_first_audio():
        stream = backend.stream(request)
        async for event in stream:
            if isinstance(event, AudioChunk):
                break
        await stream.aclose()
        return time.perf_counter()

    stopped = asyncio.run(stop_after_first_audio())
    backend._lock.acquire()
    backend._lock.release()
    return time.perf_counter() - stopped


def thinker_alone(backend, request: ChatRequest, profile_tokens: int = 0) -> str:
    """Thinker decode speed with speech off; with ``profile_tokens``, GPU kernel time per token too."""
    text_only = replace(request, return_audio=False)
    measured = run_streaming(backend, text_only)
    line = f"thinker alone (speech off): TTFT {measured['ttft']:.3f} s, {measured['tok_s']:.1f} tok/s"
    if profile_tokens:
        from torch.profiler import ProfilerActivity, profile

        short = replace(text_only, sampling=replace(text_only.sampling, max_new_tokens=profile_tokens))
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            started = time.perf_counter()
            run_streaming(backend, short)
            wall = time.perf_counter() - started
        kernels = sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)
        total = sum(e.self_device_time_total for e in kernels) / 1e3
        top = ", ".join(f"{e.key[:40]} {e.self_device_time_total / 1e3:.0f} ms" for e in kernels[:4])
        line += (f"; profiled reply of {profile_tokens} tokens: wall {wall * 1e3:.0f} ms, GPU kernels {total:.0f} ms "
                 f"(top: {top})")
    return line


def thinker_by_cache(backend, request: ChatRequest, profile_tokens: int) -> list[str]:
    """``thinker_alone`` once per thinker cache of ``backend`` (the others set aside): side by side, one run."""
    decoders = backend.thinker_decoders
    lines = []
    try:
        for decoder in decoders:
            backend.thinker_decoders = [decoder]
            lines.append(f"{decoder.max_tokens}-slot cache only, {thinker_alone(backend, request, profile_tokens)}")
    finally:
        backend.thinker_decoders = decoders
    return lines


def alternating(backend, request: ChatRequest, variants: dict, rounds: int = 2) -> list[str]:
    """``thinker_alone`` for each of ``variants`` (name → a function that sets the backend up for it), in turn."""
    lines = []
    for round_ in range(rounds):
        for name, set_up in variants.items():
            set_up()
            lines.append(f"round {round_ + 1}, {name}: {thinker_alone(backend, request)}")
    return lines


def thinker_against_stock(backend, request: ChatRequest, cache: int, kernel: str, turn_on,
                          names: tuple[str, str]) -> list[str]:
    """Thinker alone (speech off) through the backend's decoder ``thinker_decoders[cache]``, with one of our
    kernels, and through a second one of its size compiled with transformers' own, alternating in one run (GPU).
    ``kernel``: the backend's attribute holding the function that puts transformers' own back; ``turn_on(model)``
    turns ours on again."""
    from backends.transformers.thinker_decoder import ThinkerDecoder

    decoders = backend.thinker_decoders
    if getattr(backend, kernel) is None or not decoders:
        return [f"{names[0]} is off here (no GPU, or the model doesn't fit it)"]
    ours = decoders[cache]
    getattr(backend, kernel)()  # the stock decoder's step is traced with transformers' own
    stock = ThinkerDecoder(backend.model.thinker, ours.max_tokens)  # its prompt pass runs eagerly: tok/s only
    seconds = stock.compile()
    setattr(backend, kernel, turn_on(backend.model))

    def only(decoder):
        return lambda: setattr(backend, "thinker_decoders", [decoder])
    try:
        return [f"{names[1]} thinker step ({ours.max_tokens}-slot cache) compiled in {seconds:.0f} s",
                *alternating(backend, request, {names[0]: only(ours), names[1]: only(stock)})]
    finally:
        backend.thinker_decoders = decoders


def thinker_by_experts(backend, request: ChatRequest) -> list[str]:
    """The fused MoE kernels vs transformers' grouped_mm (thinker_against_stock), in the smallest cache."""
    from backends.transformers.kernels.fused_moe import use_fused_decode_experts

    return thinker_against_stock(backend, request, 0, "_stock_experts",
                                 lambda model: use_fused_decode_experts(model.thinker), ("fused MoE", "grouped_mm"))


def thinker_by_attention(backend, request: ChatRequest) -> list[str]:
    """The decode-attention kernel vs transformers' sdpa (thinker_against_stock), in the largest cache."""
    from backends.transformers.kernels.decode_attention import use_decode_attention

    return thinker_against_stock(backend, request, -1, "_stock_attention", use_decode_attention,
                                 ("decode-attention kernel", "sdpa"))


def thinker_by_overlap(backend, request: ChatRequest) -> list[str]:
    """Thinker alone (speech off) launching each step before the host reads the last token, and one step at a
    time, alternating in one run."""
    def overlapping(overlap: bool):
        return lambda: [setattr(decoder, "overlap", overlap) for decoder in backend.thinker_decoders]
    try:
        return alternating(backend, request, {"a step ahead of the host": overlapping(True),
                                              "one step at a time": overlapping(False)})
    finally:
        overlapping(True)()


def second_turn_by_encoder_cache(backend, request: ChatRequest) -> list[str]:
    """A second turn (the first turn's audio and image, its reply, and a new image), speech off: every file
    encoded, and only the new one encoded (the first turn's from the encoder cache); alternating, one run."""
    from PIL import Image

    from backends.transformers.encoder_cache import EncoderCache

    new_image = Path(tempfile.mkdtemp()) / "second.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (448, 448, 3), dtype=np.uint8)).save(new_image)
    second = replace(request, turns=request.turns + (Turn.assistant("It is noise, and a tone."),
                                                     Turn.user(MediaPart("image", str(new_image)), "And this one?")))
    cache = EncoderCache.on(backend.model.thinker, 256 << 20)

    def first_turn_seen():
        cache.clear()
        run_streaming(backend, replace(request, return_audio=False))

    try:
        return alternating(backend, second, {"second turn, every file encoded": cache.clear,
                                             "second turn, earlier files from the encoder cache": first_turn_seen})
    finally:
        cache.max_bytes = 0  # keeps nothing from now on: later measurements encode every file
        cache.clear()


def concurrent_turns(backend, request: ChatRequest, sessions: int) -> float:
    """Aggregate thinker tok/s when ``sessions`` turns (speech off) arrive at once."""
    text_only = replace(request, return_audio=False)

    async def one():
        tokens = 0
        async for event in backend.stream(text_only):
            if isinstance(event, Metrics):
                tokens = event.output_tokens
        return tokens

    async def all_at_once():
        return await asyncio.gather(*(one() for _ in range(sessions)))

    started = time.perf_counter()
    tokens = sum(asyncio.run(all_at_once()))
    return tokens / (time.perf_counter() - started)


def print_table(results: dict[str, list[dict]], peaks: dict[str, float], warm_up: dict[str, float]) -> None:
    print("\n| path | TTFT | thinker tok/s | talker frames/s | first audio | whole reply | speech | speech RTF | "
          "peak GPU mem | warm-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        peak = f"{peaks[name]:.1f} GB" if name in peaks else "n/a"
        frames = f"{med['frames_s']:.1f}" if med.get("frames_s") else "n/a"
        print(f"| {name} | {med['ttft']:.3f} s | {med['tok_s']:.1f} | {frames} | {med['first_audio']:.2f} s | "
              f"{med['total']:.2f} s | {med['audio_s']:.2f} s | {med['rtf']:.2f} | {peak} | "
              f"{warm_up.get(name, 0):.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--device", default="cpu", help="tiny model only: cpu | cuda")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--skip-eager", action="store_true", help="only the compiled path (and agreement)")
    parser.add_argument("--timeline", action="store_true", help="log when the talker starts and first audio leaves")
    parser.add_argument("--static-tokens", type=int, default=8192, help="the compiled path's static cache size")
    parser.add_argument("--thinker-only", action="store_true", help="only the compiled thinker's speed (speech off)")
    parser.add_argument("--overlap-ab", action="store_true",
                        help="also the thinker alone with each step launched ahead of the host, and one at a time")
    parser.add_argument("--fused-moe-ab", action="store_true",
                        help="also the thinker alone with transformers' grouped_mm experts beside the fused kernels")
    parser.add_argument("--decode-attention-ab", action="store_true",
                        help="also the thinker alone with sdpa's decode attention beside our kernel")
    parser.add_argument("--encoder-cache-ab", action="store_true",
                        help="also a second turn's TTFT with its earlier files encoded again and from the cache")
    parser.add_argument("--memory-at-peak", action="store_true",
                        help="also one reply with the GPU allocator's history: what its peak memory is made of")
    parser.add_argument("--prompt-passes-eager", action="store_true",
                        help="also the compiled path with its prompt passes and code2wav chunks eager")
    args = parser.parse_args()
    comparisons = [compare for wanted, compare in ((args.overlap_ab, thinker_by_overlap),
                                                   (args.fused_moe_ab, thinker_by_experts),
                                                   (args.decode_attention_ab, thinker_by_attention),
                                                   (args.encoder_cache_ab, second_turn_by_encoder_cache)) if wanted]
    import logging

    logging.basicConfig(format="  %(message)s")
    for name in ("backends.transformers.backend", "backends.transformers.thinker_decoder",  # warm-up progress,
                 "backends.transformers.talker_decoder", "backends.transformers.cuda_graphs",  # graph memory
                 "backends.transformers.model"):
        logging.getLogger(name).setLevel(logging.INFO)
    if args.timeline:
        for name in ("backends.transformers.speech", "backends.transformers.thinker_decoder",  # first token, audio
                     "backends.transformers.talker_decoder", "backends.transformers.cuda_graphs",
                     "backends.transformers.backend"):
            logging.getLogger(name).setLevel(logging.DEBUG)

    from backends.checkpoints.tiny import ensure_tiny_checkpoint

    tiny_path = ensure_tiny_checkpoint("instruct")
    started = time.perf_counter()
    loaded = full_size_model(tiny_path) if args.full_size else None
    # From here on the allocator's events say who made what the weights don't hold (memory_kept).
    recorded_from = record_memory_history() if loaded is not None and args.memory_at_peak else None
    # The eager backend's own talker cache would count in the compiled path's memory: it is made after the warm-up
    # (memory_kept), when an eager path needs it, else only for the agreement check after the memory is measured.
    backends = full_size_backends(tiny_path, loaded, static_tokens=args.static_tokens, modes=("auto",)) \
        if args.full_size else tiny_backends(args.device)
    compiled = backends.get("auto") or backends["on"]

    def eager():
        if "off" not in backends:
            backends.update(full_size_backends(tiny_path, loaded, static_tokens=args.static_tokens, modes=("off",)))
        return backends["off"]

    print(f"model ready in {time.perf_counter() - started:.1f} s on {compiled.info.device}", flush=True)
    on_gpu = compiled.model.device.type == "cuda"
    if on_gpu:
        print(f"memory, reserved by the allocator before the warm-up: {torch.cuda.memory_reserved() / 1e9:.2f} GB",
              flush=True)
    warm = compiled.warm_up()
    if recorded_from is not None:
        for line in memory_kept(compiled, recorded_from):
            print("memory,", line, flush=True)
    print("warm-up:", {k: round(v, 1) for k, v in warm.items()}, flush=True)
    audio, image = make_prompt_files(Path(tempfile.mkdtemp()))
    request = ChatRequest(turns=(Turn.user(MediaPart("audio", str(audio)), MediaPart("image", str(image)),
                                           "What do you hear, and what is in the picture?"),),
                          speaker="ethan", sampling=Sampling(temperature=0, max_new_tokens=TEXT_TOKENS))
    prompt = build_prompt_inputs(request, compiled.options.media_limits)
    encode_started = time.perf_counter()
    print("prompt tokens:", compiled.encode(prompt)["input_ids"].shape[1],
          f"(media decoding + processor {time.perf_counter() - encode_started:.3f} s)", flush=True)
    if on_gpu:
        print("profile, time to first token:", profile_prompt_stages(compiled, request), flush=True)
    if args.thinker_only:
        for line in thinker_by_cache(compiled, request, profile_tokens=32 if on_gpu else 0):
            print("compiled,", line, flush=True)
        for compare in comparisons:
            for line in compare(compiled, request):
                print("compiled,", line, flush=True)
        if on_gpu:
            for decoder in compiled.thinker_decoders:
                print("profile thinker step,", profile_thinker_step(decoder), flush=True)
        return
    def eager_encoders(runner):  # the eager paths share the compiled backend's model: its encoders too
        def run(backend, request):
            with encoders_eager(compiled):
                return runner(backend, request)
        return run

    paths = {"our loop, compiled": (run_streaming, compiled)}
    if not args.skip_eager:
        stock = {} if args.skip_stock else {"stock generate(), eager": (eager_encoders(run_stock), eager())}
        paths = {**stock, "our loop, eager": (eager_encoders(run_streaming), eager()), **paths}
    if args.prompt_passes_eager:
        paths["compiled, prompt passes + code2wav uncaptured"] = (run_streaming_prompt_passes_eager, compiled)
    results: dict[str, list[dict]] = {name: [] for name in paths}
    peaks: dict[str, float] = {}
    reserved: dict[str, float] = {}
    """The allocator's segments at their peak: what the tensors hold (peaks) plus what it keeps cached and the
    CUDA graphs' pools keep for their replays, which no tensor of ours holds."""
    for run in range(args.runs + 1):  # the first round warms up every path
        for name, (runner, backend) in paths.items():
            if on_gpu:
                torch.cuda.reset_peak_memory_stats()
            measured = runner(backend, request)
            if on_gpu:
                peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated() / 1e9)
                reserved[name] = max(reserved.get(name, 0), torch.cuda.max_memory_reserved() / 1e9)
            print(name, "warm-up" if run == 0 else f"run {run}",
                  {k: None if v is None else round(v, 3) for k, v in measured.items()}, flush=True)
            if run:
                results[name].append(measured)
    print_table(results, peaks, {"our loop, compiled": sum(warm.values())})
    for name, gigabytes in reserved.items():
        print(f"{name}: peak GPU memory reserved by the allocator {gigabytes:.2f} GB (tensors: {peaks[name]:.2f})",
              flush=True)
    if on_gpu:
        free, total = torch.cuda.mem_get_info()
        print(f"the device's memory in use after the replies: {(total - free) / 1e9:.2f} GB (CUDA context and "
              f"libraries included)", flush=True)
    if on_gpu and args.memory_at_peak:
        for line in memory_at_peak(compiled, request):
            print("memory,", line, flush=True)
    for name, backend in (("eager", backends.get("off")), ("compiled", compiled)):
        if name in " ".join(paths):
            print(f"stop during speech ({name}) frees the engine in {stop_latency(backend, request) * 1000:.0f} ms",
                  flush=True)
    print("greedy, compiled vs eager loop:", agreement(eager(), compiled, request), flush=True)
    if "eager" in " ".join(paths):
        print(f"eager: {thinker_alone(eager(), request, profile_tokens=32 if on_gpu else 0)}", flush=True)
    for line in thinker_by_cache(compiled, request, profile_tokens=32 if on_gpu else 0):
        print("compiled,", line, flush=True)
    for compare in comparisons:
        for line in compare(compiled, request):
            print("compiled,", line, flush=True)
    for sessions in (1, 2, 4):
        print(f"compiled, {sessions} turns at once (speech off): "
              f"{concurrent_turns(compiled, request, sessions):.1f} tok/s in all", flush=True)
    if on_gpu:
        for line in profile_prompt_passes(compiled, prompt_tokens=360):
            print("profile", line, flush=True)
        for decoder in compiled.thinker_decoders:
            print("profile thinker step,", profile_thinker_step(decoder), flush=True)
        for name, backend in (("eager", backends.get("off")), ("compiled", compiled)):
            if name == "eager" and args.skip_eager:
                continue
            for what, (wall, kernel) in profile_decoder(backend.talker_decoder).items():
                print(f"profile {name} {what}: {wall:.2f} ms per call, GPU kernels {kernel:.2f} ms", flush=True)
        free, total = torch.cuda.mem_get_info()
        print(f"peak GPU memory of the process: {torch.cuda.max_memory_allocated() / 1e9:.1f} GB in tensors, "
              f"{torch.cuda.max_memory_reserved() / 1e9:.1f} GB reserved; the device's in use now "
              f"{(total - free) / 1e9:.1f} GB (CUDA context and libraries included)", flush=True)


if __name__ == "__main__":
    main()
