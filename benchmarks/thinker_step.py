"""One captured thinker decode step, kernel by kernel, on a thinker cut to a few layers (GPU, minutes not tens
of minutes: the full-size model's warm-up takes five).

    python benchmarks/thinker_step.py --layers 8                    # ours: every kernel switched on
    python benchmarks/thinker_step.py --layers 8 --ab projections   # and without the fused q/k/v product

Full-size thinker layers (random bf16 weights) with the app's decode step (backends/transformers/thinker_decoder.ThinkerDecoder:
embedding, text model, lm_head and sampling compiled and captured), ``--filled`` tokens in a ``--cache``-slot
cache. Prints wall and kernel time per step and the largest kernels, with how often each runs per layer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speech_latency import full_size_config, thinker_step_kernels  # noqa: E402

SWITCHES = ("experts", "attention", "projections")
"""Our kernels a step can run without (--ab): the fused MoE, the decode attention, the fused q/k/v product."""


def thinker_with_layers(layers: int):
    from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

    from backends.checkpoints.tiny import ensure_tiny_checkpoint

    config = full_size_config(ensure_tiny_checkpoint("instruct")).thinker_config
    config.text_config.num_hidden_layers = layers
    torch.manual_seed(0)
    with torch.device("cuda"):
        thinker = Qwen3OmniMoeThinkerForConditionalGeneration._from_config(config, dtype=torch.bfloat16,
                                                                           attn_implementation="sdpa")
        for param in thinker.parameters():  # random init leaves some expert weights as raw memory
            param.data.normal_(0, 0.02)
    return thinker.eval()


def switch_on(thinker, without: str | None) -> list:
    """Our kernels on, but ``without``; returns the functions that put transformers' own back."""
    from backends.transformers.kernels.decode_attention import use_decode_attention
    from backends.transformers.kernels.fused_moe import use_fused_decode_experts
    from backends.transformers.kernels.fused_projections import fuse_attention_projections

    undo = []
    for name, turn_on in (("experts", use_fused_decode_experts), ("attention", use_decode_attention),
                          ("projections", fuse_attention_projections)):
        if name != without:
            undo.append(turn_on(thinker))
            if undo[-1] is None:
                sys.exit(f"{name}: our kernel doesn't fit here")
    return undo


def profile_step(decoder, filled: int, steps: int, top: int) -> None:
    wall, kernels = thinker_step_kernels(decoder, steps, filled)
    total = sum(e.self_device_time_total for e in kernels) / steps
    layers = decoder.thinker.config.text_config.num_hidden_layers
    print(f"  {wall * 1e3:.0f} µs per step wall, {total:.0f} µs of kernels; {len(kernels)} kernel kinds, "
          f"{sum(e.count for e in kernels) // steps} launches per step", flush=True)
    for e in kernels[:top]:
        print(f"    {e.self_device_time_total / steps:7.1f} µs  {e.count / steps / layers:5.2f}/layer  {e.key[:90]}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--cache", type=int, default=8192)
    parser.add_argument("--filled", type=int, default=400)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--ab", choices=SWITCHES, action="append", default=[],
                        help="also a step without this one of our kernels (repeatable)")
    args = parser.parse_args()
    from backends.transformers.thinker_decoder import ThinkerDecoder

    thinker = thinker_with_layers(args.layers)
    print(f"thinker with {args.layers} of 48 layers, {args.cache}-slot cache, {args.filled} filled; "
          f"{torch.cuda.get_device_name()}", flush=True)
    for without in (None, *args.ab):
        torch._dynamo.reset()
        undo = switch_on(thinker, without)
        decoder = ThinkerDecoder(thinker, args.cache)
        seconds = decoder.compile()
        print(f"ours{'' if without is None else ' without ' + without}: compiled and captured in {seconds:.0f} s",
              flush=True)
        profile_step(decoder, args.filled, args.steps, args.top)
        del decoder
        for stock in undo:
            stock()


if __name__ == "__main__":
    main()
