"""Many spoken conversations at once: the batched engine against the serialized one, side by side in one run.

    python benchmarks/concurrent_speech.py                 # tiny checkpoint on this machine (CPU): a dry run
    python benchmarks/concurrent_speech.py --full-size     # GPU: full-size Qwen3-Omni with random weights

One backend, one model, one warm-up: "serialized" is today's one-reply-at-a-time engine (its jobs queue), and
"batched" the same backend with its batched engine on (``--batch-slots``). The prompt is speech_latency.py's
(10 s of audio, a 448×448 image and a question; 64 text tokens and 6 s of speech per reply). For 1, 2, 4 and 8
conversations started together, and 8 arriving 200 ms apart, per user: first audio from its own request
(p50, p90), speech RTF (talker time over audio time), thinker tok/s; and in all: text tokens per second of
wall time, the wall time, the peak GPU memory in tensors. Then 8 at once with speech off, tok/s in all.
Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.events import AudioChunk, Error, Metrics, TextDelta  # noqa: E402
from backends.request import ChatRequest, MediaPart, Sampling, Turn  # noqa: E402
from benchmarks.speech_latency import SPEECH_FRAMES, TEXT_TOKENS, full_size_model, make_prompt_files  # noqa: E402


async def one_reply(backend, request: ChatRequest, delay: float) -> dict:
    await asyncio.sleep(delay)
    started = time.perf_counter()
    first_text = first_audio = metrics = None
    errors, pieces = [], []
    async for event in backend.stream(request):
        now = time.perf_counter() - started
        if isinstance(event, TextDelta):
            pieces.append(event.text)
            first_text = now if first_text is None else first_text
        elif isinstance(event, AudioChunk) and first_audio is None:
            first_audio = now
        elif isinstance(event, Metrics):
            metrics = event
        elif isinstance(event, Error):
            errors.append(f"{event.stage}: {event.message}")
    return {"first_text": first_text, "first_audio": first_audio, "total": time.perf_counter() - started,
            "tokens": metrics.output_tokens if metrics else 0, "tok_s": metrics.tokens_per_s if metrics else None,
            "rtf": metrics.real_time_factor if metrics else None,
            "audio_s": metrics.audio_seconds if metrics else 0, "errors": errors, "text": "".join(pieces)}


def scenario(backend, request: ChatRequest, users: int, spacing_s: float = 0.0) -> tuple[list[dict], float, float]:
    """(each user's measures, wall seconds, peak GPU GB in tensors)."""
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()

    async def all_users():
        return await asyncio.gather(*(one_reply(backend, request, i * spacing_s) for i in range(users)))

    started = time.perf_counter()
    replies = asyncio.run(all_users())
    wall = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 1e9 if on_gpu else 0.0
    return replies, wall, peak


def percentile(values: list[float], share: float) -> float:
    values = sorted(v for v in values if v is not None)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(share * (len(values) - 1)))]


def row(name: str, path: str, replies: list[dict], wall: float, peak: float) -> str:
    first_audio = [r["first_audio"] for r in replies]
    first_text = [r["first_text"] for r in replies]
    rtfs = [r["rtf"] for r in replies if r["rtf"] is not None]
    speeds = [r["tok_s"] for r in replies if r["tok_s"] is not None]
    tokens = sum(r["tokens"] for r in replies)
    audio = f"{percentile(first_audio, 0.5):.3f} / {percentile(first_audio, 0.9):.3f} s" \
        if any(a is not None for a in first_audio) else "n/a"
    rtf = f"{statistics.median(rtfs):.2f} / {max(rtfs):.2f}" if rtfs else "n/a"
    speed = f"{statistics.median(speeds):.0f}" if speeds else "n/a"
    errors = sum(len(r["errors"]) for r in replies)
    return (f"| {name} | {path} | {audio} | {percentile(first_text, 0.5):.3f} s | {rtf} | {speed} | "
            f"{tokens / wall:.0f} | {wall:.2f} s | {peak:.1f} GB | {errors} |")


