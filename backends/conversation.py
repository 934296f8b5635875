"""Turn a ``ChatRequest`` into what Qwen3-Omni's processor takes.

Shared by every in-process backend (Transformers, vLLM, hybrid) so they build the
same prompt from the same decoded media.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backends import media
from backends.request import ChatRequest, MediaPart, TextPart


@dataclass
class PromptInputs:
    """The chat-template messages and the decoded media, in placeholder order."""

    messages: list[dict]
    images: list = field(default_factory=list)
    audios: list[np.ndarray] = field(default_factory=list)
    videos: list[np.ndarray] = field(default_factory=list)
    video_fps: float = media.DEFAULT_LIMITS.video_fps
    use_audio_in_video: bool = False
    notes: list[str] = field(default_factory=list)
    """Things the user should know (e.g. a video without sound was given silence)."""

    def processor_kwargs(self) -> dict:
        """Keyword arguments for ``Qwen3OmniMoeProcessor.__call__`` (besides ``text``)."""
        kwargs: dict = {
            "images": self.images or None,
            "audio": self.audios or None,
            "videos": self.videos or None,
            "use_audio_in_video": self.use_audio_in_video,
        }
        if self.videos:
            # Frames are already sampled at video_fps; tell the processor so time positions are right.
            kwargs["videos_kwargs"] = {"fps": self.video_fps, "do_sample_frames": False}
        return kwargs


def build_prompt_inputs(request: ChatRequest, limits: media.MediaLimits = media.DEFAULT_LIMITS) -> PromptInputs:
    """Decode every user file once and build the template messages.

    Assistant turns contribute their text only: the model never hears its own past speech,
    which is also what keeps a reply's audio in the history from breaking the next turn.
    Raises ``media.MediaError`` naming the first file that can't be used.
    """
    use_video_audio = request.use_audio_in_video
    prompt = PromptInputs(messages=[], video_fps=limits.video_fps, use_audio_in_video=use_video_audio)
    if request.system_prompt.strip():
        prompt.messages.append({"role": "system", "content": [{"type": "text", "text": request.system_prompt}]})
    for turn in request.turns:
        if turn.role == "assistant":
            prompt.messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.text}]})
            continue
        content = []
        for part in turn.parts:
            if isinstance(part, TextPart):
                if part.text:
                    content.append({"type": "text", "text": part.text})
            else:
                content.append(_add_media(prompt, part, limits))
        prompt.messages.append({"role": "user", "content": content})
    return prompt


def _add_media(prompt: PromptInputs, part: MediaPart, limits: media.MediaLimits) -> dict:
    if part.kind == "image":
        prompt.images.append(media.load_image(part.path, limits))
    elif part.kind == "audio":
        prompt.audios.append(media.load_audio(part.path, limits))
    else:
        clip = media.load_video(part.path, limits)
        prompt.videos.append(clip.frames)
        if prompt.use_audio_in_video:
            # The processor interleaves one audio per video here; a silent video gets silence.
            if clip.audio is None or clip.audio.size == 0:
                seconds = len(clip.frames) / clip.fps
                prompt.audios.append(np.zeros(int(seconds * media.INPUT_SAMPLE_RATE), np.float32))
                prompt.notes.append(f"{_name(part.path)} has no sound track; the model heard silence for it.")
            else:
                prompt.audios.append(clip.audio)
    return {"type": part.kind, part.kind: part.path}


def _name(path: str) -> str:
    from pathlib import Path

    return Path(path).name
