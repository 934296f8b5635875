"""The full model on a GPU too small for it: what ``--max-gpu-memory`` (accelerate CPU offload) gives.

    python benchmarks/offload.py --gpu-gib 48      # GPU: full-size Qwen3-Omni, random bf16 weights

Builds the full-size random model on the GPU (as benchmarks/speech_latency.py does), then lets
accelerate keep only ``--gpu-gib`` of it there and move the rest to CPU memory, the way
``load_model`` places a real checkpoint with ``--max-gpu-memory``. Measures a text reply (speech
off): time to first token, tokens/s, peak GPU memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.checkpoints import Checkpoint  # noqa: E402
from backends.events import Metrics  # noqa: E402
from backends.request import ChatRequest, MediaPart, Sampling, Turn  # noqa: E402
from benchmarks.speech_latency import full_size_model, make_prompt_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu-gib", type=float, default=48)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()

    from accelerate import dispatch_model, infer_auto_device_map

    from backends.checkpoints.tiny import ensure_tiny_checkpoint
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.plan import memory_caps
    from backends.transformers.options import TransformersOptions

    tiny_path = ensure_tiny_checkpoint("instruct")
    model, processor = full_size_model(tiny_path)
    started = time.perf_counter()
    caps = memory_caps(args.gpu_gib)
    model.to("cpu")  # as if loaded from disk: accelerate then brings its share back to the GPU
    torch.cuda.empty_cache()
    device_map = infer_auto_device_map(model, max_memory=caps, no_split_module_classes=model._no_split_modules)
    model = dispatch_model(model, device_map=device_map, offload_buffers=True)  # rotary buffers too
    model.hf_device_map = device_map
    torch.cuda.empty_cache()
    on_cpu = sum(1 for device in device_map.values() if device == "cpu")
    print(f"dispatched in {time.perf_counter() - started:.0f} s: {on_cpu} of {len(device_map)} modules in CPU memory, "
          f"{torch.cuda.memory_allocated() / 2**30:.1f} GiB on the GPU", flush=True)
    checkpoint = Checkpoint("full-size random Qwen3-Omni (offloaded)", str(tiny_path), random_weights=True)
    backend = TransformersBackend(checkpoint, TransformersOptions(), loaded=(model, processor))
    assert not backend.compiled, "an offloaded model must run eagerly"
    audio, image = make_prompt_files(Path(tempfile.mkdtemp()))
    request = ChatRequest(turns=(Turn.user(MediaPart("audio", str(audio)), MediaPart("image", str(image)),
                                           "What do you hear, and what is in the picture?"),),
                          sampling=Sampling(temperature=0, max_new_tokens=args.tokens), return_audio=False)

    async def reply() -> Metrics:
        return [event async for event in backend.stream(request) if isinstance(event, Metrics)][0]

    for label in ("warm-up", "measured"):
        torch.cuda.reset_peak_memory_stats()
        metrics = asyncio.run(reply())
        print(f"{label}: TTFT {metrics.time_to_first_token_s:.2f} s, {metrics.tokens_per_s:.2f} tok/s over "
              f"{metrics.output_tokens} tokens, peak GPU {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
              flush=True)
    os._exit(0)  # skip the interpreter's teardown of the talker threads (it can abort after CUDA work)


if __name__ == "__main__":
    main()
