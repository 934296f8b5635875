"""The Chat tools: a conversation that an agent names by its id, answered in text and, when asked, speech.

Each reply goes through the same steps as the Chat tab's (``ui.chat.session``): the same turns, the same
request, the same record of the reply, so an exported conversation is the tab's too.
"""

# No `from __future__ import annotations`: gr.api reads a tool's outputs from its return annotation as it
# stands (a string would be one output).

import json
import tempfile
from pathlib import Path

import gradio as gr
import soundfile

from backends.base import Backend
from media import MediaError
from messages import Message
from ui.chat import compare
from ui.chat.handlers import ChatHandlers
from ui.chat.session import SESSION_TTL_S, ChatSession, add_user_turn, finish_turn, make_request, rewind_last_reply
from ui.messages import Say, translator
from ui.reply import ReplyState
from ui.streaming import MODEL_QUEUE
from ui.tools.common import File, Store, ToolSet, choices, file_out, path_of
from turns.voice import default_speaker

CONVERSATIONS = 256
"""Conversations kept at once; beyond it the least recently used one ends."""


def register(tools: ToolSet, backend: Backend, compare_with: Backend | None = None) -> None:
    info = backend.info
    handlers = ChatHandlers(backend)
    engines = compare.compare_engines(backend, compare_with)
    comparer = compare.Compare(engines)
    conversations: Store[ChatSession] = Store(ChatSession.close, SESSION_TTL_S, CONVERSATIONS,
                                              "tools.no_conversation")
    voice = default_speaker(info.speakers)
    labels = list(engines)
    longest = 64 if info.random_weights else 1024
    model = {"concurrency_id": MODEL_QUEUE, "concurrency_limit": info.max_concurrency}

    async def answer(chat: ChatSession, message: dict | None, request, say: Say) -> tuple[str, File | str, str]:
        """Stream one reply into the conversation; (text, speech, notes)."""
        reply = ReplyState()
        shown = len(chat.messages)
        chat.replying = True
        stream = backend.stream(request)
        try:
            async for event in stream:
                reply.handle(event)
        finally:
            try:
                await stream.aclose()  # a cancelled call stops the engine too
            finally:
                chat.replying = False
                finish_turn(chat, reply, shown, message, say)
                for index in range(shown, len(chat.messages)):
                    chat.requests[index] = request
        if reply.failed_without_reply:
            raise gr.Error("; ".join(say(error) for error in reply.errors))
        last = chat.turns[-1]
        speech = last.media[0].path if last.role == "assistant" and last.media else None
        notes = [m["content"] for m in reply.messages(speech, say)
                 if isinstance(m["content"], str) and not m.get("metadata") and m["content"] != reply.text]
        return reply.text, file_out(speech), "\n".join(notes)

    async def chat(message: str = "", files: list[File] | None = None, conversation_id: str = "",
                   speak: bool = False, speaker: str = voice, system_prompt: str = "", use_audio_in_video: bool = True,
                   temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20, max_tokens: int = longest,
                   seed: int = -1, http_request: gr.Request = None) -> tuple[str, str, File | str, str]:
        """Talk with Qwen3-Omni: send a message (text, and image, audio or video files) and get its reply as text, and
        as speech when speak is on. Without a conversation_id a new conversation starts; pass the returned id to go on
        with it (later turns see the earlier ones).

        Args:
            message: what you say (may be empty when files are given)
            files: images, audio or video to look at or listen to, each an http(s) URL or a data: URI (base64)
            conversation_id: the id a previous chat call returned, to go on with that conversation; empty: a new one
            speak: also answer in speech (a WAV file URL), as the model's talker speaks it
            speaker: the voice of the spoken reply
            system_prompt: instructions for the whole conversation (empty: none)
            use_audio_in_video: let the model hear the sound of videos too (fixed by a conversation's first message)
            temperature: sampling temperature; 0 is greedy (the same input gives the same reply)
            top_p: nucleus sampling
            top_k: sample among this many likeliest tokens
            max_tokens: the longest reply, in tokens
            seed: a seed for a reproducible reply; -1 is random
        Returns:
            reply: the model's reply text
            conversation_id: the conversation's id, for the next call
            speech: the URL of the spoken reply (a WAV), or empty when not spoken
            notes: what else happened (the reply was cut at max_tokens, speech failed, ...), or empty
        """
        say = translator(http_request)
        paths = [path_of(file, say) for file in files or []]
        key = conversation_id.strip() or conversations.add(ChatSession())
        session = conversations.take(key, say)
        try:
            sent = {"text": message or "", "files": paths}
            try:
                add_user_turn(session, sent, use_audio_in_video)
            except MediaError as err:
                raise gr.Error(say(err)) from err
            request = make_request(session, info.can_speak, system_prompt, speaker, speak, temperature, top_p, top_k,
                                   max_tokens, seed)
            text, speech, notes = await answer(session, sent, request, say)
        except BaseException:
            if not conversation_id.strip():
                conversations.drop(key)  # a new conversation whose first turn failed: its id never reaches anyone
            raise
        finally:
            conversations.give_back(key)
        return text, key, speech, notes

    async def chat_retry(conversation_id: str, speak: bool = False, speaker: str = voice, system_prompt: str = "",
                         temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20, max_tokens: int = longest,
                         seed: int = -1, http_request: gr.Request = None) -> tuple[str, File | str, str]:
        """Generate the last reply of a conversation again, e.g. with another seed, speaker or temperature; the new
        reply replaces the old one in the conversation.

        Args:
            conversation_id: the id chat returned
            speak: also answer in speech (a WAV file URL)
            speaker: the voice of the spoken reply
            system_prompt: instructions for the whole conversation (empty: none)
            temperature: sampling temperature; 0 is greedy
            top_p: nucleus sampling
            top_k: sample among this many likeliest tokens
            max_tokens: the longest reply, in tokens
            seed: a seed for a reproducible reply; -1 is random
        Returns:
            reply: the new reply text
            speech: the URL of the spoken reply (a WAV), or empty
            notes: what else happened, or empty
        """
        say = translator(http_request)
        session = conversations.take(conversation_id, say)
        try:
            if not rewind_last_reply(session):
                raise gr.Error(say(Message("chat.nothing_to_retry")))
            request = make_request(session, info.can_speak, system_prompt, speaker, speak, temperature, top_p, top_k,
                                   max_tokens, seed)
            return await answer(session, None, request, say)
        finally:
            conversations.give_back(conversation_id)

    async def chat_compare(conversation_id: str, speak: bool = False, system_prompt: str = "",
                           temperature: float = 0.7, top_p: float = 0.8, top_k: int = 20, max_tokens: int = longest,
                           speaker_a: str = voice, seed_a: int = 7, speaker_b: str = voice, seed_b: int = 8,
                           engine_a: str = labels[0], engine_b: str = labels[-1], http_request: gr.Request = None
                           ) -> tuple[str, File | str, str, File | str]:
        """Answer a conversation's last user message twice, side by side (A and B, each with its own engine, speaker and
        seed), to compare them; the conversation stays as it was.

        Args:
            conversation_id: the id chat returned
            speak: also answer in speech (WAV file URLs)
            system_prompt: instructions for the conversation (empty: none)
            temperature: sampling temperature; 0 is greedy
            top_p: nucleus sampling
            top_k: sample among this many likeliest tokens
            max_tokens: the longest reply, in tokens
            speaker_a: A's voice
            seed_a: A's seed (-1: random)
            speaker_b: B's voice
            seed_b: B's seed (-1: random)
            engine_a: the engine A answers with (the app's own, or the one it compares with)
            engine_b: the engine B answers with
        Returns:
            reply_a: A's reply text
            speech_a: the URL of A's spoken reply, or empty
            reply_b: B's reply text
            speech_b: the URL of B's spoken reply, or empty
        """
        session = conversations.take(conversation_id, translator(http_request))
        try:
            text_a, audio_a, text_b, audio_b = await comparer.compare(
                session, system_prompt, speak, temperature, top_p, top_k, max_tokens, speaker_a, seed_a, speaker_b,
                seed_b, engine_a, engine_b, http_request)
            return text_a, _saved(audio_a, session), text_b, _saved(audio_b, session)
        finally:
            conversations.give_back(conversation_id)

    def chat_export(conversation_id: str, http_request: gr.Request = None) -> File:
        """Export a conversation as a zip (conversation.json, its files and the spoken replies), which chat_import, or
        the Chat tab's Import, takes back.

        Args:
            conversation_id: the id chat returned
        Returns:
            conversation: the URL of the zip
        """
        session = conversations.take(conversation_id, translator(http_request))
        try:
            return file_out(handlers.export_zip(session, http_request))
        finally:
            conversations.give_back(conversation_id)

    def chat_import(file: File, http_request: gr.Request = None) -> tuple[str, str]:
        """Open a conversation exported by chat_export or the Chat tab's Export, to go on with it through chat.

        Args:
            file: the exported zip, as an http(s) URL or a data: URI
        Returns:
            conversation_id: the imported conversation's id, for chat
            conversation: the conversation so far, as JSON: a list of {role, text, files}
        """
        say = translator(http_request)
        _messages, session, _status = handlers.import_(path_of(file, say), ChatSession(), http_request)
        return conversations.add(session), json.dumps(_transcript(session), ensure_ascii=False)

    # The choices the schema offers (before the tools are added: Gradio reads the types then).
    chat.__annotations__["speaker"] = chat_retry.__annotations__["speaker"] = choices(info.speakers)
    chat_compare.__annotations__["speaker_a"] = chat_compare.__annotations__["speaker_b"] = choices(
        speaker for engine in engines.values() for speaker in engine.info.speakers)
    chat_compare.__annotations__["engine_a"] = chat_compare.__annotations__["engine_b"] = choices(labels)
    tools.add(chat, **model)
    tools.add(chat_retry, **model)
    tools.add(chat_compare, **model)
    tools.add(chat_export, concurrency_limit=None)
    tools.add(chat_import, concurrency_limit=None)


def _saved(audio, session: ChatSession) -> File | str:
    """Compare's (rate, samples) as a WAV in the conversation's folder."""
    if audio is None:
        return ""
    rate, samples = audio
    path = tempfile.NamedTemporaryFile(dir=session.replies_folder(), suffix=".wav", delete=False).name
    soundfile.write(path, samples, rate)
    return file_out(path)


def _transcript(session: ChatSession) -> list[dict]:
    """The conversation as an agent reads it: each turn's role, text and file names."""
    return [{"role": turn.role, "text": turn.text, "files": [Path(part.path).name for part in turn.media]}
            for turn in session.turns]

