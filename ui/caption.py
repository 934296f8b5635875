"""The Caption tab (placeholder until the captioner issue lands: one file in, a caption out)."""

from __future__ import annotations

import gradio as gr

from backends.base import Backend
from backends.request import ChatRequest, MediaPart, Sampling, TextPart, Turn
from ui.chat import MODEL_QUEUE
from ui.reply import ReplyState

CAPTION_INSTRUCTION = "Describe this audio in detail."


def build(backend: Backend) -> None:
    info = backend.info
    note = (
        "Captioner checkpoint: it needs no instruction." if info.kind == "captioner"
        else f"This checkpoint is not the Captioner: it is asked to “{CAPTION_INSTRUCTION}”"
    )
    gr.Markdown(f"Caption an audio file. {note}")
    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio")
    caption_button = gr.Button("Caption", variant="primary")
    caption = gr.Textbox(label="Caption", lines=6, buttons=["copy"])

    async def caption_audio(path: str | None):
        if not path:
            raise gr.Error("Upload or record an audio file first.")
        parts: tuple = (MediaPart("audio", path),)
        if info.kind != "captioner":
            parts += (TextPart(CAPTION_INSTRUCTION),)
        request = ChatRequest(turns=(Turn("user", parts),), return_audio=False,
                              sampling=Sampling(max_new_tokens=64 if info.random_weights else 1024))
        reply = ReplyState()
        async for event in backend.stream(request):
            reply.handle(event)
            yield reply.text
        if reply.errors:
            raise gr.Error("; ".join(e.message for e in reply.errors))

    caption_button.click(caption_audio, audio, caption, api_name="caption", concurrency_id=MODEL_QUEUE,
                         concurrency_limit=info.max_concurrency)
