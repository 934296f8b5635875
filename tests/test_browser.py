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


SCRIPT_ERRORS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def pages_report_script_errors():
    """Every page these tests open records its uncaught script errors (a bad component config shows as one)."""
    from playwright.sync_api import Browser, BrowserContext

    def recording(new_page):
        def new_page_recording_errors(self, *args, **kwargs):
            page = new_page(self, *args, **kwargs)
            page.on("pageerror", lambda error: SCRIPT_ERRORS.append(f"{page.url}: {error}"))
            return page
        return new_page_recording_errors

    with pytest.MonkeyPatch.context() as patch:
        for cls in (Browser, BrowserContext):
            patch.setattr(cls, "new_page", recording(cls.new_page))
        yield


@pytest.fixture(autouse=True)
def no_script_errors():
    SCRIPT_ERRORS.clear()
    yield
    assert not SCRIPT_ERRORS, f"the page's scripts failed: {SCRIPT_ERRORS}"


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:  # one per process: every browser of this module comes from it
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def page(browser, instruct_backend):
    demo = launch(instruct_backend)
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(demo.local_url)
    yield page
    page.close()
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


def test_a_clicked_example_fills_the_message_box(page, output_dir):
    from playwright.sync_api import expect

    page.locator("#chat-examples").get_by_text("Image question").click()
    expect(page.locator("#chat-input textarea")).to_have_value("What shapes and colours are in this picture?")
    expect(page.locator("#chat-input img").first).to_be_visible(timeout=15_000)
    page.screenshot(path=str(output_dir / "chat-example.png"), full_page=True)


