"""Messages made at run time (chat notes, errors, the status line) in the user's language.

``gr.I18n`` translates only texts fixed when the page is built, in the browser. Messages made
while a turn runs are chosen here, on the server, from the request's ``Accept-Language``
(the browser's language; Gradio's own language switch in Settings never reaches the server).
Engines and media checks speak English; ``say`` matches their sentences against the templates
below, so the backend contract stays plain text. A sentence with no template, and the raw
text of an exception inside one, stays English.
"""

from __future__ import annotations

import re
from typing import Callable, Literal

import gradio as gr

Language = Literal["en", "zh"]
Say = Callable[[str], str]

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
    "type something or attach a file first": "请先输入文字或附加文件",
    # The Chat tab's example labels (ui/examples.py)
    "Speech recognition": "语音识别",
    "Translation": "翻译",
    "Music": "音乐",
    "Image question": "看图问答",
    "Video description": "视频描述",
    "Audio-visual question": "音视频问答",
    # The Caption tab (ui/caption.py)
    "Upload or record an audio file first.": "请先上传或录制一个音频文件。",
    "Add some audio or video files (or a .zip of them) first.": "请先添加音频或视频文件（或它们的 .zip 压缩包）。",
    "Can't open the archive: {problem}": "无法打开压缩包：{problem}",
    "Captioning {file}": "正在描述 {file}",
    "{done} of {total} files done.": "已完成 {done} / {total} 个文件。",
    "Stopped: the rows above are kept.": "已停止：上面的结果会保留。",
    # A file that can't be used (media.py, backends/conversation.py, ui/chat/archive.py): "name: problem"
    "{file}: {problem}": "{file}：{problem}",
    "unsupported file type '{suffix}'": "不支持的文件类型“{suffix}”",
    "file not found": "找不到文件",
    "the file is empty": "文件是空的",
    "file is {size} MB, the limit is {limit} MB": "文件大小为 {size} MB，上限是 {limit} MB",
    "not a readable image ({reason})": "无法读取的图片（{reason}）",
    "not a readable audio file": "无法读取的音频文件",
    "not a readable audio file (it holds pictures, no sound)": "无法读取的音频文件（其中只有画面，没有声音）",
    "the video has no sound track": "视频没有音轨",
    "the audio has no samples": "音频中没有采样",
    "the audio is only {length} ms long; it takes at least {minimum} ms": "音频只有 {length} 毫秒；至少需要 {minimum} 毫秒",
    "audio is {length} s long, the limit is {limit} s": "音频长 {length} 秒，上限是 {limit} 秒",
    "audio is longer than the {limit} s limit": "音频超过了 {limit} 秒的上限",
    "the audio's sample rate is {rate} Hz; it takes {minimum} to {maximum} Hz":
        "音频的采样率是 {rate} Hz；只能接受 {minimum} 到 {maximum} Hz",
    "the audio holds invalid samples (NaN or infinity)": "音频中含有无效的采样值（NaN 或无穷大）",
    "video is {length} s long, the limit is {limit} s": "视频长 {length} 秒，上限是 {limit} 秒",
    "the video is {size}; at that size it can be at most {length} s long": "视频尺寸为 {size}；这个尺寸下最长只能是 {length} 秒",
    "the video is {size}, too large to take in": "视频尺寸为 {size}，太大，无法处理",
    "the file has no video stream": "文件中没有视频流",
    "not a readable video ({reason})": "无法读取的视频（{reason}）",
    "the video has no frames": "视频中没有画面",
    "one message takes at most {limit} files; this one has {count}": "一条消息最多附加 {limit} 个文件；这条有 {count} 个",
    "the engine takes at most {limit} {kind} file(s) per conversation (--limit-mm-per-prompt), and this message "
    "alone has more": "引擎每段对话最多接受 {limit} 个{kind}文件（--limit-mm-per-prompt），而这一条消息就超过了",
    "this message needs {length} tokens with its files, and the model takes {budget} ({context} minus {reply} kept "
    "for the reply): use shorter audio or video, or fewer files":
        "这条消息连同文件需要 {length} 个词元，而模型只能接受 {budget} 个（{context} 减去为回复保留的 {reply} 个）："
        "请使用更短的音频或视频，或减少文件数量",
    "image": "图片",
    "audio": "音频",
    "video": "视频",
    "not a conversation exported by this app": "不是本应用导出的对话",
    "unpacks to more than {size} GB": "解压后超过 {size} GB",
    "not a readable conversation archive ({reason})": "无法读取的对话压缩包（{reason}）",
    # Notes from the engines (backends/conversation.py, backends/transformers/backend.py, backends/openai/backend.py)
    "{file} has no sound track; the model heard silence for it.": "{file} 没有音轨；模型听到的是静音。",
    "The conversation holds more files than the model takes at once, so {what} were left out.":
        "对话中的文件超过了模型一次能接受的数量，因此省略了{what}。",
    "The conversation outgrew the model's context ({context} tokens with {reply} kept for the reply), so {what} "
    "were left out.": "对话超出了模型的上下文（{context} 个词元，其中 {reply} 个留给回复），因此省略了{what}。",
    "the first {count} messages": "前 {count} 条消息",
    "the first {count} messages and their {files} file": "前 {count} 条消息及其 {files} 个文件",
    "the first {count} messages and their {files} files": "前 {count} 条消息及其 {files} 个文件",
    "The model is warming up ({what}); this turn starts right after.": "模型正在预热（{what}）；完成后立即开始本轮。",
    "loading the model's weights": "正在加载模型权重",
    "loading the model's weights… {percent} %": "正在加载模型权重… {percent} %",
    "waiting to compile the model": "等待编译模型",
    "compiling the talker and its code predictor (first start: about 2 minutes)":
        "正在编译 Talker 及其码本预测器（首次启动约 2 分钟）",
    "compiling the thinker with one short reply (first start: about 2 minutes)":
        "正在用一条简短回复编译 Thinker（首次启动约 2 分钟）",
    # Engine errors: the cause inside stays as the engine said it.
    "Generation failed: {cause}": "生成失败：{cause}",
    "The engine refused this request: {cause}": "引擎拒绝了这个请求：{cause}",
    "Speech generation failed ({cause}); the text reply is kept.": "语音生成失败（{cause}）；文字回复已保留。",
    "Speech generation failed ({cause}); the text is kept.": "语音生成失败（{cause}）；文字已保留。",
    "The model could not be loaded: {cause}": "模型无法加载：{cause}",
    "The text so far is kept.": "已生成的文字会保留。",
    "Nothing was generated.": "没有生成任何内容。",
    "The model server ended the reply early. {kept}": "模型服务器提前结束了回复。{kept}",
    "The model server sent nothing for {seconds} s; gave up. {kept}": "模型服务器 {seconds} 秒内没有发送任何内容，已放弃。{kept}",
    "Can't reach the model server at {url} ({cause}). Is it running?": "无法连接 {url} 的模型服务器（{cause}）。它在运行吗？",
    "The connection to the model server broke mid-reply ({cause}). {kept}": "回复途中与模型服务器的连接中断（{cause}）。{kept}",
    "The model server refused the request (HTTP {status}): {cause}": "模型服务器拒绝了请求（HTTP {status}）：{cause}",
    "The model server failed (HTTP {status}): {cause}": "模型服务器出错（HTTP {status}）：{cause}",
    "The model server reported an error mid-reply: {cause}. {kept}": "模型服务器在回复途中报告了错误：{cause}。{kept}",
    "This server answered in text only: plain `vllm serve` runs the Thinker alone. For speech, start vLLM-Omni "
    "(`vllm serve <checkpoint> --omni`) or SGLang-Omni; replies stay text until then.":
        "此服务器只回答文字：普通的 `vllm serve` 只运行 Thinker。要语音回复，请启动 vLLM-Omni"
        "（`vllm serve <checkpoint> --omni`）或 SGLang-Omni；在此之前回复只有文字。",
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
    "missing file: {file}": "缺少文件：{file}",
    "no prompt and no media": "没有提示也没有媒体",
    "Add exactly one prompt sheet (.csv or .jsonl).": "请只添加一个提示表格（.csv 或 .jsonl）。",
    "Add exactly one prompt sheet (.csv or .jsonl); got {count}.": "请只添加一个提示表格（.csv 或 .jsonl）；收到了 {count} 个。",
}

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_SENTENCES = {"problem", "what", "kept", "kind"}
"""Placeholders that hold a sentence of ours, translated in turn (a file name or an engine's
own words, such as an exception's text, are left as they are)."""


