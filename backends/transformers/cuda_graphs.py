"""Capturing fixed-buffer functions as CUDA graphs: the helpers the thinker's and the talker's decoders
(thinker_decoder.py, talker_decoder.py), code2wav's chunks (vocoder.py) and the encoders (encoder_graphs.py) share.

In eager mode each decode step is hundreds of small kernel launches, so the GPU waits on
Python: per 80 ms of speech the talker makes one step and its code predictor fifteen, and
the thinker one per token. Here every step runs over ``StaticCache`` tensors that never
move, from input buffers that never move, so on a GPU each can be compiled
(``torch.compile``, no graph breaks) and captured once as a CUDA graph: one replay per
thinker token, one per talker step, one per frame for all fifteen residual codebooks. On
the CPU the same functions run eagerly (or compiled, in tests), which is how the tests prove
the outputs equal stock ``generate()``'s.

Sampling inside a graph uses the Gumbel-max trick over noise drawn outside it (a graph
can't draw from a ``torch.Generator`` of ours); with constant noise it is argmax.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def compute_device(module) -> torch.device:
    """Where ``module`` computes: its weights' device or, for weights offloaded to CPU memory by
    accelerate (their parameters are then "meta"), the GPU its hooks bring them to."""
    device = next(module.parameters()).device
    if device.type != "meta":
        return device
    for part in module.modules():
        execution_device = getattr(getattr(part, "_hf_hook", None), "execution_device", None)
        if execution_device is not None:
            return torch.device(execution_device)
    return torch.device("cuda", torch.cuda.current_device())


PACK_MAX = 8
"""Prompts one packed prompt pass may hold (batched/packed.py): the thinker's and the talker's prompt passes
return the states of that many positions."""


def prompt_mask(length: int, cache_slots: int, device) -> torch.Tensor:
    """A prompt's causal mask over the first ``cache_slots`` of an emptied static cache (1, 1, length,
    cache_slots), True where a token may attend. Made here from sizes fixed per captured pass, because
    transformers' mask code reads the cache's length on the host, which no CUDA graph can hold; made inside
    the pass, so that it lives only while the pass runs (kept, the thinker's and the talker's took 58 MB)."""
    slots = torch.arange(cache_slots, device=device)
    return (slots[None, :] <= torch.arange(length, device=device)[:, None])[None, None]


def captured(function, pool=None, stream: torch.cuda.Stream | None = None):
    """``function`` (no arguments, fixed buffers) as a replayable CUDA graph; ``pool`` and ``stream``: a memory
    pool and a capture stream shared with graphs that never replay at the same time as this one."""
    # A capture stream of its own: PyTorch keys cuBLAS workspaces by stream, so graphs captured on
    # torch.cuda.graph's one shared stream bake in the same workspace (pytorch/pytorch#193402), and the
    # thinker's and the talker's graphs replay at once, from two threads.
    capture = stream or torch.cuda.Stream()
    capture.wait_stream(torch.cuda.current_stream())
    # Warm up (autotune, allocations) outside the graph, as torch.cuda.graph asks, on the capture stream
    # itself: PyTorch keeps a cuBLAS workspace (32 MiB on Hopper) for every stream cuBLAS has run on, so a
    # warm-up stream per graph would keep 32 MiB per graph for good (37 graphs with the default caches).
    with torch.cuda.stream(capture):
        for _ in range(3):
            function()
    torch.cuda.current_stream().wait_stream(capture)
    graph = torch.cuda.CUDAGraph()
    # thread_local: another thread's CUDA calls (the UI, a loader) must not break the capture.
    with torch.cuda.graph(graph, pool=pool, stream=capture, capture_error_mode="thread_local"):
        outputs = function()

    def replay():
        graph.replay()
        return outputs

    replay.pool = graph.pool()
    return replay


def captured_each(function, sizes: list[int], device: torch.device, what: str,
                  stream: torch.cuda.Stream | None = None, pool=None, largest_first: bool = True) -> dict:
    """{size: function(size) as a CUDA graph} (on the CPU: the plain function), the graphs sharing one
    memory pool: the sizes are alternatives, so never two replay at once. Empty if a capture fails (the
    caller then runs eagerly). ``stream``: the capture stream (default: one of their own); ``pool``: a
    memory pool to share with other graphs that never replay at the same time as these (default: a new one)."""
    made: dict = {}
    # One capture stream for all: they never replay at once, so they may share its cuBLAS workspace.
    if stream is None and device.type == "cuda":
        stream = torch.cuda.Stream()
    try:
        with torch.inference_mode():
            # Largest first: a smaller graph then fits in the blocks a larger one freed. Smallest first, each
            # larger one needed blocks of new sizes: the thinker's pool grew to 1.9 GB (BENCHMARKS.md).
            for size in sorted(sizes, reverse=largest_first):
                run = (lambda size=size: function(size))
                if device.type == "cuda":
                    before, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
                    run = captured(run, pool, stream)
                    pool = run.pool
                    # Reserved: the graph's pool also keeps what its replays use and no tensor of ours holds.
                    log.debug("%s of %s: %.3f GB more GPU memory (reserved: %.3f GB more)", what, size,
                              (torch.cuda.memory_allocated() - before) / 1e9,
                              (torch.cuda.memory_reserved() - reserved) / 1e9)
                made[size] = run
    except Exception:
        log.exception("capturing %s failed; it runs eagerly (slower, same output)", what)
        return {}
    return dict(sorted(made.items()))  # callers take the first size that holds an input

