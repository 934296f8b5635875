"""torch.compile in tests: dynamo's ``aot_eager`` backend instead of inductor.

``fullgraph=True`` still proves a decode step has no graph break (what lets a GPU capture it as one
CUDA graph), without inductor's C++ code generation, which took minutes on this CPU with cold caches.
Inductor's kernels are what GPUs run; the GPU benchmark checks their text and codes (BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@contextlib.contextmanager
def traced_without_inductor():
    """Every ``torch.compile`` made inside compiles with ``aot_eager``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
        yield


def run_interpreted(script: Path) -> str:
    """Run ``script`` under Triton's interpreter, which runs GPU kernels on CPU tensors (TRITON_INTERPRET=1 must
    be set before triton is imported: hence a process of its own); returns what it printed, after checking
    that it succeeded."""
    done = subprocess.run([sys.executable, str(script)], env={**os.environ, "TRITON_INTERPRET": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
