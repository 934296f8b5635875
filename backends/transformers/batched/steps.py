"""A batched step for each batch size: compiled once for all of them, captured per size.

A step of the first ``batch`` slots reads and writes fixed buffers (the slots' caches, their lengths, the
rows' inputs), so on a GPU each size is captured as a CUDA graph and a step of the busy rows replays the
smallest that holds them. Compiling (``torch.compile``) first fuses the step's few thousand small kernels
into a few hundred (BENCHMARKS.md, "Where a batched step's time goes"). Compiled per size, a 48-layer
thinker takes minutes for each; here the step is compiled once with its batch dimension symbolic, and
each size's capture reuses that compile. Sizes start at 2: a symbolic size is never 0 or 1 (torch
specializes those), so a lone row in a batch runs in the 2-row step, one idle row beside it.
"""

from __future__ import annotations

from typing import Callable

import torch

from backends.transformers.cuda_graphs import captured


def steps_per_size(step_fn: Callable[[torch.Tensor], object], rows_in: torch.Tensor, sizes: list[int],
                   torch_compile: bool, stream: torch.cuda.Stream | None = None) -> dict[int, Callable[[], object]]:
    """{batch: a no-argument step} running ``step_fn(rows_in[:batch])``: the step learns its batch size
    from that view's first dimension. ``torch_compile``: compiled (fullgraph) once for every size of at
    least 2, smaller sizes rounded up to 2. On a GPU each is captured as a CUDA graph (largest first, on
    ``stream``); elsewhere it runs as it is, and a compiled one is compiled now, not in the first reply."""
    on_gpu = rows_in.is_cuda
    step = step_fn
    if torch_compile:
        step = torch.compile(step_fn, fullgraph=True, dynamic=False)
        sizes = sorted({max(2, size) for size in sizes if size <= rows_in.shape[0]}) or list(sizes)
    symbolic = torch_compile and len(sizes) > 1

    def sized(batch: int) -> Callable[[], object]:
        def run():
            rows = rows_in[:batch]
            if symbolic:  # every size the same graph: the batch a symbol between 2 and the slots
                torch._dynamo.mark_dynamic(rows, 0, min=2, max=rows_in.shape[0])
            return step(rows)
        return run

    made = {}
    with torch.inference_mode():
        for batch in sorted(sizes, reverse=True):
            run = sized(batch)
            if on_gpu:
                run = captured(run, stream=stream)
            elif torch_compile:
                run()
            made[batch] = run
    return dict(sorted(made.items()))
