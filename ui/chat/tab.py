"""The Chat tab: multimodal turns in, streamed text and the spoken reply out.

Layout first, then the handlers, then the wiring, as in Gradio's own demos. The
conversation lives in a per-session ``ChatSession`` (``gr.State``); the engine is
shared, and every model-bound event uses the ``MODEL_QUEUE`` concurrency id.
"""

from __future__ import annotations

import logging
import os
import shutil
from contextlib import aclosing
from dataclasses import dataclass, field, replace

import gradio as gr

from backends.base import Backend
from media import MediaError, kind_of, pcm16
from backends.request import ChatRequest, MediaPart, Sampling, TextPart, Turn
from ui import examples
from ui.chat import archive
from ui.chat.feedback import FeedbackLog, feedback_entry, reply_settings
from ui.i18n import t
from messages import Message
from ui.messages import Say, translator
from ui.reply import ReplyState
from ui.reply_player import reply_player
from ui.scratch import session_folder
from ui.streaming import MODEL_QUEUE, EventPump, reply_updates, save_reply_audio

log = logging.getLogger(__name__)


SESSION_TTL_S = 6 * 3600
"""A conversation untouched this long is dropped with its files (a closed tab's too)."""

# The Qwen3-Omni README's recommended system prompt for spoken replies.
VOICE_ASSISTANT_PROMPT = (
    "You are Qwen-Omni, a smart voice assistant created by Alibaba Qwen. You are a virtual voice assistant with no "
    "gender or age.\nYou are communicating with the user.\nIn user messages, “I/me/my/we/our” refer to the user and "
    "“you/your” refer to the assistant. In your replies, address the user as “you/your” and yourself as “I/me/my”; "
    "never mirror the user’s pronouns—always shift perspective. Keep original pronouns only in direct quotes; if a "
    "reference is unclear, ask a brief clarifying question.\nInteract with users using short(no more than 50 words), "
    "brief, straightforward language, maintaining a natural tone.\nNever use formal phrasing, mechanical expressions, "
    "bullet points, overly structured language. \nYour output must consist only of the spoken content you want the "
    "user to hear. \nDo not include any descriptions of actions, emotions, sounds, or voice changes. \nDo not use "
    "asterisks, brackets, parentheses, or any other symbols to indicate tone or actions. \nYou must answer users' "
    "audio or text questions, do not directly describe the video content. \nYou should communicate in the same "
    "language strictly as the user unless they request otherwise.\nWhen you are uncertain (e.g., you can't see/hear "
    "clearly, don't understand, or the user makes a comment rather than asking a question), use appropriate "
    "questions to guide the user to continue the conversation.\nKeep replies concise and conversational, as if "
    "talking face-to-face."
)


@dataclass
class ChatSession:
    """One browser session's conversation (deep-copyable: Gradio copies the initial value)."""

    turns: list[Turn] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    """What the Chatbot shows: the turns plus notes (errors, stops), in Gradio's messages format."""
    use_audio_in_video: bool | None = None
    """Fixed by the first turn: changing it mid-conversation corrupts the model's positions."""
    folder: str | None = None
    """This session's reply audio files; removed when the session ends, expires or is cleared."""
    requests: dict[int, ChatRequest] = field(default_factory=dict)
    """Chat message index → the request that produced that reply. Its settings (``reply_settings``, for
    feedback and export) are worked out only when asked for: they hash the conversation's files."""

    def replies_folder(self) -> str:
        if self.folder is None:
            self.folder = session_folder("omni-replies-")
        return self.folder

    replying: bool = False
    """A reply is being generated for this conversation (not just waiting in the queue)."""
    closed: bool = False
    """Cleared or expired: a reply still finishing must not record itself (or make a new folder)."""

    def close(self) -> None:
        self.closed = True
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


@dataclass(frozen=True)
class ChatParts:
    chatbot: gr.Chatbot
    textbox: gr.MultimodalTextbox
    session: gr.State
    examples: gr.Dataset | None
    """The examples' buttons: Gradio doesn't translate their labels, so the page's load does (``example_labels``)."""


