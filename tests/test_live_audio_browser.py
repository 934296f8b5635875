"""The Live tab's audio contexts in Chromium (as tests/test_live_browser.py runs it, the fake microphone's beep): made
within the Start click, resumed when the browser pauses them, and let go, with the page's observer, when the page is
replaced. Chromium lets a context run without a gesture; Safari doesn't, so its rule is played here by the page's
AudioContext and ``resume`` as these tests wrap them."""

from __future__ import annotations

import pytest

import api
from tests.test_app import launch
from tests.test_live_browser import CHROMIUM, CHROMIUM_ARGS, WORKLETS
from ui.live.tab import page_script

SAFARI_RULE = """() => {
  // window.clicking: a click is being dispatched (Safari's "user gesture": it ends at the handler's first await).
  // Each AudioContext the page makes records whether it was made then.
  window.clicking = false;
  document.addEventListener("click", () => { window.clicking = true; setTimeout(() => (window.clicking = false)); },
                            true);
  window.addEventListener("click", () => (window.clicking = false));
  window.madeInClick = [];
  const Real = window.AudioContext;
  window.AudioContext = class extends Real {
    constructor(options) { super(options); window.madeInClick.push(window.clicking); }
  };
}"""

STATES = "() => [window.qwenLive.mic.context.state, window.qwenLive.player.context.state]"

NEEDS_A_GESTURE = """() => {
  // From now on the contexts resume only in a click, as Safari's do; then the browser pauses the player.
  for (const context of [window.qwenLive.mic.context, window.qwenLive.player.context]) {
    const resume = context.resume.bind(context);
    const refused = () => Promise.reject(new DOMException("no gesture", "NotAllowedError"));
    context.resume = () => (window.clicking ? resume() : refused());
  }
  return window.qwenLive.player.context.suspend();
}"""

REMOUNT = """async ([script, worklets]) => {
  // Gradio mounts the tab again: a new element, and the page's script runs again with the same props.
  const old = window.qwenLive;
  const element = old.view.element.cloneNode(true);
  old.view.element.replaceWith(element);
  new Function("element", "props", script)(element, { texts: old.view.texts, settings: old.settings,
    input_rate: old.inputRate, output_rate: old.outputRate, frame_ms: old.frameMs, worklets });
  document.documentElement.lang = "zh";
  await new Promise((resolve) => setTimeout(resolve, 100));
  const texts = [old.view.start.textContent, window.qwenLive.view.start.textContent];
  document.documentElement.lang = "en";
  return { texts, oldLetGo: old.mic === null && old.ws === null };
}"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_the_audio_starts_in_the_click_a_paused_context_resumes_and_a_replaced_page_lets_go(
        browser, instruct_backend, output_dir):
    from playwright.sync_api import expect

    demo = launch(instruct_backend, app_kwargs=api.app_kwargs(instruct_backend))
    context = browser.new_context(viewport={"width": 1280, "height": 700}, permissions=["microphone"])
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(demo.local_url)
        page.get_by_role("tab", name="Live").click()
        expect(page.locator("#live-state")).to_contain_text("Start talking", timeout=30_000)
        page.evaluate(SAFARI_RULE)
        page.locator("#live .live-start").click()
        expect(page.locator("#live-state")).to_contain_text("Listening", timeout=15_000)
        made_in_click = page.evaluate("() => window.madeInClick")
        started = page.evaluate(STATES)

        # Paused by the browser, resumable without a gesture (Chromium): resumed at once, and nothing said.
        page.evaluate("() => window.qwenLive.mic.context.suspend()")
        page.wait_for_function(f"() => ({STATES})().every((state) => state === 'running')", timeout=5_000)
        frames = page.evaluate("() => window.qwenLive.stats.framesSent")
        page.wait_for_function(f"() => window.qwenLive.stats.framesSent > {frames} + 5", timeout=5_000)
        page.wait_for_timeout(800)
        expect(page.locator("#live-error")).to_be_hidden()

        # Paused where only a gesture resumes it (Safari): the page says so, and the next click anywhere resumes it.
        page.evaluate(NEEDS_A_GESTURE)
        expect(page.locator("#live-error")).to_contain_text("paused the sound", timeout=5_000)
        paused = page.evaluate(STATES)
        page.screenshot(path=str(output_dir / "live-audio-paused.png"))
        page.locator("#live-transcript").click()
        page.wait_for_function(f"() => ({STATES})().every((state) => state === 'running')", timeout=5_000)
        expect(page.locator("#live-error")).to_be_hidden()
        expect(page.locator("#live-state")).to_contain_text("Listening")

        remounted = page.evaluate(REMOUNT, [page_script(), WORKLETS])
    finally:
        context.close()
        demo.close()
    assert made_in_click == [True, True], "the microphone's and the player's contexts, made within the click"
    assert started == ["running", "running"] and paused == ["running", "suspended"]
    assert remounted == {"texts": ["▶ Start talking", "▶ 开始对话"], "oldLetGo": True}, \
        "the replaced page's view still followed the language: its observer was not let go"
    assert not errors
