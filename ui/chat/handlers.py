"""The Chat tab's event handlers: send, retry, stop, clear, export, import and feedback.

They are methods of ``ChatHandlers``, which holds what they share (the engine and the feedback log); the
conversation itself comes in and goes out as each event's ``ChatSession``. A handler's name is the name
Gradio gives its event, and its parameters follow the event's inputs (``ui.chat.tab`` wires them).
"""

from __future__ import annotations

import os
from contextlib import aclosing

import gradio as gr

from backends.base import Backend
from backends.request import ChatRequest
from media import MediaError
from messages import Message
from ui.chat import archive
from ui.chat.feedback import FeedbackLog, feedback_entry, reply_settings
from ui.chat.session import (ChatSession, add_user_turn, finish_turn, make_request, message_text, normalize_message,
                             rewind_last_reply, turn_messages, user_messages, user_parts)
from ui.messages import Say, translator
from ui.reply import ReplyState
from ui.streaming import EventPump, reply_updates


class ChatHandlers:
    """The handlers of one Chat tab, bound to its engine.

    Example (as Gradio calls them; the settings in the order of the tab's Settings)::

        handlers = ChatHandlers(backend)
        session = ChatSession()
        async for chatbot, session, textbox, status, audio_in_video, player in handlers.chat(
                {"text": "Hello", "files": []}, session, "", "", False, True, 0.7, 0.8, 20, 64, -1, None):
            print(status)
    """

    def __init__(self, backend: Backend, feedback: FeedbackLog | None = None):
        self.backend = backend
        self.info = backend.info
        self.feedback = feedback

    async def respond(self, chat: ChatSession, message: dict | None, request: ChatRequest, say: Say):
        """Stream one reply into ``chat``; yields the outputs of chat/retry."""
        reply = ReplyState()
        shown = len(chat.messages)
        chat.replying = True
        events = None
        # Everything from the engine's start on is inside the try: Stop or a closed tab may close this
        # generator at any yield, the first included, and the finally must stop the engine.
        try:
            events = EventPump(self.backend.stream(request))
            yield chat.messages, chat, gr.MultimodalTextbox(value=None, interactive=False), \
                say(Message("ui.thinking")), gr.Checkbox(interactive=False), gr.skip()
            async for player in reply_updates(events, reply):
                chat.messages[shown:] = reply.messages(say=say)
                yield chat.messages, chat, gr.MultimodalTextbox(), reply.status(say), gr.Checkbox(), player
        finally:
            try:
                if events is not None:
                    await events.aclose()  # Stop or a closed tab lands here: the engine stops too
            finally:
                chat.replying = False
                finish_turn(chat, reply, shown, message, say)
                for index in range(shown, len(chat.messages)):
                    chat.requests[index] = request
        # A turn that produced nothing gives its message back to the textbox so nothing typed is lost.
        textbox_value = message if reply.failed_without_reply else None
        yield chat.messages, chat, gr.MultimodalTextbox(value=textbox_value, interactive=True), reply.status(say), \
            gr.Checkbox(interactive=not chat.turns), gr.skip()

    async def chat(self, message, chat_session: ChatSession, system_prompt, speaker, speak, use_audio_in_video,
                   temperature, top_p, top_k, max_tokens, seed, http_request: gr.Request):
        """Send one user turn (text + files) and stream the reply."""
        say = translator(http_request)
        message = normalize_message(message)
        try:
            add_user_turn(chat_session, message, use_audio_in_video)
        except MediaError as err:
            raise gr.Error(say(err)) from err
        request = make_request(chat_session, self.info.can_speak, system_prompt, speaker, speak, temperature, top_p,
                               top_k, max_tokens, seed)
        async with aclosing(self.respond(chat_session, message, request, say)) as replies:  # closing chat closes it
            async for outputs in replies:
                yield outputs

    async def retry(self, chat_session: ChatSession, system_prompt, speaker, speak, use_audio_in_video,
                    temperature, top_p, top_k, max_tokens, seed, http_request: gr.Request):
        """Generate the last reply again (e.g. with another speaker or seed)."""
        say = translator(http_request)
        if not rewind_last_reply(chat_session):
            raise gr.Error(say(Message("chat.nothing_to_retry")))
        request = make_request(chat_session, self.info.can_speak, system_prompt, speaker, speak, temperature, top_p,
                               top_k, max_tokens, seed)
        async with aclosing(self.respond(chat_session, None, request, say)) as replies:
            async for outputs in replies:
                yield outputs

    @staticmethod
    def clear(chat_session: ChatSession, http_request: gr.Request):
        chat_session.close()
        ready = translator(http_request)(Message("ui.ready"))
        return [], ChatSession(), gr.MultimodalTextbox(value=None, interactive=True), ready, \
            gr.Checkbox(interactive=True), None

    @staticmethod
    def stop(chat_session: ChatSession, http_request: gr.Request):
        # A message still waiting in the queue leaves the chat (it stays in the textbox); a running
        # reply records itself as stopped.
        shown = gr.skip() if chat_session.replying else chat_session.messages
        return shown, gr.MultimodalTextbox(interactive=True), translator(http_request)(Message("ui.stopped"))

    @staticmethod
    def show_waiting(message, chat_session: ChatSession):
        """The message shows in the chat at once, while its turn may still wait in the queue."""
        message = normalize_message(message)
        try:
            parts = user_parts(message)
        except MediaError:
            return gr.skip(), gr.skip()  # chat() names the problem
        return chat_session.messages + user_messages(parts), gr.MultimodalTextbox(interactive=False)

    def export(self, chat_session: ChatSession, http_request: gr.Request):
        """The conversation as a zip: conversation.json, the media, the reply audio."""
        return gr.File(self.export_zip(chat_session, http_request), visible=True)

    def export_zip(self, chat_session: ChatSession, http_request: gr.Request | None) -> str:
        """``export``'s zip file (a plain function: hashing the files runs on a worker thread)."""
        if not chat_session.turns:
            raise gr.Error(translator(http_request)(Message("chat.nothing_to_export")))
        path = os.path.join(chat_session.replies_folder(), "conversation.zip")
        requests = chat_session.requests
        settings = reply_settings(self.info, requests[max(requests)]) if requests else {}
        return archive.export_conversation(chat_session.turns, path, settings)

    @staticmethod
    def import_(file: str, chat_session: ChatSession, http_request: gr.Request):
        """Open an exported conversation and go on from it (the current one is replaced)."""
        say = translator(http_request)
        fresh = ChatSession()
        try:
            turns = archive.import_conversation(file, fresh.replies_folder())
        except MediaError as err:
            fresh.close()
            raise gr.Error(say(err)) from err
        chat_session.close()
        fresh.turns = turns
        fresh.messages.extend(turn_messages(turns))
        return fresh.messages, fresh, say(Message("chat.imported", {"count": len(turns)}))

    # Plain functions, so Gradio runs them on a worker thread: the settings hash the conversation's files.
    def rate(self, data: gr.LikeData, chat_session: ChatSession, text: str):
        rating = {True: "up", False: "down"}.get(data.liked)
        index = data.index if isinstance(data.index, int) else data.index[0]
        message = chat_session.messages[index] if index < len(chat_session.messages) else data.value
        request = chat_session.requests.get(index)
        settings = reply_settings(self.info, request) if request is not None else None
        self.feedback.write(feedback_entry(settings, message_text(message), rating, text or ""))
        return ""

    def comment_on_last(self, chat_session: ChatSession, text: str, http_request: gr.Request):
        if not text.strip() or not chat_session.requests:
            raise gr.Error(translator(http_request)(Message("chat.comment_needs_reply")))
        index = max(chat_session.requests)
        self.feedback.write(feedback_entry(reply_settings(self.info, chat_session.requests[index]),
                                           message_text(chat_session.messages[index]), None, text))
        return ""
