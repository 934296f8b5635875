"""What a ChatRequest becomes on the wire: chat messages with each file inlined as a data: URL (the
server can't read this machine's files), and the body of the streamed completion request."""

from __future__ import annotations

import base64
import io
import mimetypes
import os
import threading
from collections import OrderedDict
from typing import Callable, Literal

import numpy as np

import media
from backends.openai.options import OpenAIOptions
from backends.request import ChatRequest, MediaPart, TextPart


class Payloads:
    """Example::

        payloads = Payloads(OpenAIOptions(), model="qwen")
        messages = payloads.messages(request)  # a worker thread's job: it decodes and encodes files
        body = payloads.body(request, messages, want_audio=False)
    """

    def __init__(self, options: OpenAIOptions, model: str):
        self.options, self.model = options, model
        self.video_audio: Literal["processor", "separate"] = \
            "separate" if options.video_audio == "separate" else "processor"
        """How a video's sound is sent (``OpenAIOptions.video_audio``); "auto" starts as "processor", which the
        backend turns to "separate" when the server refuses it."""
        self.cache = DataUrlCache(options.media_cache_mb)

    def messages(self, request: ChatRequest) -> list[dict]:
        """The conversation as chat messages, each file decoded, checked and inlined (seconds for a large one)."""
        messages: list[dict] = []
        if request.system_prompt.strip():
            messages.append({"role": "system", "content": request.system_prompt})
        for turn in request.turns:
            if turn.role == "assistant":  # the model conditions on its own text, not its past speech
                messages.append({"role": "assistant", "content": turn.text})
                continue
            content: list[dict] = []
            for part in turn.parts:
                if isinstance(part, TextPart):
                    if part.text:
                        content.append({"type": "text", "text": part.text})
                else:
                    content.extend(self._media_content(part, request.use_audio_in_video))
            messages.append({"role": "user", "content": content})
        return messages

    def _media_content(self, part: MediaPart, use_audio_in_video: bool) -> list[dict]:
        limits = self.options.media_limits
        if part.kind == "image":
            url = self.cache.get(part.path, lambda: _image_url(part.path, limits))
            return [{"type": "image_url", "image_url": {"url": url}}]
        if part.kind == "audio":
            # Decoded and re-encoded as 16 kHz WAV: validated here, any input format works, and smaller.
            url = self.cache.get(part.path, lambda: _wav_url(media.load_audio(part.path, limits),
                                                             media.INPUT_SAMPLE_RATE))
            return [{"type": "audio_url", "audio_url": {"url": url}}]
        url = self.cache.get(part.path, lambda: _video_url(part.path, limits))
        content = [{"type": "video_url", "video_url": {"url": url}}]
        if use_audio_in_video and self.video_audio == "separate":
            sound = self.cache.get(part.path, lambda: _video_sound_url(part.path, limits), suffix="sound")
            if sound:  # a silent video sends no sound part
                content.append({"type": "audio_url", "audio_url": {"url": sound}})
        return content

    def body(self, request: ChatRequest, messages: list[dict], want_audio: bool,
             extra_body: dict | None = None) -> dict:
        """The streamed completion request for ``messages``; ``extra_body`` adds to (or overrides) what goes to
        the server beyond the OpenAI API."""
        sampling = request.sampling
        extra: dict = {}
        body: dict = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": sampling.max_new_tokens,
            "temperature": max(sampling.temperature, 0.0),
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if not sampling.greedy:
            body["top_p"] = sampling.top_p
            extra["top_k"] = sampling.top_k
        if want_audio:
            body["modalities"] = ["text", "audio"]
            # vLLM-Omni reads the voice from a top-level "speaker" (lower case).
            extra["speaker"] = (request.speaker or self.options.speakers[0]).lower()
        elif self.options.speech != "off":
            body["modalities"] = ["text"]  # vLLM-Omni would otherwise speak by default
        if self._sends_video_with_sound(request):
            extra["mm_processor_kwargs"] = {"use_audio_in_video": True}
        extra.update(extra_body or {})
        if extra:
            body["extra_body"] = extra
        return body

    def _sends_video_with_sound(self, request: ChatRequest) -> bool:
        has_video = any(p.kind == "video" for t in request.turns if t.role == "user" for p in t.media)
        return has_video and request.use_audio_in_video and self.video_audio == "processor"


class DataUrlCache:
    """The data: URLs of recent files (resent every turn), kept while the most recently used fit ``budget_mb``
    (a URL is ASCII: one byte a character)."""

    def __init__(self, budget_mb: int):
        self.budget = budget_mb << 20
        self.urls: OrderedDict[tuple, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # turns build their messages in worker threads, at once

    def get(self, path: str, encode: Callable[[], str], suffix: str = "") -> str:
        """The file's data: URL: ``encode()``'s, unless this file as it is now (path, time, size) was encoded."""
        stat = os.stat(path) if os.path.exists(path) else None
        key = (path, suffix, stat.st_mtime_ns if stat else None, stat.st_size if stat else None)
        with self._lock:
            if key in self.urls:
                self.urls.move_to_end(key)
                return self.urls[key]
        url = encode()  # outside the lock: other turns' files needn't wait for this one
        with self._lock:
            if key not in self.urls and len(url) <= self.budget:
                self.urls[key] = url
                self._bytes += len(url)
                while self._bytes > self.budget:
                    self._bytes -= len(self.urls.popitem(last=False)[1])
        return url


def _data_url(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _wav_url(samples: np.ndarray, rate: int) -> str:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return _data_url("audio/wav", buffer.getvalue())


def _image_url(path: str, limits: media.MediaLimits) -> str:
    image = media.load_image(path, limits)  # validates, and bounds the size sent
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return _data_url("image/png", buffer.getvalue())


def _video_url(path: str, limits: media.MediaLimits) -> str:
    media.check_video(path, limits)
    mime = mimetypes.guess_type(path)[0] or "video/mp4"
    with open(path, "rb") as file:
        return _data_url(mime, file.read())


def _video_sound_url(path: str, limits: media.MediaLimits) -> str:
    sound = media.video_sound_track(path, limits)
    return "" if sound is None else _wav_url(sound, media.INPUT_SAMPLE_RATE)
