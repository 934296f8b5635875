"""Accumulate one reply's events into chat messages: pure, no Gradio server needed.

Like openai-python's ``ChatCompletionStreamState``: the UI feeds each event to
``ReplyState.handle`` and redraws ``messages()``; tests feed events by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backends.events import AudioChunk, Done, Error, Event, Metrics, Notice, ReasoningDelta, TextDelta
from messages import Message
from ui.messages import to_english


@dataclass
class ReplyState:
    reasoning: str = ""
    text: str = ""
    audio_chunks: list[np.ndarray] = field(default_factory=list)
    sample_rate: int = 24_000
    errors: list[Error] = field(default_factory=list)
    notices: list[Message] = field(default_factory=list)
    metrics: Metrics | None = None
    finish_reason: str | None = None

    def handle(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self.text += event.text
        elif isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, AudioChunk):
            self.audio_chunks.append(event.samples)
            self.sample_rate = event.sample_rate
        elif isinstance(event, Metrics):
            self.metrics = event
        elif isinstance(event, Error):
            self.errors.append(event)
        elif isinstance(event, Notice):
            self.notices.append(event.msg)
        elif isinstance(event, Done):
            self.finish_reason = event.finish_reason

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def failed_without_reply(self) -> bool:
        """Nothing was generated and an error says why (a bad file, out of memory, …): the turn
        should not stay in the conversation, or every later turn would resend what broke it."""
        return bool(self.errors) and not self.text and not self.reasoning

    def audio(self) -> np.ndarray | None:
        return np.concatenate(self.audio_chunks) if self.audio_chunks else None

    def messages(self, audio_path: str | None = None, say=to_english) -> list[dict]:
        """Chatbot messages (Gradio's messages format) for this reply so far; ``say`` translates
        the app's and the engine's own words (``ui.messages.translator``)."""
        out: list[dict] = [{"role": "assistant", "content": f"ℹ️ {say(notice)}"} for notice in self.notices]
        if self.reasoning:
            status = "done" if self.text or self.done else "pending"
            out.append({"role": "assistant", "content": self.reasoning,
                        "metadata": {"title": say("Thinking"), "status": status}})
        if self.text or (self.done and not self.errors and not self.reasoning):
            out.append({"role": "assistant", "content": self.text or say("(empty reply)")})
        if audio_path:
            out.append({"role": "assistant", "content": {"path": audio_path, "mime_type": "audio/wav"}})
        for error in self.errors:
            icon = "🔇" if error.stage == "speech" else "⚠️"
            out.append({"role": "assistant", "content": f"{icon} {say(error)}"})
        if self.finish_reason == "cancelled":
            out.append({"role": "assistant", "content": say("⏹ Stopped.")})
        elif self.finish_reason == "length":
            out.append({"role": "assistant", "content": say("✂️ Reached the max-tokens limit.")})
        return out

    def status(self, say=to_english) -> str:
        """One line for the status bar: timings of this turn."""
        if not self.done:
            return say("Generating…" if self.text or self.reasoning else "Thinking…")
        m = self.metrics
        if m is None:
            return say(f"Finished ({self.finish_reason}).")
        parts = []
        if m.time_to_first_token_s is not None:
            parts.append(f"first token {m.time_to_first_token_s:.2f} s")
        if m.tokens_per_s is not None:
            parts.append(f"{m.tokens_per_s:.1f} tok/s")
        parts.append(f"{m.prompt_tokens} prompt + {m.output_tokens} reply tokens")
        if m.audio_seconds:
            parts.append(f"speech {m.audio_seconds:.1f} s")
            if m.time_to_first_audio_s is not None:
                parts.append(f"first audio {m.time_to_first_audio_s:.2f} s")
            if m.talker_frames_per_s is not None:
                parts.append(f"talker {m.talker_frames_per_s:.1f} frames/s")
            if m.real_time_factor is not None:
                parts.append(f"RTF {m.real_time_factor:.2f}")
        if m.total_s is not None:
            parts.append(f"total {m.total_s:.2f} s")
        return " · ".join(say(part) for part in parts)
