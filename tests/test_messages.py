"""Messages made at run time, in the user's language (ui/messages.py): no server needed."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from backends.events import Done, Error, Metrics, Notice
from media import MediaError
from messages import TABLE, Message
from ui.messages import language_of, to_english, translator
from ui.reply import ReplyState

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("accept_language, language", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),  # Chromium in Chinese
    ("zh-TW", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("en;q=0.5, zh-CN;q=0.9", "zh"),  # the weights decide, not the order
    ("fr-FR,fr;q=0.9,zh;q=0.5", "zh"),  # the first language the app speaks
    ("fr-FR,fr;q=0.9", "en"),
    ("fr, zh;q=0", "en"),  # q=0: not Chinese
    ("de, *;q=0.1", "en"),
    ("zh;q=nonsense, en", "en"),
    ("", "en"),
])
def test_the_language_is_the_first_of_the_browsers_that_the_app_speaks(accept_language, language):
    assert language_of(SimpleNamespace(headers={"accept-language": accept_language})) == language


def test_a_client_without_a_request_or_the_header_gets_english():
    assert language_of(None) == language_of(SimpleNamespace(headers={})) == "en"
    assert translator(None)(Message("ui.stopped")) == "Stopped."


def test_sentences_inside_sentences_are_translated_and_the_engines_own_words_are_not():
    gave_up = Message("server.timed_out", {"seconds": "30", "kept": Message("reply.text_kept")})
    assert str(gave_up) == "The model server sent nothing for 30 s; gave up. The text so far is kept."
    assert gave_up.text("zh") == "模型服务器 30 秒内没有发送任何内容，已放弃。已生成的文字会保留。"
    what = Message("prompt.first_messages_and_files", {"count": 2, "files": 3})
    left_out = Message("prompt.left_out_context", {"context": 4096, "reply": 64, "what": what})
    assert str(left_out) == ("The conversation outgrew the model's context (4096 tokens with 64 kept for the reply), so "
                             "the first 2 messages and their 3 files were left out.")
    assert left_out.text("zh") == "对话超出了模型的上下文（4096 个词元，其中 64 个留给回复），因此省略了前 2 条消息及其 3 个文件。"
    # An exception's text is the engine's: it stays as it was, colons included.
    failed = Message("engine.generation_failed", {"cause": "CUDA error: out of memory"})
    assert failed.text("zh") == "生成失败：CUDA error: out of memory"
    empty = Message("media.file_problem", {"file": "clip.wav", "problem": Message("media.empty")})
    assert (str(empty), empty.text("zh")) == ("clip.wav: the file is empty", "clip.wav：文件是空的")


def test_say_renders_what_engines_and_media_checks_send_by_its_code():
    zh = translator(SimpleNamespace(headers={"accept-language": "zh-CN"}))
    err = MediaError("/tmp/clip.wav", Message("media.too_big", {"size": "30", "limit": "20"}))
    assert str(err) == "clip.wav: file is 30 MB, the limit is 20 MB" and err.problem == "file is 30 MB, the limit is 20 MB"
    assert zh(err) == "clip.wav：文件大小为 30 MB，上限是 20 MB" and zh(err.reason) == "文件大小为 30 MB，上限是 20 MB"
    assert zh(Error(err.msg, "input")) == zh(err) and Error(err.msg, "input").message == str(err)
    assert zh(Notice(Message("prompt.silent_video", {"file": "a.mp4"}))) == "a.mp4 没有音轨；模型听到的是静音。"
    assert translator(None)(err) == str(err)
    # The UI's own texts go by code too.
    assert zh(Message("ui.stopped")) == "已停止。"
    assert zh(Message("caption.captioning", {"file": "a.wav"})) == "正在描述 a.wav"


def test_a_plain_string_is_shown_as_it_is_even_when_it_reads_like_one_of_the_uis_texts():
    """Words that are not a ``Message`` are someone else's (an engine's, an imported file's): never translated
    by guessing which sentence they might be."""
    zh = translator(SimpleNamespace(headers={"accept-language": "zh-CN"}))
    assert zh("Stopped.") == "Stopped." and zh("Captioning a.wav") == "Captioning a.wav"
    assert zh("Finished (stop).") == "Finished (stop)."


def test_a_messages_chinese_does_not_depend_on_its_english_wording(monkeypatch):
    message = Message("server.refused", {"status": 400, "cause": "prompt too long"})
    chinese = message.text("zh")
    monkeypatch.setitem(TABLE, "server.refused", ("The server said no (HTTP {status}): {cause}", TABLE["server.refused"][1]))
    assert str(message) == "The server said no (HTTP 400): prompt too long"
    assert message.text("zh") == chinese == "模型服务器拒绝了请求（HTTP 400）：prompt too long"


def test_rewording_one_of_the_uis_own_texts_keeps_its_chinese(monkeypatch):
    """The status line as the Chat tab makes it (``ReplyState.status``): its English can change without
    losing the Chinese, the timings' pieces included."""
    zh = translator(SimpleNamespace(headers={"accept-language": "zh-CN"}))
    finished, timed = ReplyState(), ReplyState()
    finished.handle(Done("stop"))
    for event in (Metrics(time_to_first_token_s=0.25, prompt_tokens=12, output_tokens=5, tokens_per_s=40.0),
                  Done("stop")):
        timed.handle(event)
    chinese = finished.status(zh), timed.status(zh)
    assert chinese == ("已结束（stop）。", "首个词元 0.25 秒 · 40.0 词元/秒 · 提示 12 + 回复 5 个词元")
    monkeypatch.setitem(TABLE, "ui.finished", ("Done ({reason}).", TABLE["ui.finished"][1]))
    monkeypatch.setitem(TABLE, "metrics.first_token", ("{seconds} s to the first token",
                                                       TABLE["metrics.first_token"][1]))
    assert finished.status(to_english) == "Done (stop)."
    assert timed.status(to_english) == "0.25 s to the first token · 40.0 tok/s · 12 prompt + 5 reply tokens"
    assert (finished.status(zh), timed.status(zh)) == chinese


