"""Messages made at run time, in the user's language (ui/messages.py): no server needed."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from ui.messages import ZH_TEMPLATES, language_of, to_chinese, translator


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
    assert translator(None)("Stopped.") == "Stopped."


def test_each_translation_keeps_every_value_of_its_sentence():
    for english, chinese in ZH_TEMPLATES.items():
        assert sorted(re.findall(r"\{(\w+)\}", english)) == sorted(re.findall(r"\{(\w+)\}", chinese)), english


def test_sentences_inside_sentences_are_translated_and_the_engines_own_words_are_not():
    assert to_chinese("The model server sent nothing for 30 s; gave up. The text so far is kept.") == \
        "模型服务器 30 秒内没有发送任何内容，已放弃。已生成的文字会保留。"
    assert to_chinese("The conversation outgrew the model's context (4096 tokens with 64 kept for the reply), so "
                      "the first 2 messages and their 3 files were left out.") == \
        "对话超出了模型的上下文（4096 个词元，其中 64 个留给回复），因此省略了前 2 条消息及其 3 个文件。"
    # An exception's text is the engine's: it stays as it was, colons included.
    assert to_chinese("Generation failed: CUDA error: out of memory") == "生成失败：CUDA error: out of memory"
    # A file name and a problem we don't know: nothing changes, not even the colon.
    assert to_chinese("clip.wav: something new went wrong") == "clip.wav: something new went wrong"
    assert to_chinese("clip.wav: the file is empty") == "clip.wav：文件是空的"
