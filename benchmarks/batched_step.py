"""The thinker's batched decode step against its one-row step, on a thinker cut to a few layers (GPU, minutes).

    python benchmarks/batched_step.py --layers 8            # GPU: full-size layers, random bf16 weights
    python benchmarks/batched_step.py --tiny                # this machine (CPU): a dry run of the script

With many users at once (BENCHMARKS.md, 2026-12-05) a batched step took about 16 ms whatever the number of rows,
against 5.7 ms for the one-row compiled step. This measures, per batch size, the step eager, captured as a CUDA
graph of transformers' kernels (what the engine runs today), and torch.compile'd then captured, with the kernel
launches per step: whether the cost is per kernel (compiling fuses it away) or per row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speech_latency import kernels_of, wall_ms  # noqa: E402


def launches(call, calls: int) -> int:
    """GPU kernels launched per call (0 on the CPU)."""
    if not torch.cuda.is_available():
        return 0
    return sum(e.count for e in kernels_of(call, calls)) // calls


def tiny_thinker():
    from transformers import Qwen3OmniMoeForConditionalGeneration

    from backends.checkpoints.tiny import ensure_tiny_checkpoint

    model = Qwen3OmniMoeForConditionalGeneration.from_pretrained(ensure_tiny_checkpoint("instruct"),
                                                                 dtype=torch.float32)
    return model.thinker.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--cache", type=int, default=4096)
    parser.add_argument("--filled", type=int, default=600)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sizes", default="1,2,4,8")
    parser.add_argument("--compile-sizes", default="2,8", help="batch sizes also torch.compile'd (minutes each)")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    from backends.transformers.batched.thinker import ThinkerBatch
    from backends.transformers.thinker_decoder import ThinkerDecoder

    sizes = [int(s) for s in args.sizes.split(",")]
    if args.tiny:
        thinker = tiny_thinker()
    else:
        from benchmarks.thinker_step import switch_on, thinker_with_layers

        thinker = thinker_with_layers(args.layers)
        switch_on(thinker, None)
    print(f"thinker with {thinker.config.text_config.num_hidden_layers} layers, {args.cache}-token slots, "
          f"{args.filled} filled; {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}",
          flush=True)
    decoder = ThinkerDecoder(thinker, args.cache)
    print(f"one-row decoder compiled and captured in {decoder.compile():.0f} s", flush=True)
    with torch.inference_mode():
        def one_row():
            for layer in decoder.cache.layers:
                layer.cumulative_length.fill_(args.filled)
            return decoder._step()

        one = wall_ms(one_row, args.steps, warm_up=3)
        print(f"one row in the one-row decoder (a lone reply today): {one:.2f} ms a step, "
              f"{launches(one_row, 5)} kernel launches", flush=True)

    batch = ThinkerBatch(thinker, decoder, slots=max(sizes), batch_sizes=tuple(sizes))

    def run(kind: str, steps: dict) -> None:
        for size in sizes:
            if size not in steps:
                continue

            def step(size=size):
                batch.store.lengths.fill_(args.filled)
                return steps[size]()

            batch.active.fill_(1)
            wall = wall_ms(step, args.steps, warm_up=3)
            print(f"| batched, {kind} | {size} | {wall:.2f} ms ({wall / size:.2f} ms a row) | "
                  f"{launches(step, 5)} |", flush=True)

    print("| step | rows | wall per step | kernel launches per step |\n|---|---|---|---|", flush=True)
    with torch.inference_mode():
        run("eager", {size: (lambda s=size: batch._step_fn(s)) for size in sizes})
        seconds = batch.compile()
        print(f"(captured in {seconds:.1f} s)", flush=True)
        run("captured (today)", batch._steps)
        compile_sizes = [int(s) for s in args.compile_sizes.split(",") if s]
        if compile_sizes:
            torch._dynamo.reset()
            batch.batch_sizes = sorted(set(compile_sizes))
            seconds = batch.compile(torch_compile=True)
            print(f"(torch.compile'd and captured in {seconds:.0f} s)", flush=True)
            run("torch.compile + captured", {s: batch._steps[s] for s in compile_sizes if s in batch._steps})


if __name__ == "__main__":
    main()
