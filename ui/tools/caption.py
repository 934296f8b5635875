"""The Caption tools: the Caption tab's own handlers (``/caption``, ``/caption_batch``), each call's final answer."""

# No `from __future__ import annotations`: gr.api reads a tool's outputs from its return annotation as it
# stands (a string would be one output).

import json

import gradio as gr

from backends.base import Backend
from ui.caption import RESULT_COLUMNS
from ui.messages import translator
from ui.streaming import MODEL_QUEUE
from ui.tools.common import File, ToolSet, path_of, rows


def register(tools: ToolSet, backend: Backend) -> None:
    info = backend.info
    captioner = info.kind == "captioner"
    longest = 64 if info.random_weights else 1024
    heat = 0.6 if captioner else 0.7
    model = {"concurrency_id": MODEL_QUEUE, "concurrency_limit": info.max_concurrency}

    async def caption_file(file: File, instruction: str = "", temperature: float = heat, top_p: float = 0.95,
                           top_k: int = 20, max_tokens: int = longest, http_request: gr.Request = None) -> str:
        """Caption one audio or video file in detail: the speech (with its words), the speakers, sounds, music and
        setting. A video's sound track is captioned; long audio is captioned in 30 s segments, each headed by its time
        range.

        Args:
            file: the audio or video file, as an http(s) URL or a data: URI (base64)
            instruction: an extra instruction, e.g. "Focus on the background sounds." (empty: none)
            temperature: sampling temperature; 0 is greedy
            top_p: nucleus sampling
            top_k: sample among this many likeliest tokens
            max_tokens: the longest caption (of each segment), in tokens
        Returns:
            caption: the caption text
        """
        caption = ""
        handler = tools.ui("caption")
        async for caption in handler(path_of(file, translator(http_request)), instruction, temperature, top_p, top_k,
                                     max_tokens, http_request):
            pass
        return caption

    async def caption_batch(files: list[File], instruction: str = "", temperature: float = heat, top_p: float = 0.95,
                            top_k: int = 20, max_tokens: int = longest, http_request: gr.Request = None) -> str:
        """Caption many audio or video files (or .zip archives of them) one after another; a file that can't be
        captioned gets its error in its row and the others go on.

        Args:
            files: the files, each an http(s) URL or a data: URI (base64)
            instruction: an extra instruction for every file (empty: none)
            temperature: sampling temperature; 0 is greedy
            top_p: nucleus sampling
            top_k: sample among this many likeliest tokens
            max_tokens: the longest caption (of each segment), in tokens
        Returns:
            captions: JSON, one record per file: file, duration_s, caption, seconds_taken, error
        """
        say = translator(http_request)
        table: list[list] = []
        handler = tools.ui("caption_batch")
        async for table, _downloads, _progress in handler([path_of(file, say) for file in files or []], instruction,
                                                         temperature, top_p, top_k, max_tokens, http_request):
            pass
        return json.dumps(rows(RESULT_COLUMNS, table), ensure_ascii=False)

    tools.add(caption_file, **model)
    tools.add(caption_batch, **model)
