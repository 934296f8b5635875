"""Messages made at run time (chat notes, errors, the status line) in the user's language.

``gr.I18n`` translates only texts fixed when the page is built, in the browser. Messages made
while a turn runs are chosen here, on the server, from the request's ``Accept-Language``
(the browser's language; Gradio's own language switch in Settings never reaches the server).
Engines, media checks and file imports send a ``messages.Message`` (a code and its values):
``say`` renders it from ``messages.table`` by its code. The UI's own texts below are still
looked up by their English; a text with no template stays English.
"""

from __future__ import annotations

import re
from typing import Callable, Literal, Union

import gradio as gr

from messages import Message

Language = Literal["en", "zh"]
Sayable = Union[str, Message, object]
"""The UI's own text, a ``Message``, or what carries one as ``msg`` (``Error``, ``Notice``, ``MediaError``…)."""
Say = Callable[[Sayable], str]

ZH_TEMPLATES = {
    # The chat and its status line (ui/chat/tab.py, ui/reply.py, ui/live/tab.py)
    "Ready.": "就绪。",
    "Stopped.": "已停止。",
    "Thinking…": "思考中…",
    "Thinking": "思考过程",
    "Generating…": "生成中…",
    "Finished ({reason}).": "已结束（{reason}）。",
    "first token {seconds} s": "首个词元 {seconds} 秒",
    "{speed} tok/s": "{speed} 词元/秒",
    "{prompt} prompt + {reply} reply tokens": "提示 {prompt} + 回复 {reply} 个词元",
    "speech {seconds} s": "语音 {seconds} 秒",
    "first audio {seconds} s": "首段语音 {seconds} 秒",
    "talker {speed} frames/s": "Talker {speed} 帧/秒",
    "RTF {value}": "实时率 {value}",
    "total {seconds} s": "总计 {seconds} 秒",
    "⏹ Stopped.": "⏹ 已停止。",
    "✂️ Reached the max-tokens limit.": "✂️ 已达到最大生成长度。",
    "(empty reply)": "（空回复）",
    "✋ Interrupted.": "✋ 已打断。",
    "Imported {count} messages.": "已导入 {count} 条消息。",
    "Nothing to retry yet.": "还没有可以重新生成的回复。",
    "Nothing to export yet.": "还没有可以导出的对话。",
    "Write a comment after a reply first.": "请先在有回复之后填写评论。",
    "Send a message first.": "请先发送一条消息。",
    # The Caption tab (ui/caption.py)
    "Upload or record an audio file first.": "请先上传或录制一个音频文件。",
    "Add some audio or video files (or a .zip of them) first.": "请先添加音频或视频文件（或它们的 .zip 压缩包）。",
    "Captioning {file}": "正在描述 {file}",
    "{done} of {total} files done.": "已完成 {done} / {total} 个文件。",
    "Stopped: the rows above are kept.": "已停止：上面的结果会保留。",
    # The Evaluate tab (ui/evaluate/)
    "Running…": "运行中…",
    "Answering {row}…": "正在回答 {row}…",
    "{row} done.": "{row} 已完成。",
    "Resuming: {count} rows left, with the run's own set-ups.": "继续运行：剩余 {count} 行，沿用本次评测的配置。",
    "Every row is done: pick a row to listen and rate it, then export.": "全部完成：选中一行收听并评分，然后导出。",
    "Stopped: the rows done are kept; ▶ Run answers the {count} left.": "已停止：已完成的行会保留；▶ 运行 会回答剩余的 {count} 行。",
    "Nothing to export yet: run a prompt set first.": "还没有可导出的内容：请先运行一组提示。",
    "Can't import it: {cause}": "无法导入：{cause}",
    "Imported {count} rows: rate on, or ▶ Run the {left} not answered.": "已导入 {count} 行：继续评分，或 ▶ 运行 未回答的 {left} 行。",
    "Reference:": "参考答案：",
    "(not answered yet)": "（尚未回答）",
}

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _pattern(template: str) -> re.Pattern:
    pieces = _PLACEHOLDER.split(template)  # literal, name, literal, name, …
    regex = "".join(re.escape(piece) if i % 2 == 0 else f"(?P<{piece}>.+?)" for i, piece in enumerate(pieces))
    return re.compile(regex, re.DOTALL)


# The most specific template first ("Stopped: the rows above are kept." before "Stopped.").
_ZH = [(_pattern(english), chinese)
       for english, chinese in sorted(ZH_TEMPLATES.items(), key=lambda item: -len(_PLACEHOLDER.sub("", item[0])))]


def to_chinese(text: str) -> str:
    """The UI's own ``text`` in Chinese where a template matches it, else unchanged."""
    for pattern, chinese in _ZH:
        if match := pattern.fullmatch(text):
            return chinese.format(**match.groupdict())
    return text


def render(what: Sayable, language: Language) -> str:
    """``what`` in ``language``: a message by its code, the UI's own text by its English."""
    if isinstance(what, str):
        return to_chinese(what) if language == "zh" else what
    message = what if isinstance(what, Message) else what.msg
    return message.text(language)


def language_of(request: gr.Request | None) -> Language:
    """The first language of the request's Accept-Language that the app speaks (English by default)."""
    header = request.headers.get("accept-language", "") if request is not None else ""
    ranked = []
    for position, entry in enumerate(header.split(",")):
        tag, _, params = entry.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        if weight > 0:  # q=0: "not this one"
            ranked.append((-weight, position, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en") or tag == "*":
            return "en"
    return "en"


def translator(request: gr.Request | None) -> Say:
    """``say(what)``: ``what`` in the language of the user who sent ``request``."""
    language = language_of(request)
    return lambda what: render(what, language)


def to_english(what: Sayable) -> str:
    """The app's own language: the UI's texts are written in it."""
    return render(what, "en")
