"""One realtime connection: its settings, input audio, conversation and the response in progress.

``RealtimeSession.receive`` takes each client message in order (the server's read loop calls it); a response runs
as a task of its own beside it, so the client can append audio, cancel or talk over it meanwhile. What the client
may not do is answered by an ``error`` event (``protocol.Refusal``) and the session goes on; a client that keeps
sending what is refused is closed (``RealtimeLimits.max_refusals``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import pydantic
import soundfile
from openai.types.realtime import (ConversationItemAdded, ConversationItemDeletedEvent, ConversationItemDone,
                                   ConversationItemTruncatedEvent,
                                   InputAudioBufferClearedEvent, InputAudioBufferCommittedEvent,
                                   InputAudioBufferSpeechStartedEvent, InputAudioBufferSpeechStoppedEvent,
                                   RealtimeConversationItemUserMessage, SessionCreatedEvent, SessionUpdatedEvent)
from openai.types.realtime.realtime_conversation_item_user_message import Content as UserContent
from openai.types.realtime.realtime_server_event import ConversationItemRetrieved

import media
from api.media_urls import MediaURLError, read_data_url
from api.realtime.heard import heard_text
from api.realtime.items import Item, retrieved
from api.realtime.listening import Heard, InputAudio
from api.realtime.protocol import Refusal, SessionConfig, decode_pcm16, new_id, parse_client_event
from api.realtime.response import Response, Send
from api.realtime.transcription import Job, Transcriber
from backends.base import Backend
from backends.events import OUTPUT_SAMPLE_RATE
from backends.request import ChatRequest, MediaPart, Sampling, TextPart, Turn

log = logging.getLogger(__name__)

MIN_COMMIT_MS = 100
"""OpenAI refuses to commit less than 100 ms of audio; so do we."""


@dataclass(frozen=True)
class RealtimeLimits:
    """What one server and one session may hold, whatever clients send."""

    max_sessions: int = 32
    """Connections at once; more are refused (each holds a VAD model and its audio)."""
    max_message_bytes: int = 8 * 2**20
    """One client event (an image's data URL fits); bigger ones are refused. The transport closes at 16 MiB."""
    max_buffer_seconds: float = 60.0
    """Input audio held per session, and the longest turn or audio part."""
    max_items: int = 64
    """Conversation items kept; the oldest go (and their files). The engine fits what is left to its context."""
    max_refusals: int = 100
    """Refused events in one session before the server closes it (garbage or a flood)."""
    send_timeout_s: float = 30.0
    """A client that reads nothing for this long is closed, so a reply never waits on it forever."""


class RealtimeSession:
    def __init__(self, backend: Backend, limits: RealtimeLimits, send: Send, model: str):
        self.backend, self.limits, self._send_event, self.model = backend, limits, send, model
        self.id = new_id("sess")
        self.config = SessionConfig.default(backend.info.speakers)
        self.audio: InputAudio | None = None
        self.items: list[Item] = []
        self.response: Response | None = None
        self._task: asyncio.Task | None = None
        self._speech_item: str | None = None  # the item id the speech being heard will commit to
        self.refusals = 0
        self.closed = False
        self.folder = tempfile.mkdtemp(prefix="omni-realtime-")
        self.transcriber = Transcriber(backend, self.send, lambda: self.response, self._transcribed)

    async def send(self, event: pydantic.BaseModel) -> None:
        if not self.closed:
            await self._send_event(event)

    async def start(self) -> None:
        self.audio = await asyncio.to_thread(self._new_audio)
        await self.send(SessionCreatedEvent(type="session.created", event_id=new_id("event"),
                                            session=self.config.session(self.model)))

    async def receive(self, text: str) -> None:
        """One client message; refusals become ``error`` events."""
        try:
            if len(text) > self.limits.max_message_bytes:
                raise Refusal("message_too_large", f"A client event may be at most {self.limits.max_message_bytes} "
                              f"bytes; this one has {len(text)}.")
            event = parse_client_event(text)
            await getattr(self, "_on_" + event.type.replace(".", "_"))(event)
        except Refusal as refusal:
            self.refusals += 1
            await self.send(refusal.event())

    async def close(self) -> None:
        """The connection is gone: stop the response (the engine's work with it) and free the files."""
        self.closed = True
        await self.cancel_response("client_cancelled")
        await self.transcriber.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- session and input audio ------------------------------------------------------------------------------

    async def _on_session_update(self, event) -> None:
        before, self.config = self.config, self.config.updated(event)
        if (self.config.input_rate, self.config.turn_detection) != (before.input_rate, before.turn_detection):
            self.audio = await asyncio.to_thread(self._new_audio)  # a new rate or VAD: the buffer starts afresh
        await self.send(SessionUpdatedEvent(type="session.updated", event_id=new_id("event"),
                                            session=self.config.session(self.model)))

    def _new_audio(self) -> InputAudio:
        return InputAudio(self.config.input_rate, self.config.turn_detection, self.limits.max_buffer_seconds)

    async def _on_input_audio_buffer_append(self, event) -> None:
        # base64 is 4/3 of the bytes, 2 bytes a sample: refuse before decoding what can't be taken
        if self.audio.would_overflow(len(event.audio) * 3 // 8):
            raise Refusal("input_audio_buffer_full", f"The input audio buffer holds at most "
                          f"{self.limits.max_buffer_seconds:g} s; commit or clear it first.",
                          param="audio", event_id=event.event_id)
        samples = decode_pcm16(event.audio, param="audio", event_id=event.event_id)
        for heard in await asyncio.to_thread(self.audio.append, samples):
            await self._heard(heard)

    async def _heard(self, heard: Heard) -> None:
        vad = self.config.turn_detection
        if heard.started_ms is not None:
            self._speech_item = new_id("item")
            await self.send(InputAudioBufferSpeechStartedEvent(
                type="input_audio_buffer.speech_started", event_id=new_id("event"), audio_start_ms=heard.started_ms,
                item_id=self._speech_item))
            if self.response is not None and vad is not None and vad.interrupt_response is not False:
                await self.cancel_response("turn_detected")  # barge-in: the user talks over the reply
        if heard.turn is not None:
            item_id, self._speech_item = self._speech_item or new_id("item"), None
            await self.send(InputAudioBufferSpeechStoppedEvent(
                type="input_audio_buffer.speech_stopped", event_id=new_id("event"), audio_end_ms=heard.stopped_ms,
                item_id=item_id))
            await self._commit(heard.turn, item_id)
            if vad is not None and vad.create_response is not False and self.response is None:
                await self._respond(None)

    async def _on_input_audio_buffer_commit(self, event) -> None:
        audio = self.audio.take()
        if len(audio) * 1000 < MIN_COMMIT_MS * media.INPUT_SAMPLE_RATE:
            raise Refusal("input_audio_buffer_commit_empty", f"The buffer holds {len(audio) // 16} ms of audio; a "
                          f"commit needs at least {MIN_COMMIT_MS} ms.", event_id=event.event_id)
        await self._commit(audio, new_id("item"))

    async def _on_input_audio_buffer_clear(self, event) -> None:
        self.audio.clear()
        await self.send(InputAudioBufferClearedEvent(type="input_audio_buffer.cleared", event_id=new_id("event")))

    async def _commit(self, audio, item_id: str) -> None:
        path = os.path.join(self.folder, f"{item_id}.wav")
        await asyncio.to_thread(soundfile.write, path, audio, media.INPUT_SAMPLE_RATE, "PCM_16")
        previous = self.items[-1].id if self.items else None
        await self.send(InputAudioBufferCommittedEvent(type="input_audio_buffer.committed", event_id=new_id("event"),
                                                       item_id=item_id, previous_item_id=previous))
        user = RealtimeConversationItemUserMessage(type="message", role="user", id=item_id, object="realtime.item",
                                                   status="completed",
                                                   content=[UserContent(type="input_audio", transcript=None)])
        await self._add(Item(item_id, user, Turn("user", (MediaPart("audio", path),)), files=(path,)))
        self._transcribe(item_id, [(0, path, len(audio) / media.INPUT_SAMPLE_RATE)])

    # -- input transcription (``transcription.py``) -------------------------------------------------------------

    def _transcribe(self, item_id: str, audios: list[tuple[int, str, float]]) -> None:
        if self.config.transcription is None:
            return
        now = asyncio.get_running_loop().time()
        for index, path, seconds in audios:
            self.transcriber.add(Job(item_id, index, path, seconds, self.config.transcription, now))

    def _transcribed(self, item_id: str, index: int, text: str) -> None:
        """The transcript goes into the item as the client is shown it, not into the turn the model is given."""
        item = next((i for i in self.items if i.id == item_id), None)
        if item is not None:
            content = list(item.view.content)
            content[index] = content[index].model_copy(update={"transcript": text})
            item.view = item.view.model_copy(update={"content": content})

    # -- conversation ------------------------------------------------------------------------------------------

    async def _on_conversation_item_create(self, event) -> None:
        item, eid = event.item, event.event_id
        if getattr(item, "type", None) != "message":
            raise Refusal("unsupported_item", "Only message items are served here (no function calls or MCP).",
                          param="item.type", event_id=eid)
        item_id = item.id or new_id("item")
        if any(i.id == item_id for i in self.items):
            raise Refusal("item_exists", f"An item {item_id} exists already.", param="item.id", event_id=eid)
        echo = item.model_copy(update={"id": item_id, "object": "realtime.item", "status": "completed"})
        audios = []
        if item.role == "system":
            added = Item(item_id, echo, system_text="".join(part.text or "" for part in item.content))
        elif item.role == "assistant":
            text = "".join(part.text or part.transcript or "" for part in item.content)
            added = Item(item_id, echo, Turn.assistant(text))
        else:
            parts, files, audios = await self._user_parts(item.content, item_id, eid)
            # the audio and images went to files: the echo doesn't send them back (``retrieve`` does)
            echo.content = [part.model_copy(update={"audio": None, "image_url": None}) for part in item.content]
            added = Item(item_id, echo, Turn("user", tuple(parts)), files=tuple(files))
        await self._add(added)
        self._transcribe(item_id, audios)

    async def _user_parts(self, content: list[Any], item_id: str, eid: str | None) -> tuple[list, list[str], list]:
        """The turn's parts, the files they were written to, and each audio part's (index, file, seconds)."""
        parts, files, audios = [], [], []
        for index, part in enumerate(content):
            param = f"item.content[{index}]"
            if part.type == "input_text":
                parts.append(TextPart(part.text or ""))
            elif part.type == "input_audio":
                samples = decode_pcm16(part.audio or "", param=f"{param}.audio", event_id=eid)
                if len(samples) > self.limits.max_buffer_seconds * self.config.input_rate:
                    raise Refusal("audio_too_long", f"An audio part may last {self.limits.max_buffer_seconds:g} s.",
                                  param=f"{param}.audio", event_id=eid)
                path = os.path.join(self.folder, f"{item_id}-{index}.wav")
                audio = media.resample(samples, self.config.input_rate, media.INPUT_SAMPLE_RATE)
                await asyncio.to_thread(soundfile.write, path, audio, media.INPUT_SAMPLE_RATE, "PCM_16")
                parts.append(MediaPart("audio", path))
                files.append(path)
                audios.append((index, path, len(audio) / media.INPUT_SAMPLE_RATE))
            elif part.type == "input_image":
                path = await self._image_file(part.image_url or "", f"{item_id}-{index}", f"{param}.image_url", eid)
                parts.insert(0, MediaPart("image", path))  # images first, as the tabs send them
                files.append(path)
            else:
                raise Refusal("invalid_value", f"A user message holds input_text, input_audio or input_image parts, "
                              f"not {part.type!r}.", param=f"{param}.type", event_id=eid)
        if not parts:
            raise Refusal("invalid_value", "The message is empty.", param="item.content", event_id=eid)
        return parts, files, audios

    async def _image_file(self, url: str, name: str, param: str, eid: str | None) -> str:
        """A data: URL's image (the types the chat API takes), written to the session's folder and checked as the
        tabs check uploads."""
        try:
            suffix, raw = read_data_url(url, "image")
        except MediaURLError as err:
            raise Refusal("invalid_image", str(err), param=param, event_id=eid) from None
        path = os.path.join(self.folder, name + suffix)
        with open(path, "wb") as file:
            file.write(raw)
        try:
            await asyncio.to_thread(media.load_image, path)
        except media.MediaError as err:
            os.remove(path)
            raise Refusal("invalid_image", str(err.msg), param=param, event_id=eid) from None
        return path

    async def _add(self, item: Item) -> None:
        previous = self.items[-1].id if self.items else None
        self.items.append(item)
        while len(self.items) > self.limits.max_items:
            self._forget(self.items.pop(0))
        for kind in (ConversationItemAdded, ConversationItemDone):
            name = "conversation.item.added" if kind is ConversationItemAdded else "conversation.item.done"
            await self.send(kind(type=name, event_id=new_id("event"), item=item.view, previous_item_id=previous))

    def _forget(self, item: Item) -> None:
        self.transcriber.forget(item.id)
        for path in item.files:
            if os.path.exists(path):
                os.remove(path)

    def _item(self, event) -> Item:
        item = next((i for i in self.items if i.id == event.item_id), None)
        if item is None:
            raise Refusal("item_not_found", f"No item {event.item_id}.", param="item_id", event_id=event.event_id)
        return item

    async def _on_conversation_item_retrieve(self, event) -> None:
        speaking = self.response
        if speaking is not None and speaking.item_id == event.item_id:  # the reply being made: its text so far
            view = speaking.item(speaking.text)
        else:
            view = await asyncio.to_thread(retrieved, self._item(event), self.config.input_rate)
        await self.send(ConversationItemRetrieved(type="conversation.item.retrieved", event_id=new_id("event"),
                                                  item=view))

    async def _on_conversation_item_delete(self, event) -> None:
        item = self._item(event)
        self.items.remove(item)
        self._forget(item)
        await self.send(ConversationItemDeletedEvent(type="conversation.item.deleted", event_id=new_id("event"),
                                                     item_id=item.id))

    async def _not_yet(self, event) -> None:
        raise Refusal("not_supported", f"{event.type} is not served yet.", param="type", event_id=event.event_id)

    _on_output_audio_buffer_clear = _not_yet

    async def _on_conversation_item_truncate(self, event) -> None:
        """The client played ``audio_end_ms`` of a spoken reply (the user talked over the rest): the conversation
        keeps only the text that speech said (``heard.py``), so the model doesn't believe it said what nobody
        heard. Truncating the reply still speaking ends it first; a truncate refused changes nothing."""
        eid, speaking = event.event_id, self.response
        if event.content_index != 0:
            raise Refusal("invalid_value", "A spoken reply has one content part, index 0.", param="content_index",
                          event_id=eid)
        if speaking is not None and speaking.item_id == event.item_id:
            sent_ms = speaking.audio_samples * 1000 // OUTPUT_SAMPLE_RATE
            if not 0 <= event.audio_end_ms <= sent_ms:
                raise Refusal("invalid_value", f"audio_end_ms {event.audio_end_ms} is outside the {sent_ms} ms of "
                              "audio sent so far.", param="audio_end_ms", event_id=eid)
            await self.cancel_response("client_cancelled")
        item = next((i for i in self.items if i.id == event.item_id), None)
        if item is None and speaking is not None and speaking.item_id == event.item_id:
            pass  # cut before anything of it was heard: nothing of it is in the conversation to cut
        elif item is None or item.turn is None or item.turn.role != "assistant" or not item.audio_ms:
            raise Refusal("item_not_found" if item is None else "invalid_value",
                          f"No spoken assistant item {event.item_id} to truncate.", param="item_id", event_id=eid)
        if item is not None:
            if not 0 <= event.audio_end_ms <= item.audio_ms:
                raise Refusal("invalid_value", f"audio_end_ms {event.audio_end_ms} is outside the reply's "
                              f"{item.audio_ms} ms of audio.", param="audio_end_ms", event_id=eid)
            item.truncate(heard_text(item.turn.text, item.spoken_chars, event.audio_end_ms / item.audio_ms,
                                     event.audio_end_ms / 1000), event.audio_end_ms)
        await self.send(ConversationItemTruncatedEvent(
            type="conversation.item.truncated", event_id=new_id("event"), item_id=event.item_id, content_index=0,
            audio_end_ms=event.audio_end_ms))

    # -- responses ---------------------------------------------------------------------------------------------

    async def _on_response_create(self, event) -> None:
        if self.response is not None:
            raise Refusal("conversation_already_has_active_response", f"Response {self.response.id} is in progress; "
                          "cancel it or wait for response.done.", event_id=event.event_id)
        await self._respond(event)

    async def _on_response_cancel(self, event) -> None:
        if self.response is None or (event.response_id and event.response_id != self.response.id):
            raise Refusal("response_cancel_not_active", "No response in progress to cancel.",
                          param="response_id", event_id=event.event_id)
        await self.cancel_response("client_cancelled")

    async def _respond(self, event) -> None:
        params, eid = (event.response if event is not None else None), getattr(event, "event_id", None)
        if params is not None and (params.input is not None or params.conversation == "none" or params.tools):
            raise Refusal("not_supported", "Out-of-band responses (input, conversation 'none') and tools are not "
                          "served yet.", param="response", event_id=eid)
        config = self.config
        if params is not None:
            config = config.updated_for_response(params, eid)
        turns = tuple(item.turn for item in self.items if item.turn is not None)
        if not turns or turns[-1].role != "user":
            raise Refusal("no_user_turn", "There is nothing to answer: the conversation must end with a user "
                          "message.", event_id=eid)
        info = self.backend.info
        tokens = config.max_output_tokens or (64 if info.random_weights else 1024)
        system = "\n\n".join(t for t in [config.instructions, *(i.system_text for i in self.items)] if t)
        request = ChatRequest(turns, system_prompt=system, speaker=config.voice, return_audio=config.speaks,
                              sampling=Sampling(max_new_tokens=tokens), use_audio_in_video=False)
        self.response = Response(self.send, speaks=config.speaks, voice=config.voice, max_output_tokens=tokens,
                                 on_end=self._ended)
        self._task = asyncio.create_task(self.response.run(self.backend, request), name=f"realtime {self.response.id}")
        self.transcriber.reply_asked()
        # A send that failed (the client left) ends the task with that error: the read loop closes the session.
        self._task.add_done_callback(lambda task: task.cancelled() or task.exception())

    def _ended(self, response: Response) -> None:
        text, spoken = response.text, response.spoken_chars
        audio_ms = response.audio_samples * 1000 // OUTPUT_SAMPLE_RATE
        if response.status == "completed":
            spoken = len(text)
        elif response.speaks and response.status == "cancelled":  # cut short while it spoke: the text its speech
            text = heard_text(text, spoken, 1.0, audio_ms / 1000)  # hadn't reached was never heard
            spoken = len(text)
        if text:  # what was said stays in the conversation (``conversation.item.truncate`` cuts it further)
            self.items.append(Item(response.item_id, response.item(text), Turn.assistant(text), audio_ms=audio_ms,
                                   spoken_chars=spoken))
        if self.response is response:
            self.response, self._task = None, None

    async def cancel_response(self, reason: str) -> None:
        """Stop the response in progress and wait for its ``response.done`` (status cancelled)."""
        task, response = self._task, self.response
        if task is None or response is None or task.done():
            return
        response.cancel_reason, response.cancel_requested = reason, True
        if response.streaming:  # else run() sees cancel_requested before it asks the engine
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