def build(backend: Backend, feedback: FeedbackLog | None = None, compare_with: Backend | None = None
          ) -> ChatParts:
    """The Chat tab; ``compare_with``: a second engine that Compare can answer with."""
    info = backend.info
    session = gr.State(ChatSession(), time_to_live=SESSION_TTL_S, delete_callback=ChatSession.close)

    chatbot = gr.Chatbot(label=t("Conversation"), height=520, buttons=["copy"], elem_id="chatbot")
    textbox = gr.MultimodalTextbox(
        placeholder=t("Type a message, attach images / audio / video, or record with the microphone…"),
        file_types=["image", "audio", "video"],
        file_count="multiple",
        sources=["upload", "microphone"],
        label=t("Message"),
        show_label=False,
        elem_id="chat-input",
    )
    with gr.Row():
        stop_button = gr.Button(t("⏹ Stop"), variant="stop", size="sm")
        retry_button = gr.Button(t("🔄 Retry"), size="sm")
        clear_button = gr.Button(t("🗑 Clear"), size="sm")
        export_button = gr.Button(t("⬇ Export"), size="sm")
        import_button = gr.UploadButton(t("⬆ Import"), file_types=[".zip"], size="sm")
    exported = gr.File(label=t("Conversation (zip)"), visible=False, elem_id="chat-export")
    reply_audio = reply_player(t("Spoken reply (plays while it is generated)"), visible=info.can_speak,
                               elem_id="reply-audio")
    status = gr.Markdown(t("Ready."), label=t("Status"), elem_id="chat-status")
    chat_examples = None
    if examples.available():
        chat_examples = gr.Examples(examples.chat_examples(), inputs=textbox, example_labels=examples.chat_labels(),
                                    label=t("Examples (click one, then press Enter)"), elem_id="chat-examples")
    with gr.Accordion(t("Settings"), open=False):
        with gr.Row():
            speaker = gr.Dropdown(
                list(info.speakers) or [""], value=default_speaker(info.speakers),
                label=t("Speaker"), visible=info.can_speak,
            )
            text_only = t("Text only: this backend and checkpoint don't speak.")
            speak = gr.Checkbox(info.can_speak, label=t("Speak the reply"), interactive=info.can_speak,
                                info=None if info.can_speak else text_only)
            use_audio_in_video = gr.Checkbox(True, label=t("Listen to the sound of videos"),
                                             info=t("Fixed once the conversation has started."))
        system_prompt = gr.Textbox("", label=t("System prompt"), lines=3, placeholder=t("(none)"))
        voice_preset = gr.Button(t("Use the voice-assistant prompt"), size="sm")
        with gr.Row():
            temperature = gr.Slider(0.0, 2.0, 0.7, step=0.05, label=t("Temperature (0 = greedy)"))
            top_p = gr.Slider(0.05, 1.0, 0.8, step=0.05, label=t("Top-p"))
            top_k = gr.Slider(1, 200, 20, step=1, label=t("Top-k"))
            max_tokens = gr.Slider(1, 8192, 64 if info.random_weights else 1024, step=1, label=t("Max new tokens"))
            seed = gr.Number(-1, label=t("Seed (-1 = random)"), precision=0)
    settings = [system_prompt, speaker, speak, use_audio_in_video, temperature, top_p, top_k, max_tokens, seed]

    def make_request(chat: ChatSession, system_prompt, speaker, speak, temperature, top_p, top_k, max_tokens,
                     seed) -> ChatRequest:
        return ChatRequest(
            turns=tuple(chat.turns),
            system_prompt=system_prompt or "",
            speaker=speaker or None,
            sampling=Sampling(float(temperature), float(top_p), int(top_k), int(max_tokens),
                              None if seed is None or int(seed) < 0 else int(seed)),
            return_audio=bool(speak) and info.can_speak,
            use_audio_in_video=bool(chat.use_audio_in_video),
        )

    async def respond(chat: ChatSession, message: dict | None, request: ChatRequest, say: Say):
        """Stream one reply into ``chat``; yields the outputs of chat/retry."""
        reply = ReplyState()
        shown = len(chat.messages)
        chat.replying = True
        events = None
        # Everything from the engine's start on is inside the try: Stop or a closed tab may close this
        # generator at any yield, the first included, and the finally must stop the engine.
        try:
            events = EventPump(backend.stream(request))
            yield chat.messages, chat, gr.MultimodalTextbox(value=None, interactive=False), say("Thinking…"), \
                gr.Checkbox(interactive=False), gr.skip()
            async for player in reply_updates(events, reply):
                chat.messages[shown:] = reply.messages(say=say)
                yield chat.messages, chat, gr.MultimodalTextbox(), reply.status(say), gr.Checkbox(), player
        finally:
            try:
                if events is not None:
                    await events.aclose()  # Stop or a closed tab lands here: the engine stops too
            finally:
                chat.replying = False
                _finish_turn(chat, reply, shown, message, say)
                for index in range(shown, len(chat.messages)):
                    chat.requests[index] = request
        # A turn that produced nothing gives its message back to the textbox so nothing typed is lost.
        textbox_value = message if reply.failed_without_reply else None
        yield chat.messages, chat, gr.MultimodalTextbox(value=textbox_value, interactive=True), reply.status(say), \
            gr.Checkbox(interactive=not chat.turns), gr.skip()

    async def chat(message, chat_session: ChatSession, system_prompt, speaker, speak, use_audio_in_video,
                   temperature, top_p, top_k, max_tokens, seed, http_request: gr.Request):
        """Send one user turn (text + files) and stream the reply."""
        say = translator(http_request)
        message = _normalize_message(message)
        try:
            parts = _user_parts(message)
        except MediaError as err:
            raise gr.Error(say(err)) from err
        if chat_session.use_audio_in_video is None:
            chat_session.use_audio_in_video = bool(use_audio_in_video)
        chat_session.turns.append(Turn("user", parts))
        chat_session.messages.extend(_user_messages(parts))
        request = make_request(chat_session, system_prompt, speaker, speak, temperature, top_p, top_k, max_tokens, seed)
        async with aclosing(respond(chat_session, message, request, say)) as replies:  # closing chat closes it
            async for outputs in replies:
                yield outputs

    async def retry(chat_session: ChatSession, system_prompt, speaker, speak, use_audio_in_video,
                    temperature, top_p, top_k, max_tokens, seed, http_request: gr.Request):
        """Generate the last reply again (e.g. with another speaker or seed)."""
        say = translator(http_request)
        if not chat_session.turns:
            raise gr.Error(say("Nothing to retry yet."))
        if chat_session.turns[-1].role == "assistant":
            chat_session.turns.pop()
        last_user = max(i for i, m in enumerate(chat_session.messages) if m["role"] == "user")
        del chat_session.messages[last_user + 1 :]
        request = make_request(chat_session, system_prompt, speaker, speak, temperature, top_p, top_k, max_tokens, seed)
        async with aclosing(respond(chat_session, None, request, say)) as replies:
            async for outputs in replies:
                yield outputs

    def clear(chat_session: ChatSession, http_request: gr.Request):
        chat_session.close()
        ready = translator(http_request)("Ready.")
        return [], ChatSession(), gr.MultimodalTextbox(value=None, interactive=True), ready, \
            gr.Checkbox(interactive=True), None

    def stop(chat_session: ChatSession, http_request: gr.Request):
        # A message still waiting in the queue leaves the chat (it stays in the textbox); a running
        # reply records itself as stopped.
        shown = gr.skip() if chat_session.replying else chat_session.messages
        return shown, gr.MultimodalTextbox(interactive=True), translator(http_request)("Stopped.")

    def show_waiting(message, chat_session: ChatSession):
        """The message shows in the chat at once, while its turn may still wait in the queue."""
        message = _normalize_message(message)
        try:
            parts = _user_parts(message)
        except MediaError:
            return gr.skip(), gr.skip()  # chat() names the problem
        return chat_session.messages + _user_messages(parts), gr.MultimodalTextbox(interactive=False)

    outputs = [chatbot, session, textbox, status, use_audio_in_video, reply_audio]
    chat_event = textbox.submit(
        show_waiting, [textbox, session], [chatbot, textbox], queue=False, api_visibility="private",
    ).then(
        chat, [textbox, session, *settings], outputs,
        api_name="chat", concurrency_id=MODEL_QUEUE, concurrency_limit=info.max_concurrency,
    )
    # The turn failed or the full queue turned it away: the chat shows the conversation as it is; the
    # message is still in the textbox.
    chat_event.failure(lambda chat_session: (chat_session.messages, gr.MultimodalTextbox(interactive=True)),
                       session, [chatbot, textbox], api_visibility="private", queue=False)
    retry_event = retry_button.click(
        retry, [session, *settings], outputs,
        api_name="retry", concurrency_id=MODEL_QUEUE, concurrency_limit=info.max_concurrency,
    )
    stop_button.click(stop, session, [chatbot, textbox, status], cancels=[chat_event, retry_event], api_name="stop",
                      queue=False)
    # Clear also cancels a running reply, or its next update would bring the old conversation back.
    clear_button.click(clear, session, outputs, cancels=[chat_event, retry_event], api_name="clear", queue=False)

    def export(chat_session: ChatSession, http_request: gr.Request):
        """The conversation as a zip: conversation.json, the media, the reply audio."""
        if not chat_session.turns:
            raise gr.Error(translator(http_request)("Nothing to export yet."))
        path = os.path.join(chat_session.replies_folder(), "conversation.zip")
        requests = chat_session.requests
        settings = reply_settings(info, requests[max(requests)]) if requests else {}  # hashes: a worker thread
        return gr.File(archive.export_conversation(chat_session.turns, path, settings), visible=True)

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
        for turn in turns:
            if turn.role == "user":
                fresh.messages.extend(_user_messages(turn.parts))
            else:
                fresh.messages.append({"role": "assistant", "content": turn.text})
                fresh.messages.extend({"role": "assistant", "content": {"path": p.path, "mime_type": "audio/wav"}}
                                      for p in turn.media)
        return fresh.messages, fresh, say(f"Imported {len(turns)} messages.")

    export_button.click(export, session, exported, api_name="export", queue=False)
    import_button.upload(import_, [import_button, session], [chatbot, session, status], api_name="import",
                         queue=False)
    if feedback is not None:
        with gr.Row():
            comment = gr.Textbox(label=t("Comment (sent with 👍/👎 on a reply, or alone on the last one)"), scale=4,
                                 elem_id="feedback-comment")
            send_comment = gr.Button(t("Send comment"), size="sm", scale=1)

        # Plain functions, so Gradio runs them on a worker thread: the settings hash the conversation's files.
        def rate(data: gr.LikeData, chat_session: ChatSession, text: str):
            rating = {True: "up", False: "down"}.get(data.liked)
            index = data.index if isinstance(data.index, int) else data.index[0]
            message = chat_session.messages[index] if index < len(chat_session.messages) else data.value
            request = chat_session.requests.get(index)
            settings = reply_settings(info, request) if request is not None else None
            feedback.write(feedback_entry(settings, _message_text(message), rating, text or ""))
            return ""

        def comment_on_last(chat_session: ChatSession, text: str, http_request: gr.Request):
            if not text.strip() or not chat_session.requests:
                raise gr.Error(translator(http_request)("Write a comment after a reply first."))
            index = max(chat_session.requests)
            feedback.write(feedback_entry(reply_settings(info, chat_session.requests[index]),
                                          _message_text(chat_session.messages[index]), None, text))
            return ""

        chatbot.like(rate, [session, comment], comment, api_visibility="private", queue=False)
        send_comment.click(comment_on_last, [session, comment], comment, api_visibility="private", queue=False)
    voice_preset.click(lambda: VOICE_ASSISTANT_PROMPT, None, system_prompt, api_visibility="private", queue=False)

    # Each side of Compare may use another engine (app.py --compare-api-base): label → backend.
    engines = {engine_label(info): backend}
    if compare_with is not None:
        label = engine_label(compare_with.info)
        engines[label if label not in engines else f"{label} (2)"] = compare_with
    with gr.Accordion(t("Compare replies"), open=False):
        gr.Markdown(t("Replays your last message twice, side by side, without changing the conversation."))
        sides = []
        with gr.Row():
            for name, engine_choice in zip(("A", "B"), (list(engines)[0], list(engines)[-1])):
                sides.append(_compare_side(name, [engine.info for engine in engines.values()], list(engines),
                                           engine_choice))
        compare_button = gr.Button(t("Replay both"), size="sm")

    async def compare(chat_session: ChatSession, system_prompt, speak, temperature, top_p, top_k, max_tokens,
                      speaker_a, seed_a, speaker_b, seed_b, backend_a, backend_b, http_request: gr.Request):
        """The last user message answered twice, with each side's engine, speaker and seed; the chat is left
        as it is."""
        say = translator(http_request)
        users = [i for i, turn in enumerate(chat_session.turns) if turn.role == "user"]
        if not users:
            raise gr.Error(say("Send a message first."))
        history = ChatSession(turns=chat_session.turns[: users[-1] + 1], use_audio_in_video=chat_session.use_audio_in_video)
        outputs = []
        for side_engine, side_speaker, side_seed in ((backend_a, speaker_a, seed_a), (backend_b, speaker_b, seed_b)):
            engine = engines[side_engine or engine_label(info)]  # Gradio refuses names not in the dropdown
            request = make_request(history, system_prompt, side_speaker, speak, temperature, top_p, top_k, max_tokens,
                                   side_seed)
            request = replace(request, return_audio=bool(speak) and engine.info.can_speak)
            reply = ReplyState()
            async for event in engine.stream(request):
                reply.handle(event)
            audio = reply.audio()
            text = reply.text or "; ".join(say(e) for e in reply.errors)
            outputs += [text, (reply.sample_rate, pcm16(audio)) if audio is not None and audio.size else None]
        return outputs

    compare_button.click(
        compare, [session, system_prompt, speak, temperature, top_p, top_k, max_tokens,
                  sides[0][0], sides[0][1], sides[1][0], sides[1][1], sides[0][2], sides[1][2]],
        [sides[0][3], sides[0][4], sides[1][3], sides[1][4]],
        api_name="compare", concurrency_id=MODEL_QUEUE, concurrency_limit=info.max_concurrency,
    )
    return ChatParts(chatbot=chatbot, textbox=textbox, session=session,
                     examples=chat_examples.dataset if chat_examples else None)


