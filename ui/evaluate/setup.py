"""How one side of an evaluation answers: its engine and its request's settings."""

from __future__ import annotations

from dataclasses import dataclass

from backends.request import ChatRequest, MediaPart, Sampling, TextPart, Turn
from media import kind_of
from ui.evaluate.sheet import Prompt


@dataclass(frozen=True)
class Setup:
    """How one side answers: which engine ("app" or "compare") and the request's settings."""

    engine: str = "app"
    speaker: str | None = None
    system_prompt: str = ""
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    max_new_tokens: int = 1024
    seed: int | None = None
    speech: bool = True

    def request(self, prompt: Prompt, can_speak: bool) -> ChatRequest:
        parts = tuple(MediaPart(kind_of(path), path) for path in prompt.paths)
        if prompt.text:
            parts += (TextPart(prompt.text),)
        return ChatRequest(
            turns=(Turn("user", parts),), system_prompt=prompt.system_prompt or self.system_prompt,
            speaker=self.speaker or None, return_audio=self.speech and can_speak,
            sampling=Sampling(self.temperature, self.top_p, self.top_k, self.max_new_tokens, self.seed))
