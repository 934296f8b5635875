"""The Live tab's page as Gradio serves it: its scripts, their texts in both languages, the settings it starts a
session with, and Settings that go to the page's script rather than to the server. No browser, no model (the page
itself runs in tests/test_live_browser.py)."""

from __future__ import annotations

import re

import gradio as gr
import pytest

from backends.base import Backend, BackendInfo
from ui.i18n import LIVE_PAGE_TEXTS
from ui.live import tab
from turns.voice import VOICE_ASSISTANT_PROMPT


class Fake(Backend):
    def __init__(self, speakers: tuple[str, ...]):
        self.info = BackendInfo(backend="fake", model="fake", kind="instruct", device="cpu", speakers=speakers)

    async def stream(self, request):
        raise AssertionError("the Live tab never calls the engine itself: its page talks to /v1/realtime")
        yield


def built(speakers: tuple[str, ...]) -> tuple[gr.Blocks, gr.HTML]:
    with gr.Blocks() as demo:
        tab.build(Fake(speakers))
    (page,) = [block for block in demo.blocks.values() if isinstance(block, gr.HTML)]
    return demo, page


def scripts() -> str:
    return "\n".join((tab.HERE / name).read_text(encoding="utf-8") for name in (*tab.SCRIPTS, "worklets.js"))


def test_the_page_gets_its_scripts_and_the_settings_a_session_starts_with():
    _, page = built(("chelsie", "ethan"))
    config = page.get_config()
    code = config["js_on_load"]
    assert all((tab.HERE / name).read_text(encoding="utf-8") in code for name in tab.SCRIPTS)
    assert code.rstrip().endswith("qwenLive(element, props);")
    props = config["props"]
    assert props["worklets"] == (tab.HERE / "worklets.js").read_text(encoding="utf-8")
    assert props["settings"] == {"speaks": True, "voice": "ethan", "instructions": VOICE_ASSISTANT_PROMPT,
                                 "silence_ms": tab.DEFAULT_PAUSE_MS}
    assert (props["input_rate"], props["output_rate"], props["frame_ms"]) == (16_000, 24_000, tab.MIC_FRAME_MS)
    assert props["texts"]["zh"]["start"] == "▶ 开始对话" and props["texts"]["en"]["start"] == "▶ Start talking"


def test_a_backend_that_cannot_speak_gets_a_text_session_and_no_voice_setting():
    demo, page = built(())
    assert page.get_config()["props"]["settings"]["speaks"] is False
    (speaker,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "live-speaker"]
    assert speaker.visible is False
    notes = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert any("text only" in str(note) for note in notes)


def test_the_settings_go_to_the_pages_script_not_to_the_server():
    demo, _ = built(("ethan",))
    (settings,) = [fn for fn in demo.fns.values() if fn.js and "configure" in fn.js]
    assert settings.fn is None, "no server call: the script sends them to the socket as session.update"
    names = {block.elem_id for block in settings.inputs}
    assert names == {"live-speaker", "live-prompt", "live-pause"} and len(settings.targets) == 3
    assert all(fn.fn is None for fn in demo.fns.values()), "the tab has no server-side events at all"


def used_text_keys() -> set[str]:
    """Every text key the page's HTML and scripts ask for."""
    code = scripts()
    keys = set(re.findall(r'data-text="(\w+)"', tab.PAGE))
    for first_argument in re.findall(r'LiveError\(([^,)\n]+)[,)]', code):  # a key, or a choice of two
        keys |= set(re.findall(r'"(\w+)"', first_argument))
    keys |= set(re.findall(r'this\.text\("(\w+)"', code))
    keys |= set(re.findall(r'\.(?:note|say)\([^;]*?"(\w+)"\)', code))
    phase = code[code.index("  phase() {"): code.index("  render() {")]
    keys |= set(re.findall(r'"(\w+)"', phase))
    keys |= set(re.findall(r'"(stop|start)"', code))
    devices = re.findall(r'liveMediaError\(err, "(\w+)"\)', code)
    kinds = re.findall(r'`\$\{device\}_(\w+)`', code)
    return keys | {f"{d}_{k}" for d in devices for k in kinds}


def test_every_text_the_page_shows_exists_in_english_and_chinese_and_every_text_is_used():
    used = used_text_keys()
    assert {"mic_refused", "socket_failed", "listening", "interrupted", "spoken"} <= used
    assert used - set(LIVE_PAGE_TEXTS) == set(), "a text the page would show as its key"
    assert set(LIVE_PAGE_TEXTS) - used == set(), "a text nothing shows"


@pytest.mark.parametrize("key", sorted(LIVE_PAGE_TEXTS))
def test_both_languages_fill_in_the_same_names(key):
    english, chinese = LIVE_PAGE_TEXTS[key]
    assert english and chinese and english != chinese
    assert sorted(re.findall(r"\{(\w+)\}", english)) == sorted(re.findall(r"\{(\w+)\}", chinese))
