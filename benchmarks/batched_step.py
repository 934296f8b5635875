"""The thinker's batched decode step against its one-row step, on a thinker cut to a few layers (GPU, minutes).

    python benchmarks/batched_step.py --layers 8            # GPU: full-size layers, random bf16 weights
    python benchmarks/batched_step.py --tiny                # this machine (CPU): a dry run of the script

With many users at once (BENCHMARKS.md, 2026-12-05) a batched step took about 16 ms whatever the number of rows,
against 5.7 ms for the one-row compiled step. This measures, per batch size, the step eager, captured as a CUDA
graph of transformers' kernels, torch.compile'd once for every size (the batch symbolic: the engine's way) then
captured, and compiled for one size alone (the batch a constant) then captured, with the kernel launches per step:
what compiling saves, and what a symbolic batch costs against a constant one.
"""

from __future__ import annotations

import argparse
import sys
import time
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
    parser.add_argument("--static-compile-sizes", default="8",
                        help="batch sizes also compiled each on its own (the batch not symbolic: minutes each)")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    from backends.transformers.batched.steps import steps_per_size
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
        run("eager", {size: (lambda s=size: batch._step_fn(batch.token_in[:s])) for size in sizes})
        seconds = batch.compile(torch_compile=False)
        print(f"(captured in {seconds:.1f} s)", flush=True)
        run("captured, uncompiled", batch._steps)
        torch._dynamo.reset()
        batch.batch_sizes = sizes
        seconds = batch.compile(torch_compile=True)
        print(f"(torch.compile'd once for sizes {batch.batch_sizes}, symbolic batch, and captured in {seconds:.0f} s)",
              flush=True)
        run("compiled once (the engine's) + captured", batch._steps)
        for size in [int(s) for s in args.static_compile_sizes.split(",") if s]:
            torch._dynamo.reset()
            started = time.perf_counter()
            steps = steps_per_size(batch._step_fn, batch.token_in, [size], True, decoder.capture_stream)
            print(f"(torch.compile'd for {size} rows alone and captured in {time.perf_counter() - started:.0f} s)",
                  flush=True)
            run("compiled for this size alone + captured", steps)

if __name__ == "__main__":
    main()
