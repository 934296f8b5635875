"""Evaluators' ratings: 👍/👎 and a comment on any reply, one JSON line each, with everything needed to
reproduce the reply (model, backend, speaker, system prompt, sampling, seed, hashes of the media).

Hashing reads every file of the conversation: ``reply_settings`` is for worker threads (Gradio runs plain
functions on one), never for the event loop, and a file is read once (``ui.hashing.file_hash`` remembers it).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict

from backends.base import BackendInfo
from backends.request import ChatRequest, MediaPart
from ui.hashing import file_hash


class FeedbackLog:
    """Appends to a JSONL file; safe for concurrent sessions."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=False)
        with self._lock, open(self.path, "a", encoding="utf-8") as file:
            file.write(line + "\n")


def reply_settings(info: BackendInfo, request: ChatRequest) -> dict:
    """What produced a reply: enough to generate it again. Blocks while it hashes the media."""
    return {
        "model": info.model,
        "backend": info.backend,
        "speaker": request.speaker,
        "system_prompt": request.system_prompt,
        "sampling": asdict(request.sampling),
        "speech": request.return_audio,
        "use_audio_in_video": request.use_audio_in_video,
        "conversation": [
            {"role": turn.role, "text": turn.text,
             "media": [{"kind": p.kind, "name": os.path.basename(p.path), "sha256": file_hash(p.path)}
                       for p in turn.parts if isinstance(p, MediaPart) and turn.role == "user"]}
            for turn in request.turns
        ],
    }


def feedback_entry(settings: dict | None, reply_text: str, rating: str | None, comment: str = "") -> dict:
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rating": rating, "comment": comment,
            "reply": reply_text, **(settings or {})}

