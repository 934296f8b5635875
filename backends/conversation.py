"""Turn a ``ChatRequest`` into what Qwen3-Omni's processor takes.

Shared by every in-process backend (Transformers, vLLM, hybrid) so they build the
same prompt from the same decoded media.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import media
from backends.events import Done, Error, Event, Notice
from backends.request import ChatRequest, MediaPart, TextPart
from messages import Message

KINDS = {"image": Message("media.kind.image"), "audio": Message("media.kind.audio"),
         "video": Message("media.kind.video")}
"""Each media kind's name, as a message names it."""


@dataclass
class PromptInputs:
    """The chat-template messages and the decoded media, in placeholder order."""

    messages: list[dict]
    images: list = field(default_factory=list)
    audios: list[np.ndarray] = field(default_factory=list)
    videos: list[np.ndarray] = field(default_factory=list)
    video_fps: list[float] = field(default_factory=list)
    """Frames taken per second of each video (they differ: a long clip gets fewer per second)."""
    use_audio_in_video: bool = False
    notes: list[Message] = field(default_factory=list)
    """Things the user should know (e.g. a video without sound was given silence)."""
    first_turn: int = 0
    """The request's first turn this prompt holds (``fit_to_context`` leaves out older ones)."""

    def processor_kwargs(self) -> dict:
        """Keyword arguments for ``Qwen3OmniMoeProcessor.__call__`` (besides ``text``)."""
        kwargs: dict = {
            "images": self.images or None,
            "audio": self.audios or None,
            "videos": self.videos or None,
            "use_audio_in_video": self.use_audio_in_video,
        }
        if self.videos:
            # The frames are already chosen; the rate gives them their time positions (``run_processor`` gives
            # each video its own when they differ).
            kwargs["videos_kwargs"] = {"fps": self.video_fps[0], "do_sample_frames": False}
        return kwargs


def run_processor(processor, text: str, prompt: PromptInputs, **kwargs):
    """``processor(text=text, ...)`` for the prompt's media, each video timed by its own frame rate.

    ``Qwen3OmniMoeProcessor`` takes one ``fps`` for all videos of a call, and it sets both the placeholder
    order of a video with its sound and ``video_second_per_grid``, which must agree. A call with videos
    of different rates runs on a shallow copy of the processor whose placeholder expansion gets each
    video's own seconds per grid, and returns those.
    """
    rates = prompt.video_fps
    if len(set(rates)) <= 1:
        return processor(text=text, **kwargs, **prompt.processor_kwargs())
    import copy

    seconds = [processor.video_processor.temporal_patch_size / rate for rate in rates]
    stock = processor.replace_multimodal_special_tokens
    per_video = copy.copy(processor)
    per_video.replace_multimodal_special_tokens = lambda *args, video_second_per_grid, **rest: stock(
        *args, video_second_per_grid=iter(seconds), **rest)
    inputs = per_video(text=text, **kwargs, **prompt.processor_kwargs())
    given = inputs["video_second_per_grid"]
    inputs["video_second_per_grid"] = given.new_tensor(seconds) if hasattr(given, "new_tensor") else np.asarray(seconds)
    return inputs


def processor_inputs(processor, prompt: PromptInputs) -> dict:
    """The model's inputs (token ids, features, grids) for a decoded conversation, as CPU tensors."""
    text = processor.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
    inputs = run_processor(processor, text, prompt, return_tensors="pt", padding=True)
    return dict(inputs, use_audio_in_video=prompt.use_audio_in_video)


def build_prompt_inputs(request: ChatRequest, limits: media.MediaLimits = media.DEFAULT_LIMITS) -> PromptInputs:
    """Decode every user file once and build the template messages.

    Assistant turns contribute their text only: the model never hears its own past speech,
    which is also what keeps a reply's audio in the history from breaking the next turn.
    Raises ``media.MediaError`` naming the first file that can't be used.
    """
    use_video_audio = request.use_audio_in_video
    prompt = PromptInputs(messages=[], use_audio_in_video=use_video_audio)
    if request.system_prompt.strip():
        prompt.messages.append({"role": "system", "content": [{"type": "text", "text": request.system_prompt}]})
    for turn in request.turns:
        if turn.role == "user" and len(turn.media) > limits.max_items_per_turn:
            raise media.MediaError(turn.media[limits.max_items_per_turn].path, Message(
                "prompt.too_many_files", {"limit": limits.max_items_per_turn, "count": len(turn.media)}))
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
        prompt.video_fps.append(clip.fps)
        if prompt.use_audio_in_video:
            # The processor interleaves one audio per video here; a silent video gets silence.
            if clip.audio is None or clip.audio.size == 0:
                seconds = len(clip.frames) / clip.fps
                prompt.audios.append(np.zeros(int(seconds * media.INPUT_SAMPLE_RATE), np.float32))
                prompt.notes.append(Message("prompt.silent_video", {"file": _name(part.path)}))
            else:
                prompt.audios.append(clip.audio)
    return {"type": part.kind, part.kind: part.path}


