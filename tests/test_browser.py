"""A person's view: Chromium (Debian's, driven by Playwright) sends a text+image turn."""

from __future__ import annotations

import shutil

import pytest

from tests.test_app import launch

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def page(instruct_backend):
    from playwright.sync_api import sync_playwright

    demo = launch(instruct_backend)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 1100})
        page = context.new_page()
        page.goto(demo.local_url)
        yield page
        browser.close()
    demo.close()


def test_text_and_image_turn_streams_text_and_plays_the_spoken_reply(page, image_path, output_dir):
    from playwright.sync_api import expect

    expect(page.get_by_text("Tiny random-weight model")).to_be_visible(timeout=30_000)
    page.locator("#chat-input input[type=file]").set_input_files(str(image_path))
    expect(page.locator("#chat-input img").first).to_be_visible(timeout=15_000)
    textbox = page.locator("#chat-input textarea")
    textbox.fill("What colours are in this picture?")
    textbox.press("Enter")

    chatbot = page.locator("#chatbot")
    expect(chatbot.get_by_text("What colours are in this picture?")).to_be_visible(timeout=15_000)
    expect(chatbot.locator("audio").first).to_be_attached(timeout=60_000)
    expect(page.locator("#chat-status")).to_contain_text("reply tokens", timeout=30_000)
    # The streaming player got the spoken reply while it was generated and plays it on its own.
    page.wait_for_function(
        "() => { const a = document.querySelector('#reply-audio audio');"
        " return a && a.duration > 0 && (a.currentTime > 0 || !a.paused); }", timeout=30_000)
    page.screenshot(path=str(output_dir / "chat-text-image-turn.png"), full_page=True)
