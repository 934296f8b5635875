"""The one seam between the UI and a model engine (after vLLM's ``EngineClient``).

``Backend.stream(request)`` is an async generator of ``backends.events.Event``.
Closing it (``aclose()``, a cancelled task, a Stop button, a closed tab) stops the
engine's work for that request: every backend guarantees this in a ``finally``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import AsyncIterator, Literal

from backends.events import Event
from backends.request import ChatRequest
from messages import Message

CheckpointKind = Literal["instruct", "thinking", "captioner"]


@dataclass(frozen=True)
class BackendInfo:
    """What the UI needs to know about the live engine; shown in the header."""

    backend: str
    """Which backend runs: "transformers", "vllm", "openai" or "hybrid"."""
    model: str
    kind: CheckpointKind
    device: str
    speakers: tuple[str, ...] = ()
    """Voices the checkpoint offers; empty when it cannot speak."""
    random_weights: bool = False
    """True for the tiny offline checkpoint: its answers are noise."""
    max_concurrency: int = 1
    """How many requests the engine runs at once; the UI sizes its queue to this."""
    speech_note: str = ""
    """A caveat about speech the header shows (e.g. a server may answer in text only)."""

    @property
    def can_speak(self) -> bool:
        return bool(self.speakers)

    @property
    def reasons(self) -> bool:
        return self.kind == "thinking"


class Backend(abc.ABC):
    """A model engine behind the app. Implementations: one file each in ``backends/``."""

    info: BackendInfo
    warming_up: Message | None = None
    """What the engine prepares before its first turn (loading, compiling…), for the header; None once ready."""

    def warm_up(self) -> None:
        """Compile/capture before the first turn; turns that arrive meanwhile wait. Most engines need nothing."""

    @abc.abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        """Generate one reply. Ends with exactly one ``Done``; errors come as ``Error`` events."""

    def close(self) -> None:
        """Release the engine (GPU memory, child processes)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
