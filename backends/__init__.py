"""Model engines behind one contract: ``Backend.stream(ChatRequest) -> async iterator of Event``.

``ui/`` imports only ``backends.base``, ``backends.events`` and ``backends.request``;
``build_backend`` is the one place that knows which engine class serves a name.
"""

from __future__ import annotations

from backends.base import Backend, BackendInfo
from backends.checkpoints import Checkpoint

BACKENDS = ("transformers", "vllm", "hybrid", "openai")


def build_backend(name: str, checkpoint: Checkpoint | None, **options) -> Backend:
    """Start the engine ``name`` on ``checkpoint`` (``openai``: none, the server has it).

    Heavy imports happen only here, so a missing optional package (vLLM) fails only when asked for.
    """
    if name == "transformers":
        from backends.transformers.backend import TransformersBackend
        from backends.transformers.options import TransformersOptions

        return TransformersBackend(_needs(checkpoint, name), TransformersOptions(**options))
    if name == "vllm":
        from backends.vllm.backend import VLLMBackend, VLLMOptions

        return VLLMBackend(_needs(checkpoint, name), VLLMOptions(**_engine_options(options)))
    if name == "hybrid":
        from backends.hybrid.backend import HybridBackend
        from backends.transformers.options import TransformersOptions
        from backends.vllm.backend import VLLMOptions

        from backends.openai.backend import OpenAIOptions

        server = options.get("server")
        return HybridBackend(_needs(checkpoint, name), VLLMOptions(**_engine_options(options.get("engine", {}))),
                             TransformersOptions(**options.get("talker", {})),
                             server=OpenAIOptions(**_engine_options(server)) if server else None)
    if name == "openai":
        from backends.openai.backend import OpenAIBackend, OpenAIOptions

        return OpenAIBackend(OpenAIOptions(**{k: v for k, v in options.items() if v is not None}))
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _needs(checkpoint: Checkpoint | None, name: str) -> Checkpoint:
    if checkpoint is None:
        raise ValueError(f"the {name} backend runs a local checkpoint: pass one")
    return checkpoint


def _engine_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if v is not None}  # unset CLI values keep VLLMOptions' defaults


__all__ = ["BACKENDS", "Backend", "BackendInfo", "Checkpoint", "build_backend"]