def _compare_side(name: str, infos: list, engine_labels: list[str], engine_choice: str) -> tuple:
    """One column of the comparison: its engine, speaker and seed, and the reply it got."""
    speakers = list(dict.fromkeys(speaker for info in infos for speaker in info.speakers))
    can_speak = any(info.can_speak for info in infos)
    with gr.Column():
        engine = gr.Dropdown(engine_labels, value=engine_choice, label=t(f"Engine {name}"),
                             visible=len(engine_labels) > 1, elem_id=f"compare-engine-{name.lower()}")
        with gr.Row():
            speaker = gr.Dropdown(speakers or [""], value=default_speaker(tuple(speakers)),
                                  label=t(f"Speaker {name}"), visible=can_speak)
            seed = gr.Number(7 if name == "A" else 8, label=t(f"Seed {name}"), precision=0)
        text = gr.Textbox(label=t(f"Reply {name}"), lines=3, elem_id=f"compare-{name.lower()}")
        audio = gr.Audio(label=t(f"Reply {name}"), visible=can_speak)
    return speaker, seed, engine, text, audio


def example_labels(http_request: gr.Request) -> gr.Dataset:
    """The examples' labels in the user's language."""
    say = translator(http_request)
    return gr.Dataset(sample_labels=[say(label) for label in examples.chat_labels()])


