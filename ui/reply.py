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
                        "metadata": {"title": say(Message("reply.thinking_title")), "status": status}})
        if self.text or (self.done and not self.errors and not self.reasoning):
            out.append({"role": "assistant", "content": self.text or say(Message("reply.empty"))})
        if audio_path:
            out.append({"role": "assistant", "content": {"path": audio_path, "mime_type": "audio/wav"}})
        for error in self.errors:
            icon = "🔇" if error.stage == "speech" else "⚠️"
            out.append({"role": "assistant", "content": f"{icon} {say(error)}"})
        if self.finish_reason == "cancelled":
            out.append({"role": "assistant", "content": say(Message("reply.stopped"))})
        elif self.finish_reason == "length":
            out.append({"role": "assistant", "content": say(Message("reply.max_tokens"))})
        return out

    def status(self, say=to_english) -> str:
        """One line for the status bar: timings of this turn."""
        if not self.done:
            return say(Message("ui.generating" if self.text or self.reasoning else "ui.thinking"))
        m = self.metrics
        if m is None:
            return say(Message("ui.finished", {"reason": self.finish_reason}))
        parts: list[Message] = []
        if m.time_to_first_token_s is not None:
            parts.append(Message("metrics.first_token", {"seconds": f"{m.time_to_first_token_s:.2f}"}))
        if m.tokens_per_s is not None:
            parts.append(Message("metrics.tokens_per_s", {"speed": f"{m.tokens_per_s:.1f}"}))
        parts.append(Message("metrics.tokens", {"prompt": m.prompt_tokens, "reply": m.output_tokens}))
        if m.audio_seconds:
            parts.append(Message("metrics.speech", {"seconds": f"{m.audio_seconds:.1f}"}))
            if m.time_to_first_audio_s is not None:
                parts.append(Message("metrics.first_audio", {"seconds": f"{m.time_to_first_audio_s:.2f}"}))
            if m.talker_frames_per_s is not None:
                parts.append(Message("metrics.talker_speed", {"speed": f"{m.talker_frames_per_s:.1f}"}))
            if m.real_time_factor is not None:
                parts.append(Message("metrics.real_time_factor", {"value": f"{m.real_time_factor:.2f}"}))
        if m.total_s is not None:
            parts.append(Message("metrics.total", {"seconds": f"{m.total_s:.2f}"}))
        return " · ".join(say(part) for part in parts)