def _name(path: str) -> str:
    from pathlib import Path

    return Path(path).name


def fit_to_context(request: ChatRequest, count_tokens, context_tokens: int,
                   limits: media.MediaLimits = media.DEFAULT_LIMITS,
                   max_media: dict[str, int] | None = None) -> tuple[PromptInputs, object, list[Message]]:
    """Build the prompt, leaving out the oldest exchanges while it is too long for the model.

    ``count_tokens(prompt) -> (inputs, length)`` encodes a candidate; ``max_media`` caps files per
    kind in the whole prompt (an engine's limit). Returns the prompt, the inputs and notes for the
    user (what was left out; files the model heard as silence). Raises ``media.MediaError`` when
    even the last message alone doesn't fit.
    """
    from dataclasses import replace

    budget = context_tokens - request.sampling.max_new_tokens
    turns, first = request.turns, 0
    trimmed_for_files, length = False, 0
    while True:
        kept = turns[first:]
        too_many_files = sum(len(t.media) for t in kept if t.role == "user") > limits.max_items_per_conversation
        over_engine = _over_engine_limit(kept, max_media or {})
        too_many_files = too_many_files or over_engine is not None
        if not too_many_files:
            prompt = build_prompt_inputs(replace(request, turns=kept), limits)
            inputs, length = count_tokens(prompt)
            if length <= budget:
                break
        trimmed_for_files = too_many_files
        later_user = next((i for i in range(first + 1, len(turns)) if turns[i].role == "user"), None)
        if later_user is None:
            last = turns[-1]
            if over_engine is not None:
                kind, limit, part = over_engine
                raise media.MediaError(part.path, Message("prompt.over_engine_limit", {
                    "limit": limit, "kind": KINDS[kind]}))
            biggest = max(last.media, key=lambda p: _size(p.path)).path if last.media else "message"
            raise media.MediaError(biggest, Message("prompt.too_long", {
                "length": length, "budget": budget, "context": context_tokens,
                "reply": request.sampling.max_new_tokens}))
        first = later_user
    prompt.first_turn = first
    notes = list(prompt.notes)
    if first:
        files = sum(len(t.media) for t in turns[:first] if t.role == "user")
        if files:
            what = Message("prompt.first_messages_and_files" if files > 1 else "prompt.first_messages_and_file",
                           {"count": first, "files": files})
        else:
            what = Message("prompt.first_messages", {"count": first})
        if trimmed_for_files:
            notes.insert(0, Message("prompt.left_out_files", {"what": what}))
        else:
            notes.insert(0, Message("prompt.left_out_context", {
                "context": context_tokens, "reply": request.sampling.max_new_tokens, "what": what}))
    return prompt, inputs, notes


async def fit_off_loop(fit: Callable[[ChatRequest], tuple[PromptInputs, list[Message]]],
                       request: ChatRequest) -> tuple[PromptInputs | None, list[Event]]:
    """``fit(request)`` (the prompt as it fits, and its notes) on a worker thread, as decoding media and counting
    tokens are slow, and the events a reply opens with: a ``Notice`` per note, or, when a file can't be used,
    its ``Error`` and ``Done`` and no prompt."""
    try:
        prompt, notes = await asyncio.to_thread(fit, request)
    except media.MediaError as err:
        return None, [Error(err.msg, "input"), Done("error")]
    return prompt, [Notice(note) for note in notes]


def _size(path: str) -> int:
    import os

    return os.path.getsize(path) if os.path.exists(path) else 0


def _over_engine_limit(turns, max_media: dict[str, int]):
    """(kind, limit, the first file over it) if the turns hold more of a kind than the engine takes."""
    counts: dict[str, int] = {}
    for turn in turns:
        if turn.role != "user":
            continue
        for part in turn.media:
            counts[part.kind] = counts.get(part.kind, 0) + 1
            if part.kind in max_media and counts[part.kind] > max_media[part.kind]:
                return part.kind, max_media[part.kind], part
    return None