def _pattern(template: str) -> re.Pattern:
    pieces = _PLACEHOLDER.split(template)  # literal, name, literal, name, …
    regex = "".join(re.escape(piece) if i % 2 == 0 else f"(?P<{piece}>.+?)" for i, piece in enumerate(pieces))
    return re.compile(regex, re.DOTALL)


def _literal(template: str) -> str:
    return _PLACEHOLDER.sub("", template)


# The most specific template first: "the first {count} messages and their {files} files" before
# "the first {count} messages", and "{file}: {problem}" after every sentence with a colon of its own.
_ZH = [(_pattern(english), chinese, not any(c.isalpha() for c in _literal(english)))
       for english, chinese in sorted(ZH_TEMPLATES.items(), key=lambda item: -len(_literal(item[0])))]


def to_chinese(text: str) -> str:
    """``text`` in Chinese where a template matches it, else unchanged."""
    for pattern, chinese, only_punctuation in _ZH:
        match = pattern.fullmatch(text)
        if not match:
            continue
        values = {name: to_chinese(value) if name in _SENTENCES else value for name, value in match.groupdict().items()}
        if only_punctuation and values == match.groupdict():
            continue  # "{file}: {problem}" with a problem we don't know: any text with a colon
        return chinese.format(**values)
    return text


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
    """``say(text)``: ``text`` in the language of the user who sent ``request``."""
    return to_chinese if language_of(request) == "zh" else to_english


def to_english(text: str) -> str:
    """The app's own language: the texts are written in it."""
    return text