def test_every_code_has_both_texts_with_the_same_placeholders():
    for code, texts in TABLE.items():
        assert len(texts) == 2 and all(texts), code
        english, chinese = (sorted(re.findall(r"\{(\w+)\}", text)) for text in texts)
        assert english == chinese, code


def _codes_in_source() -> tuple[set[str], set[str]]:
    """(codes passed to ``Message(...)`` as literals, every other literal that looks like a code) in the app."""
    namespaces = "|".join(sorted({code.split(".")[0] for code in TABLE if "." in code}))
    looks_like_code = re.compile(rf"^({namespaces})(\.[a-z_]+)+$")
    passed, others = set(), set()
    files = [path for folder in ("backends", "media", "messages", "studies", "ui")
             for path in (ROOT / folder).rglob("*.py")]
    for path in files + sorted(ROOT.glob("app*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Message" and node.args:
                passed |= {c.value for c in ast.walk(node.args[0]) if isinstance(c, ast.Constant)
                           and isinstance(c.value, str)}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and looks_like_code.match(node.value):
                others.add(node.value)
    return passed, others


def test_the_ui_says_only_messages_not_english_sentences():
    """``say("Some text")`` would show English to everyone: the UI's own words are a code of the table. Only
    a value that is someone else's words (a ``str`` variable) goes to ``say`` as it is."""
    literals = []
    for path in (ROOT / "ui").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            saying = isinstance(node, ast.Call) and (
                getattr(node.func, "id", None) in {"say", "to_english"}
                or isinstance(node.func, ast.Call) and getattr(node.func.func, "id", None) == "translator")
            if saying and node.args and _is_sentence(node.args[0]):
                literals.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert literals == []


def _is_sentence(node: ast.expr) -> bool:
    """A string written in the code: "…", f"…", or either of them inside ``a if b else c``."""
    if isinstance(node, ast.IfExp):
        return _is_sentence(node.body) or _is_sentence(node.orelse)
    return isinstance(node, ast.JoinedStr) or isinstance(node, ast.Constant) and isinstance(node.value, str)


def test_every_code_the_app_uses_is_in_the_table_and_every_code_is_used():
    passed, others = _codes_in_source()
    assert passed - set(TABLE) == set()
    assert others - set(TABLE) == set()  # e.g. a code kept in a dict before it goes into a Message
    assert set(TABLE) - passed - others == set()
