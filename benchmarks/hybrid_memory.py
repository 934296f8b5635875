"""GPU memory of the hybrid backend's Transformers side vs the full Transformers model.

    python benchmarks/hybrid_memory.py --full-size     # GPU: full-size Qwen3-Omni, random bf16 weights
    python benchmarks/hybrid_memory.py                 # tiny checkpoint on the CPU: parameter counts only

Next to vLLM (which holds the whole Thinker), the hybrid backend needs only what the talker
reads. Each variant runs in its own process (so one's memory can't hide the other's) and
speaks one reply of 64 text tokens (~6 s of speech) for 10 s of audio + a 448x448 image:
- "full model": what the Transformers backend loads (thinker 48 layers, talker, code2wav),
  generating text and speech itself;
- "talker side": the hybrid's Transformers half (thinker cut at accept_hidden_layer), fed
  64 token ids as vLLM would feed them.
vLLM itself can't be installed on the lent GPU machine, so its share is not measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speech_latency import (  # noqa: E402
    SPEECH_FRAMES,
    TEXT_TOKENS,
    full_size_model,
    make_prompt_files,
    run_streaming,
)

VARIANTS = ("full model", "talker side")


def measure(variant: str, full_size: bool) -> dict:
    from backends.checkpoints import Checkpoint, resolve_checkpoint
    from backends.conversation import build_prompt_inputs
    from backends.events import AudioChunk
    from backends.hybrid.backend import TalkerSide
    from backends.request import ChatRequest, MediaPart, Sampling, Turn
    from backends.transformers.speech import TextFeed
    from backends.checkpoints.tiny import ensure_tiny_checkpoint
    from backends.transformers.backend import TransformersBackend
    from backends.transformers.loading import load_model
    from backends.transformers.plan import plan_engine
    from backends.transformers.options import TransformersOptions

    tiny_path = ensure_tiny_checkpoint("instruct")
    options = TransformersOptions(max_speech_seconds=SPEECH_FRAMES / 12.5)
    on_gpu = full_size and torch.cuda.is_available()
    from transformers import AutoConfig

    layers = AutoConfig.from_pretrained(tiny_path).talker_config.accept_hidden_layer
    if full_size:
        layers = json.loads((ROOT / "benchmarks" / "qwen3-omni-30b-a3b-instruct.config.json").read_text())[
            "talker_config"]["accept_hidden_layer"]
    cut = layers if variant == "talker side" else None
    started = time.perf_counter()
    if full_size:
        loaded = full_size_model(tiny_path, thinker_layers=cut)
    else:
        loaded = load_model(plan_engine(resolve_checkpoint("tiny"), options), thinker_layers=cut)
    model = loaded[0]
    weights_gb = torch.cuda.memory_allocated() / 1e9 if on_gpu else None
    result = {
        "variant": variant,
        "thinker layers": len(model.thinker.model.layers),
        "parameters (B)": sum(p.numel() for p in model.parameters()) / 1e9,
        "weights GB": weights_gb,
        "build s": time.perf_counter() - started,
    }
    audio, image = make_prompt_files(Path(tempfile.mkdtemp()))
    request = ChatRequest(turns=(Turn.user(MediaPart("audio", str(audio)), MediaPart("image", str(image)),
                                           "What do you hear, and what is in the picture?"),),
                          speaker="ethan", sampling=Sampling(temperature=0, max_new_tokens=TEXT_TOKENS))
    checkpoint = Checkpoint("full-size random" if full_size else "tiny", str(tiny_path), random_weights=True)
    for attempt in ("warm-up", "measured"):
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        if variant == "full model":
            backend = TransformersBackend(checkpoint, options, loaded=loaded)
            measured = run_streaming(backend, request)
            result.update({"first audio s": measured["first_audio"], "speech s": measured["audio_s"]})
        else:
            talker = TalkerSide(checkpoint, options, loaded=loaded)
            tokenizer = talker.omni.processor.tokenizer
            ids = (tokenizer.encode("The picture shows a sunny beach and the sound is a person speaking. " * 8)
                   [: TEXT_TOKENS - 1] + [model.config.im_end_token_id])
            feed, chunks, stop = TextFeed(), [], threading.Event()
            feed.extend(ids)  # vLLM is faster than the talker: the whole text is there at once
            feed.finish()
            first_audio = []

            def emit(event):
                if isinstance(event, AudioChunk):
                    first_audio.append(first_audio[0] if first_audio else time.perf_counter())
                    chunks.append(event)

            began = time.perf_counter()
            talker.speak(request, build_prompt_inputs(request), feed, emit, stop, began)
            result.update({"first audio s": first_audio[0] - began if first_audio else None,
                           "speech s": sum(c.seconds for c in chunks)})
        if on_gpu:
            result["peak GB"] = torch.cuda.max_memory_allocated() / 1e9
        print(variant, attempt, {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()},
              file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # the child process's one job
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.full_size)), flush=True)
        os._exit(0)  # skip interpreter teardown: torch's threads can abort it after speech (issue #7)
    rows = []
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant] + (["--full-size"] if args.full_size else [])
        out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    device = torch.cuda.get_device_name(0) if args.full_size and torch.cuda.is_available() else "cpu"
    print(f"\n{device}\n")
    keys = list(rows[0])[1:]
    print("| | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for row in rows:
        cells = [f"{row[k]:.2f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        print(f"| {row['variant']} | " + " | ".join(cells) + " |")
    full, side = rows
    if full.get("weights GB"):
        print(f"\nthe talker side saves {full['weights GB'] - side['weights GB']:.1f} GB of weights "
              f"({1 - side['weights GB'] / full['weights GB']:.0%}); peak {full['peak GB']:.1f} -> {side['peak GB']:.1f} GB")


if __name__ == "__main__":
    main()