def benchmark_backend(full_size: bool, batch_slots: int, static_cache_tokens: int):
    """A TransformersBackend with ``batch_slots`` slots: the full-size random model (GPU) or the tiny one; each
    reply speaks speech_latency.py's SPEECH_FRAMES at most."""
    from backends.checkpoints import Checkpoint, resolve_checkpoint
    from backends.checkpoints.tiny import ensure_tiny_checkpoint
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.loading import load_model
    from backends.transformers.options import TransformersOptions
    from backends.transformers.plan import plan_engine

    options = TransformersOptions(batch_slots=batch_slots, encoder_cache_mb=0, static_cache_tokens=static_cache_tokens,
                                  max_speech_seconds=SPEECH_FRAMES / 12.5)
    if full_size:
        tiny_path = ensure_tiny_checkpoint("instruct")
        checkpoint = Checkpoint("full-size random Qwen3-Omni-30B-A3B-Instruct", str(tiny_path), random_weights=True)
        loaded = full_size_model(tiny_path)
    else:
        checkpoint = resolve_checkpoint("tiny")
        loaded = load_model(plan_engine(checkpoint, options))
    return TransformersBackend(checkpoint, options, loaded=loaded)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--batch-slots", type=int, default=8)
    parser.add_argument("--static-cache-tokens", type=int, default=8192, help="each slot's (and the one-row caches')")
    parser.add_argument("--users", default="1,2,4,8")
    parser.add_argument("--stagger-ms", type=float, default=200.0)
    parser.add_argument("--paths", default="serialized,batched")
    parser.add_argument("--pack-tokens", type=int, default=None,
                        help="prompt tokens one packed prompt pass takes (default: the engine's; 1: no packing, the "
                             "talker's prompts neither)")
    args = parser.parse_args()
    import logging

    logging.basicConfig(format="  %(message)s")
    for name in ("backends.transformers.backend", "backends.transformers.batched"):
        logging.getLogger(name).setLevel(logging.INFO)
    started = time.perf_counter()
    backend = benchmark_backend(args.full_size, args.batch_slots, args.static_cache_tokens)
    print(f"model ready in {time.perf_counter() - started:.1f} s on {backend.info.device}", flush=True)
    warm = backend.warm_up()
    print("warm-up:", {k: round(v, 1) for k, v in warm.items()}, flush=True)
    audio, image = make_prompt_files(Path(tempfile.mkdtemp()))
    request = ChatRequest(turns=(Turn.user(MediaPart("audio", str(audio)), MediaPart("image", str(image)),
                                           "What do you hear, and what is in the picture?"),),
                          speaker="ethan", sampling=Sampling(temperature=0, max_new_tokens=TEXT_TOKENS))
    batched = backend.batched
    if batched is not None and args.pack_tokens is not None:
        batched.thinker.pack_tokens = args.pack_tokens
        if batched.talker is not None:
            batched.talker.pack = args.pack_tokens > 1
    paths = {"serialized": None, "batched": batched}
    chosen = [p for p in args.paths.split(",") if p in paths]
    users = [int(n) for n in args.users.split(",")]
    lines, agreement = [], []
    for path in chosen:
        backend.batched = paths[path]
        scenario(backend, request, 2)  # warms this path (its graphs' first replays, allocator)
        alone = None
        for n in users:
            replies, wall, peak = scenario(backend, request, n)
            lines.append(row(f"{n} at once", path, replies, wall, peak))
            print(lines[-1], flush=True)
            alone = alone if alone is not None else replies[0]["text"]
            same = sum(r["text"] == alone for r in replies)
            agreement.append(f"{path}, {n} at once: {same} of {n} replies' text equal the first lone reply's")
            print(agreement[-1], flush=True)
            for reply in replies:
                for error in reply["errors"]:
                    print("  error:", error, flush=True)
        replies, wall, peak = scenario(backend, request, 8, args.stagger_ms / 1000)
        lines.append(row(f"8, {args.stagger_ms:.0f} ms apart", path, replies, wall, peak))
        print(lines[-1], flush=True)
        replies, wall, peak = scenario(backend, replace(request, return_audio=False), 8)
        lines.append(row("8 at once, speech off", path, replies, wall, peak))
        print(lines[-1], flush=True)
    backend.batched = batched
    print("\n| users | path | first audio p50 / p90 | first token p50 | speech RTF p50 / max | thinker tok/s per user "
          "(p50) | tok/s in all | wall | peak GPU mem (tensors) | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for line in lines:
        print(line)
    for line in agreement:
        print(line)
    if batched is not None:
        print(f"batched: most rows at once, thinker {batched.thinker.max_rows}, talker "
              f"{batched.talker.max_rows if batched.talker else 0}; packed prompt passes: "
              f"{batched.thinker.batch.packed}; talker prompt tokens admitted per tick, lately: "
              f"{list(batched.talker.admitted) if batched.talker else []}", flush=True)


if __name__ == "__main__":
    main()
