"""Any OpenAI-compatible chat server: `vllm serve`, vLLM-Omni (`vllm serve <ckpt> --omni`), SGLang-Omni.

The app stays a thin client: each turn resends the whole conversation (servers keep no
history) with media inlined as data: URLs (the server can't read this machine's files).
Speech comes back in either of two wire shapes, both read by ``wire.StreamedReply``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import mimetypes
import os
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import AsyncIterator

import numpy as np

import media
from backends.base import Backend, BackendInfo, CheckpointKind
from backends.events import Done, Error, Event, Notice
from backends.openai.client import LoopClients, error_for, first_model, kept, over_context, server_message
from backends.openai.options import OpenAIOptions
from backends.openai.wire import StreamedReply
from backends.reasoning import ReasoningSplitter
from backends.request import ChatRequest, MediaPart, TextPart
from backends.tokens import TokenDelta
from messages import Message

log = logging.getLogger(__name__)

TEXT_ONLY = Message("server.text_only")
NO_SPEECH_NOTE = str(TEXT_ONLY)


class ServerFailure(RuntimeError):
    """A request failed at the server; ``error`` is the event to show."""

    def __init__(self, error: Error):
        super().__init__(error.message)
        self.error = error


class OpenAIBackend(Backend):
    """Example::

        backend = OpenAIBackend(OpenAIOptions(api_base="http://gpu-box:8000/v1"))
        async for event in backend.stream(ChatRequest(turns=(Turn.user("Hi"),))): print(event)
    """

    def __init__(self, options: OpenAIOptions = OpenAIOptions()):
        self.options = options
        self._clients = LoopClients(options)
        model = options.model or first_model(options)
        self.model = model
        self._server_speaks = options.speech != "off"
        self._video_audio = "separate" if options.video_audio == "separate" else "processor"
        self._encoded: OrderedDict[tuple, str] = OrderedDict()  # data: URLs of recent files, resent each turn
        self._encoded_bytes = 0
        self._encoded_lock = threading.Lock()  # turns build their messages in worker threads, at once
        self.info = BackendInfo(
            backend="openai",
            model=f"{model} @ {options.api_base}",
            kind=options.kind or _kind_from_name(model),
            device="remote server",
            speakers=options.speakers if options.speech != "off" and _kind_from_name(model) == "instruct" else (),
            max_concurrency=options.max_concurrency,
            speech_note="if the server speaks (vLLM-Omni, SGLang-Omni; `vllm serve` answers in text)"
            if options.speech == "auto" else "",
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        started = time.perf_counter()
        try:
            messages = await self._messages_off_loop(request)
        except media.MediaError as err:
            yield Error(err.msg, "input")
            yield Done("error")
            return
        want_audio = request.return_audio and self.info.can_speak and self._server_speaks
        reply = StreamedReply(ReasoningSplitter(self.info.reasons))
        stream = None
        try:
            stream, want_audio, notes = await self._open(request, messages, want_audio)
            for note in notes:
                yield note
            async for chunk in stream:
                for event in reply.read(chunk):
                    yield event
        except Exception as err:
            failure = error_for(err, self.options, reply_started=stream is not None, has_text=bool(reply.text))
            if failure is None:
                raise
            yield failure
            yield Done("error")
            return
        finally:
            if stream is not None:
                await stream.close()  # Stop / closed tab: the server sees the disconnect and aborts
        for event in reply.flush():
            yield event
        if reply.finish_reason is None:  # the body ended without a finish (SGLang-Omni on a crash)
            yield Error(Message("server.ended_early", {"kept": kept(bool(reply.text))}), "generation")
            yield Done("error")
            return
        if want_audio and not reply.audio_samples and self.options.speech == "auto" and reply.text:
            self._server_speaks = False
            yield Error(TEXT_ONLY, "speech")
        yield reply.metrics(started)
        yield Done("length" if reply.finish_reason == "length" else "stop")

    async def tokens(self, request: ChatRequest, prompt=None) -> AsyncIterator[TokenDelta]:
        """The hybrid backend's text source: text with its token ids (vLLM's ``return_token_ids``).

        Raises ``media.MediaError`` for a bad file and ``ServerFailure`` for everything the server does wrong.
        """
        messages = await self._messages_off_loop(request)
        stream = None
        text_seen = False
        try:
            stream, _, _ = await self._open(request, messages, False, {"return_token_ids": True})
            prompt_tokens = 0
            async for chunk in stream:
                extra = chunk.model_extra or {}
                prompt_tokens = prompt_tokens or len(extra.get("prompt_token_ids") or ())
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                    if not chunk.choices:  # the closing usage chunk
                        yield TokenDelta("", [], prompt_tokens, None)
                for choice in chunk.choices:
                    ids = (choice.model_extra or {}).get("token_ids") or []
                    text = choice.delta.content or ""
                    text_seen = text_seen or bool(text)
                    yield TokenDelta(text, list(ids), prompt_tokens, choice.finish_reason)
        except Exception as err:
            failure = error_for(err, self.options, reply_started=stream is not None, has_text=text_seen)
            if failure is None:
                raise
            raise ServerFailure(failure) from err
        finally:
            if stream is not None:
                await stream.close()

    async def _open(self, request: ChatRequest, messages: list[dict], want_audio: bool, extra: dict | None = None):
        """Start the streamed completion, adapting once to what a server refuses.

        Returns the stream, whether speech is still asked for, and notes for the user.
        """
        import openai

        notes: list[Event] = []
        dropped = 0
        while True:
            body = self._body(request, messages, want_audio)
            if extra:
                body["extra_body"] = {**body.get("extra_body", {}), **extra}
            try:
                return await self._clients.current().chat.completions.create(**body), want_audio, notes
            except openai.BadRequestError as err:
                refused = server_message(err).lower()
                if want_audio and self.options.speech == "auto" and "modalit" in refused:
                    self._server_speaks = want_audio = False  # a text-only server refusing the audio request
                    notes.append(Error(TEXT_ONLY, "speech"))
                elif "mm_processor_kwargs" in refused and self._video_audio == "processor" \
                        and self.options.video_audio == "auto":
                    log.warning("the server refuses mm_processor_kwargs: sending videos' sound as audio parts")
                    self._video_audio = "separate"
                    messages = await self._messages_off_loop(request)
                elif over_context(refused) and (later := _second_user_turn(request)) is not None:
                    # We don't hold the server's tokenizer: the server is the judge of what fits.
                    dropped += later
                    request = replace(request, turns=request.turns[later:])
                    messages = await self._messages_off_loop(request)
                    notes = [n for n in notes if not isinstance(n, Notice)] + [
                        Notice(Message("server.left_out", {"count": dropped}))]
                else:
                    raise

    def _body(self, request: ChatRequest, messages: list[dict], want_audio: bool) -> dict:
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
        if extra:
            body["extra_body"] = extra
        return body

    def _sends_video_with_sound(self, request: ChatRequest) -> bool:
        has_video = any(p.kind == "video" for t in request.turns if t.role == "user" for p in t.media)
        return has_video and request.use_audio_in_video and self._video_audio == "processor"

    async def _messages_off_loop(self, request: ChatRequest) -> list[dict]:
        """``_messages`` in a worker thread: decoding and base64-encoding a file can take seconds, which on the
        event loop would freeze every other user's stream."""
        return await asyncio.to_thread(self._messages, request)

    def _messages(self, request: ChatRequest) -> list[dict]:
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
            url = self._cached(part, lambda: _image_url(part.path, limits))
            return [{"type": "image_url", "image_url": {"url": url}}]
        if part.kind == "audio":
            # Decoded and re-encoded as 16 kHz WAV: validated here, any input format works, and smaller.
            url = self._cached(part, lambda: _wav_url(media.load_audio(part.path, limits), media.INPUT_SAMPLE_RATE))
            return [{"type": "audio_url", "audio_url": {"url": url}}]
        url = self._cached(part, lambda: _video_url(part.path, limits))
        content = [{"type": "video_url", "video_url": {"url": url}}]
        if use_audio_in_video and self._video_audio == "separate":
            sound = self._cached(part, lambda: _video_sound_url(part.path, limits), suffix="sound")
            if sound:  # a silent video sends no sound part
                content.append({"type": "audio_url", "audio_url": {"url": sound}})
        return content

    def _cached(self, part: MediaPart, encode, suffix: str = "") -> str:
        """The file's data: URL, kept while the most recently used ones fit ``media_cache_mb`` (a URL is ASCII:
        one byte a character)."""
        stat = os.stat(part.path) if os.path.exists(part.path) else None
        key = (part.path, suffix, stat.st_mtime_ns if stat else None, stat.st_size if stat else None)
        with self._encoded_lock:
            if key in self._encoded:
                self._encoded.move_to_end(key)
                return self._encoded[key]
        url = encode()  # outside the lock: other turns' files needn't wait for this one
        budget = self.options.media_cache_mb << 20
        with self._encoded_lock:
            if key not in self._encoded and len(url) <= budget:
                self._encoded[key] = url
                self._encoded_bytes += len(url)
                while self._encoded_bytes > budget:
                    self._encoded_bytes -= len(self._encoded.popitem(last=False)[1])
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


def _kind_from_name(model: str) -> CheckpointKind:
    name = model.lower()
    if "caption" in name:
        return "captioner"
    return "thinking" if "thinking" in name else "instruct"


def _second_user_turn(request: ChatRequest) -> int | None:
    """Where the conversation goes on once its oldest exchange is left out; None if only one message is left."""
    return next((i for i, turn in enumerate(request.turns) if i and turn.role == "user"), None)