@pytest.fixture(scope="module")
def captioner_page(browser, captioner_backend):
    from ui import build_captioner_demo, queue_settings

    demo = build_captioner_demo(captioner_backend)
    demo.queue(**queue_settings(captioner_backend.info)).launch(prevent_thread_lock=True, quiet=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(demo.local_url)
    yield page
    page.close()
    demo.close()


def test_caption_one_file_then_a_batch(captioner_page, speech_path, video_path, tmp_path, output_dir):
    from playwright.sync_api import expect

    page = captioner_page
    expect(page.get_by_text("Captioner** checkpoint".replace("**", ""))).to_be_visible(timeout=30_000)
    page.locator("#caption-file input[type=file]").set_input_files(str(speech_path))
    expect(page.locator("#caption-file").get_by_text("speech")).to_be_visible(timeout=15_000)
    page.get_by_role("button", name="Caption", exact=True).click()
    page.wait_for_function("() => document.querySelector('#caption-text textarea').value.length > 10",
                           timeout=30_000)
    page.screenshot(path=str(output_dir / "caption-one-file.png"), full_page=True)

    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio")
    page.get_by_role("tab", name="Batch").click()
    page.locator("#caption-batch input[type=file]").set_input_files([str(speech_path), str(corrupt),
                                                                     str(video_path)])
    expect(page.locator("#caption-batch").get_by_text("corrupt")).to_be_visible(timeout=15_000)
    page.get_by_role("button", name="Caption all").click()
    expect(page.locator("#caption-batch-status")).to_contain_text("3 of 3 files done", timeout=60_000)
    expect(page.locator("#caption-table")).to_contain_text("not a readable audio file")
    page.screenshot(path=str(output_dir / "caption-batch.png"), full_page=True)


def test_an_evaluator_rates_a_reply_and_the_settings_are_logged(browser, instruct_backend, tmp_path, output_dir):
    import json

    from playwright.sync_api import expect

    log = tmp_path / "feedback.jsonl"
    demo = launch(instruct_backend, feedback_file=str(log))
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    try:
        page.goto(demo.local_url)
        textbox = page.locator("#chat-input textarea")
        textbox.fill("Rate this answer")
        textbox.press("Enter")
        expect(page.locator("#chat-status")).to_contain_text("reply tokens", timeout=60_000)
        page.locator("#feedback-comment textarea").fill("Too random")
        page.locator("#chatbot").get_by_role("button", name="Like", exact=True).first.click()
        expect(page.locator("#feedback-comment textarea")).to_have_value("", timeout=10_000)  # sent
        page.screenshot(path=str(output_dir / "chat-feedback.png"), full_page=True)
        (entry,) = [json.loads(line) for line in log.read_text().splitlines()]
        assert entry["rating"] == "up" and entry["comment"] == "Too random" and entry["reply"]
        assert entry["model"] == "tiny" and entry["backend"] == "transformers" and entry["speaker"] == "ethan"
        assert entry["sampling"]["max_new_tokens"] == 64 and entry["conversation"][0]["text"] == "Rate this answer"
    finally:
        page.close()
        demo.close()


def test_a_chinese_browser_gets_the_interface_in_chinese(browser, instruct_backend, output_dir):
    from playwright.sync_api import expect

    demo = launch(instruct_backend)
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    try:
        page.goto(demo.local_url)
        for label in ("对话", "实时", "字幕", "评测"):
            expect(page.get_by_role("tab", name=label)).to_be_visible(timeout=30_000)
        expect(page.get_by_role("button", name="⏹ 停止")).to_be_visible()
        expect(page.get_by_text("示例（点击后按回车发送）")).to_be_visible()
        page.locator("#chat-examples").get_by_text("看图问答").click()  # labels translated on load; still an example
        expect(page.locator("#chat-input textarea")).to_have_value("What shapes and colours are in this picture?")
        expect(page.get_by_text("微型随机权重模型")).to_be_visible()  # the header's warning too
        for fact in ("模型 tiny", "后端 transformers", "设备 cpu", "语音 可发声 (", "同时服务用户数 1"):
            expect(page.locator("#header-facts")).to_contain_text(fact)  # and its facts
        # Texts made on the server follow the browser's language too: an error toast, the status line.
        page.get_by_role("button", name="🔄 重新生成").click()
        expect(page.get_by_text("还没有可以重新生成的回复。")).to_be_visible()
        page.locator("#chat-input textarea").fill("你好")  # replaces the example's text; its image stays
        page.locator("#chat-input textarea").press("Enter")
        expect(page.locator("#chat-status")).to_contain_text("词元/秒", timeout=60_000)
        expect(page.locator("#chat-status")).to_contain_text("首个词元")
        page.screenshot(path=str(output_dir / "chat-zh.png"), full_page=True)
        page.get_by_role("tab", name="实时").click()
        expect(page.get_by_text("打开摄像头", exact=True)).to_be_visible()
        expect(page.locator("#live-state")).to_contain_text("点击 ▶ 开始对话")  # the page's own script's texts
        expect(page.locator("#live .live-start")).to_have_text("▶ 开始对话")
        expect(page.get_by_text("在回答时开口说话即可打断它")).to_be_visible()
        page.screenshot(path=str(output_dir / "live-zh.png"), full_page=True)
        page.get_by_role("tab", name="字幕").click()
        expect(page.get_by_text("为语音、声音和音乐生成详细描述")).to_be_visible()
        expect(page.get_by_placeholder("例如：着重描述背景声音。")).to_be_visible()
        page.screenshot(path=str(output_dir / "caption-zh.png"), full_page=True)
        page.get_by_role("tab", name="评测").click()
        expect(page.get_by_role("button", name="载入示例集")).to_be_visible()
        expect(page.get_by_text("用一组提示评测模型并评判回答")).to_be_visible()
        expect(page.get_by_text("配置 A", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name="▶ 运行")).to_be_visible()
        expect(page.locator("#eval-table")).to_contain_text("回答 A")  # the results' column names too
        expect(page.locator("#eval-rating")).to_contain_text("A 更好")  # and the ratings
        page.screenshot(path=str(output_dir / "evaluate-zh.png"), full_page=True)
    finally:
        context.close()
        demo.close()


def test_the_header_says_when_the_engine_is_warming_up_and_clears_once_ready(browser, instruct_backend, monkeypatch,
                                                                              output_dir):
    from playwright.sync_api import expect

    monkeypatch.setattr(instruct_backend, "warming_up", "Compiling the talker and its code predictor…", raising=False)
    demo = launch(instruct_backend)
    page = browser.new_page(viewport={"width": 1280, "height": 700})
    try:
        page.goto(demo.local_url)
        status = page.locator("#warm-up")
        expect(status).to_contain_text("Warming up", timeout=30_000)
        expect(status).to_contain_text("Compiling the talker")
        page.screenshot(path=str(output_dir / "warming-up.png"))
        instruct_backend.warming_up = None  # what warm_up() does when it is done
        expect(page.get_by_text("Warming up")).to_be_hidden(timeout=5_000)
    finally:
        page.close()
        demo.close()


def test_a_second_user_sees_their_place_in_the_queue(browser, instruct_backend, monkeypatch, output_dir):
    from playwright.sync_api import expect

    started, release = hold_the_engine(instruct_backend, monkeypatch)

    def send_while_the_first_user_holds_the_engine(first_text, second_text):
        """The first user's turn is running (held) before the second user sends: timing-proof on a slow machine."""
        release.clear()
        already = len(started)
        send(first, first_text)
        wait_until(lambda: len(started) > already, "the first user's turn never reached the engine")
        send(second, second_text)

    demo = launch(instruct_backend)
    first, second = (browser.new_page(viewport={"width": 1280, "height": 900}) for _ in range(2))
    try:
        for page in (first, second):
            page.goto(demo.local_url)
            expect(page.locator("#chat-input textarea")).to_be_editable(timeout=30_000)
        send_while_the_first_user_holds_the_engine("Tell me a long story", "Me too")
        expect(second.locator("#chatbot")).to_contain_text("queue: 1/1", timeout=15_000)
        expect(second.locator("#chatbot")).to_contain_text("Me too")  # the waiting message shows at once
        second.screenshot(path=str(output_dir / "chat-queue.png"))
        release.set()
        expect(second.locator("#chat-status")).to_contain_text("reply tokens", timeout=120_000)  # then it is answered
        # Stopped while it waits: the message leaves the chat and is back in the textbox, ready to send.
        expect(first.locator("#chat-input textarea")).to_be_editable(timeout=60_000)
        send_while_the_first_user_holds_the_engine("Another long story", "Never mind")
        expect(second.locator("#chatbot")).to_contain_text("queue: 1/1", timeout=15_000)
        expect(second.locator("#chatbot")).to_contain_text("Never mind")
        second.get_by_role("button", name="⏹ Stop").click()
        expect(second.locator("#chatbot")).not_to_contain_text("Never mind", timeout=10_000)
        expect(second.locator("#chat-input textarea")).to_have_value("Never mind")
        expect(second.locator("#chat-input textarea")).to_be_editable()
        assert len(started) == 3, "the turn stopped while it waited still reached the engine"
    finally:
        release.set()
        first.close()
        second.close()
        demo.close()


def hold_the_engine(backend, monkeypatch):
    """Each turn waits at the engine's door until ``release`` is set; ``started`` lists the turns that reached it."""
    import asyncio
    import threading

    original, started, release = type(backend).stream, [], threading.Event()

    async def held_stream(self, request):
        started.append(request)
        while not release.is_set():
            await asyncio.sleep(0.05)
        async for event in original(self, request):
            yield event

    monkeypatch.setattr(type(backend), "stream", held_stream)
    return started, release


def send(page, text: str) -> None:
    page.locator("#chat-input textarea").fill(text)
    page.locator("#chat-input textarea").press("Enter")


def wait_until(condition, failure: str, seconds: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def test_a_user_turned_away_by_a_full_queue_keeps_the_message(browser, instruct_backend, monkeypatch):
    from playwright.sync_api import expect

    from ui import build_demo

    _, release = hold_the_engine(instruct_backend, monkeypatch)  # the first turn holds it until the test is done
    demo = build_demo(instruct_backend)
    demo.queue(default_concurrency_limit=1, max_size=1).launch(prevent_thread_lock=True, quiet=True)
    pages = [browser.new_page(viewport={"width": 1280, "height": 900}) for _ in range(3)]
    try:
        for page, text in zip(pages, ("Running", "Waiting", "Turned away")):
            page.goto(demo.local_url)
            send(page, text)
            if text != "Turned away":
                expect(page.locator("#chatbot")).to_contain_text(text, timeout=15_000)  # shown at once
        third = pages[2]
        expect(third.get_by_text("This application is currently busy. Please try again.")).to_be_visible(
            timeout=15_000)
        expect(third.locator("#chatbot")).not_to_contain_text("Turned away")  # it left the chat…
        expect(third.locator("#chat-input textarea")).to_have_value("Turned away")  # …for the input box
        expect(third.locator("#chat-input textarea")).to_be_editable()
    finally:
        release.set()
        for page in pages:
            page.close()
        demo.close()


def test_an_evaluator_runs_a_prompt_set_rates_two_rows_and_exports(browser, instruct_backend, speech_path,
                                                                      image_path, tmp_path, output_dir):
    import csv
    import json
    import urllib.request
    import zipfile

    from playwright.sync_api import expect

    sheet = tmp_path / "three.csv"
    sheet.write_text("id,prompt,media\nhear,What is said?,speech.wav\nlost,And this?,missing.wav\n"
                     "see,What shapes?,gradient.png\n", encoding="utf-8")
    demo = launch(instruct_backend)
    page = browser.new_page(viewport={"width": 1280, "height": 1500})
    try:
        page.goto(demo.local_url)
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#eval-files input[type=file]").set_input_files([str(sheet), str(speech_path), str(image_path)])
        expect(page.locator("#eval-files a")).to_have_count(3, timeout=20_000)
        page.locator("#eval-run").click()
        expect(page.locator("#eval-status")).to_contain_text("Every row is done", timeout=120_000)
        expect(page.locator("#eval-table")).to_contain_text("row 3: missing file: missing.wav")

        for row_id, rating, comment in (("hear", "A better", "clearer"), ("see", "tie", "")):
            page.locator("#eval-row input").click()
            page.get_by_role("option", name=row_id, exact=True).click()
            expect(page.locator("#eval-row-prompt")).to_contain_text(row_id)
            page.locator("#eval-rating").get_by_label(rating, exact=True).check()
            if comment:
                page.locator("#eval-comment textarea").fill(comment)
        expect(page.locator("#eval-table")).to_contain_text("tie", timeout=10_000)
        page.locator("#eval-export").click()
        links = page.locator("#eval-exported a")
        expect(links).to_have_count(3, timeout=20_000)
        page.locator("#eval-row-prompt").scroll_into_view_if_needed()
        page.screenshot(path=str(output_dir / "evaluate.png"), full_page=True)

        files = {}
        for href in links.evaluate_all("links => links.map(a => a.href)"):
            name = href.rsplit("/", 1)[-1].split("?")[0]
            files[name] = tmp_path / name
            files[name].write_bytes(urllib.request.urlopen(href, timeout=20).read())
        with files["results.csv"].open(encoding="utf-8") as f:
            from_csv = {row["id"]: row for row in csv.DictReader(f)}
        from_jsonl = {r["id"]: r for r in map(json.loads, files["results.jsonl"].read_text(encoding="utf-8").splitlines())}
        with zipfile.ZipFile(files["results.zip"]) as archive:
            assert archive.read("results.csv") == files["results.csv"].read_bytes()
            assert archive.read("results.jsonl") == files["results.jsonl"].read_bytes()
            speech = sorted(n for n in archive.namelist() if n.startswith("audio/"))
        assert [(from_csv[i]["rating"], from_csv[i]["comment"]) for i in ("hear", "lost", "see")] == \
            [("A better", "clearer"), ("", ""), ("tie", "")]
        assert [from_jsonl[i]["rating"] for i in ("hear", "lost", "see")] == ["A better", "", "tie"]
        assert from_jsonl["lost"]["problem"] == "missing file: missing.wav" and from_jsonl["lost"]["answer_a"] is None
        assert speech == sorted(from_jsonl[i][f"answer_{s}"]["audio"] for i in ("hear", "see") for s in "ab")
    finally:
        page.close()
        demo.close()