def engine_label(info) -> str:
    """How Compare names an engine: its backend and model."""
    return f"{info.backend} · {info.model}"


def _message_text(message) -> str:
    content = message.get("content") if isinstance(message, dict) else message
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def default_speaker(speakers: tuple[str, ...]) -> str:
    """Ethan is stock generate()'s default voice; otherwise the checkpoint's first ("" when mute)."""
    return "ethan" if "ethan" in speakers else (speakers[0] if speakers else "")


def _normalize_message(message) -> dict:
    if message is None:
        return {"text": "", "files": []}
    if isinstance(message, str):
        return {"text": message, "files": []}
    files = [f if isinstance(f, str) else (f.get("path") or "") for f in message.get("files") or []]
    return {"text": message.get("text") or "", "files": files}


def _user_parts(message: dict) -> tuple:
    if not message["text"].strip() and not message["files"]:
        raise MediaError("message", Message("chat.nothing_to_send"))
    # Media first, then the question: the order the Qwen3-Omni cookbooks use.
    media = tuple(MediaPart(kind_of(path), path) for path in message["files"])
    text = (TextPart(message["text"]),) if message["text"].strip() else ()
    return media + text


def _user_messages(parts: tuple) -> list[dict]:
    return [
        {"role": "user", "content": {"path": p.path}} if isinstance(p, MediaPart) else {"role": "user", "content": p.text}
        for p in parts
    ]


def _finish_turn(chat: ChatSession, reply: ReplyState, shown: int, message: dict | None, say: Say) -> None:
    """Record the reply (even a stopped or partial one) so the next turn sees it."""
    if chat.closed:
        return  # Clear (or expiry) ended this conversation while the reply ran: nothing to keep
    if reply.finish_reason is None:  # closed without Done: the user pressed Stop
        reply.finish_reason = "cancelled"
    if reply.failed_without_reply and message is not None:
        failed = chat.turns.pop()  # the turn produced nothing; its message goes back to the textbox
        del chat.messages[shown - len(failed.parts) :]  # one chat message per part
        chat.messages.extend(reply.messages(say=say))
        if not chat.turns:
            chat.use_audio_in_video = None  # nothing was said yet: the choice is open again
        return
    audio_path = save_reply_audio(reply, chat.replies_folder())
    extra = (MediaPart("audio", audio_path),) if audio_path else ()
    chat.turns.append(Turn.assistant(reply.text, *extra))
    chat.messages[shown:] = reply.messages(audio_path, say)


__all__ = ["ChatParts", "ChatSession", "VOICE_ASSISTANT_PROMPT", "build"]
