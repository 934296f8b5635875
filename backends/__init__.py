"""Model engines behind one contract: ``Backend.stream(ChatRequest) -> async iterator of Event``.

``ui/`` imports only ``backends.base``, ``backends.events`` and ``backends.request``;
``build_backend`` is the one place that knows which engine class serves a name.
"""

from __future__ import annotations

from backends.base import Backend, BackendInfo
from backends.checkpoints import Checkpoint

BACKENDS = ("transformers",)


def build_backend(name: str, checkpoint: Checkpoint, **options) -> Backend:
    """Start the engine ``name`` on ``checkpoint``; heavy imports happen only here."""
    if name == "transformers":
        from backends.transformers_backend import TransformersBackend, TransformersOptions

        return TransformersBackend(checkpoint, TransformersOptions(**options))
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "BackendInfo", "Checkpoint", "build_backend"]
