"""torch.compile in tests: dynamo's ``aot_eager`` backend instead of inductor.

``fullgraph=True`` still proves a decode step has no graph break (what lets a GPU capture it as one
CUDA graph), without inductor's C++ code generation, which took minutes on this CPU with cold caches.
Inductor's kernels are what GPUs run; the GPU benchmark checks their text and codes (BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch


@contextlib.contextmanager
def traced_without_inductor():
    """Every ``torch.compile`` made inside compiles with ``aot_eager``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
        yield
