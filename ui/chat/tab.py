"""The Chat tab: multimodal turns in, streamed text and the spoken reply out.

The layout comes first, top-down, then the wiring, as in Gradio's own demos; the handlers are in
``ui.chat.handlers`` (Compare's in ``ui.chat.compare``). The conversation lives in a per-session
``ChatSession`` (``gr.State``); the engine is shared, and every model-bound event uses the ``MODEL_QUEUE``
concurrency id.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from backends.base import Backend, BackendInfo
from ui import examples
from ui.chat import compare
from ui.chat.feedback import FeedbackLog
from ui.chat.handlers import ChatHandlers
from ui.chat.session import SESSION_TTL_S, ChatSession
from ui.i18n import t
from ui.messages import translator
from ui.reply_player import reply_player
from ui.streaming import MODEL_QUEUE
from turns.voice import VOICE_ASSISTANT_PROMPT, default_speaker


@dataclass(frozen=True)
class ChatParts:
    chatbot: gr.Chatbot
    textbox: gr.MultimodalTextbox
    session: gr.State
    examples: gr.Dataset | None
    """The examples' buttons: Gradio doesn't translate their labels, so the page's load does (``example_labels``)."""


@dataclass(frozen=True)
class ChatSettings:
    """The Settings accordion; ``inputs`` is the order in which chat and retry take them."""

    system_prompt: gr.Textbox
    voice_preset: gr.Button
    speaker: gr.Dropdown
    speak: gr.Checkbox
    use_audio_in_video: gr.Checkbox
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    max_tokens: gr.Slider
    seed: gr.Number

    @property
    def inputs(self) -> list:
        return [self.system_prompt, self.speaker, self.speak, self.use_audio_in_video, self.temperature, self.top_p,
                self.top_k, self.max_tokens, self.seed]


def build(backend: Backend, feedback: FeedbackLog | None = None, compare_with: Backend | None = None
          ) -> ChatParts:
    """The Chat tab; ``compare_with``: a second engine that Compare can answer with."""
    info = backend.info
    handlers = ChatHandlers(backend, feedback)
    engines = compare.compare_engines(backend, compare_with)
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
        labels = [str(label) for label in examples.chat_labels()]  # English; the page's load translates them
        chat_examples = gr.Examples(examples.chat_examples(), inputs=textbox, example_labels=labels,
                                    label=t("Examples (click one, then press Enter)"), elem_id="chat-examples")
    settings = _settings(info)
    if feedback is not None:
        with gr.Row():
            comment = gr.Textbox(label=t("Comment (sent with 👍/👎 on a reply, or alone on the last one)"), scale=4,
                                 elem_id="feedback-comment")
            send_comment = gr.Button(t("Send comment"), size="sm", scale=1)
    comparison = compare.panel(engines)

    # Send: the message shows at once, then the reply streams in; chat and retry update the same outputs.
    outputs = [chatbot, session, textbox, status, settings.use_audio_in_video, reply_audio]
    chat_event = textbox.submit(
        handlers.show_waiting, [textbox, session], [chatbot, textbox], queue=False, api_visibility="private",
    ).then(
        handlers.chat, [textbox, session, *settings.inputs], outputs,
        api_name="chat", concurrency_id=MODEL_QUEUE, concurrency_limit=info.max_concurrency,
    )
    # The turn failed or the full queue turned it away: the chat shows the conversation as it is; the
    # message is still in the textbox.
    chat_event.failure(lambda chat_session: (chat_session.messages, gr.MultimodalTextbox(interactive=True)),
                       session, [chatbot, textbox], api_visibility="private", queue=False)
    retry_event = retry_button.click(
        handlers.retry, [session, *settings.inputs], outputs,
        api_name="retry", concurrency_id=MODEL_QUEUE, concurrency_limit=info.max_concurrency,
    )
    stop_button.click(handlers.stop, session, [chatbot, textbox, status], cancels=[chat_event, retry_event],
                      api_name="stop", queue=False)
    # Clear also cancels a running reply, or its next update would bring the old conversation back.
    clear_button.click(handlers.clear, session, outputs, cancels=[chat_event, retry_event], api_name="clear",
                       queue=False)
    export_button.click(handlers.export, session, exported, api_name="export", queue=False)
    import_button.upload(handlers.import_, [import_button, session], [chatbot, session, status], api_name="import",
                         queue=False)
    if feedback is not None:
        chatbot.like(handlers.rate, [session, comment], comment, api_visibility="private", queue=False)
        send_comment.click(handlers.comment_on_last, [session, comment], comment, api_visibility="private",
                           queue=False)
    settings.voice_preset.click(lambda: VOICE_ASSISTANT_PROMPT, None, settings.system_prompt,
                                api_visibility="private", queue=False)
    a, b = comparison.a, comparison.b
    comparison.button.click(
        compare.Compare(engines).compare,
        [session, settings.system_prompt, settings.speak, settings.temperature, settings.top_p, settings.top_k,
         settings.max_tokens, a.speaker, a.seed, b.speaker, b.seed, a.engine, b.engine],
        [a.text, a.audio, b.text, b.audio],
        api_name="compare", concurrency_id=MODEL_QUEUE, concurrency_limit=info.max_concurrency,
    )
    return ChatParts(chatbot=chatbot, textbox=textbox, session=session,
                     examples=chat_examples.dataset if chat_examples else None)


def _settings(info: BackendInfo) -> ChatSettings:
    """The Settings accordion (closed): voice, system prompt and sampling."""
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
    return ChatSettings(system_prompt=system_prompt, voice_preset=voice_preset, speaker=speaker, speak=speak,
                        use_audio_in_video=use_audio_in_video, temperature=temperature, top_p=top_p, top_k=top_k,
                        max_tokens=max_tokens, seed=seed)


def example_labels(http_request: gr.Request) -> gr.Dataset:
    """The examples' labels in the user's language."""
    say = translator(http_request)
    return gr.Dataset(sample_labels=[say(label) for label in examples.chat_labels()])


__all__ = ["ChatParts", "ChatSettings", "build", "example_labels"]
