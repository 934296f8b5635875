"""A rater's view of a team study in Chromium (Debian's, driven by Playwright): three blind votes, each revealed
after it is cast, the leaderboard moving with them, the rater going on in another browser; and a study created on
the page."""

from __future__ import annotations

import json
import re
import time

import pytest
from gradio_client import Client, handle_file

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_team_study import SECRETS, SETUPS, launch


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app(instruct_backend, tmp_path_factory, speech_path):
    """The app with a three-prompt study of three set-ups, every answer made."""
    demo = launch(instruct_backend, tmp_path_factory.mktemp("data"))
    sheet = tmp_path_factory.mktemp("sheet") / "three.csv"
    sheet.write_text("id,prompt,media\nhear,What is said?,speech.wav\nhello,Say hello.,\ncount,Count to three.,\n",
                     encoding="utf-8")
    client = Client(demo.local_url, verbose=False)
    study, _ = client.predict([handle_file(str(sheet)), handle_file(str(speech_path))], json.dumps(SETUPS),
                              "Browser study", api_name="/mcp_study_create")
    deadline = time.monotonic() + 120
    while json.loads(client.predict(api_name="/mcp_study_list"))[0]["answers"] < 9:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    yield demo.local_url
    demo.close()


def test_a_rater_votes_on_three_pairs_blind_and_sees_the_leaderboard_move(browser, app, tmp_path, output_dir):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 1300})
    errors, fetched = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: fetched.append(request.url))
    try:
        page.goto(app)
        page.get_by_role("tab", name="Team study").click()
        expect(page.locator("#team-study input")).to_have_value(re.compile("Browser study"), timeout=20_000)
        page.get_by_role("tab", name="Leaderboard").click()
        expect(page.locator("#team-board-note")).to_contain_text("0 votes from 0 raters", timeout=20_000)
        standings_before = page.locator("#team-standings").inner_text()
        page.get_by_role("tab", name="Rate").click()
        page.locator("#team-rater input").fill("Browser rater")

        page.locator("#team-start").click()
        for number, (choice, button) in enumerate([("A is better", "#team-vote-A"), ("tie", "#team-vote-tie"),
                                                   ("B is better", "#team-vote-B")], 1):
            expect(page.locator("#team-answer-a")).to_contain_text("A", timeout=20_000)
            expect(page.locator(button)).to_be_enabled(timeout=20_000)
            expect(page.locator("#team-progress")).to_contain_text(f"judged {number - 1} of the 9")
            # Before the vote: the answers, and nothing of the set-ups (not in the text, not in a file's name).
            shown = " ".join(page.locator(f"#team-{part}").inner_text()
                             for part in ("prompt", "answer-a", "answer-b", "reveal"))
            sources = page.locator("audio").evaluate_all("players => players.map(p => p.src)")
            assert not [s for s in SECRETS if s.lower() in (shown + " ".join(sources + fetched)).lower()], shown
            files = [url.rsplit("/", 1)[-1] for url in fetched if "/file=" in url and url.endswith(".wav")]
            assert set(files) <= {"answer-a.wav", "answer-b.wav"}, files  # the players' files, named by side
            if number == 1:
                page.locator("#team-comment textarea").fill("A says more")
            page.locator(button).click()
            expect(page.locator("#team-reveal")).to_contain_text(f"You voted: {choice}", timeout=20_000)
            revealed = page.locator("#team-reveal").inner_text()
            assert sum(setup["label"] in revealed for setup in SETUPS) == 2  # now it says which was which
            expect(page.locator(button)).to_be_disabled()
            if number == 1:
                page.locator("#team-reveal").scroll_into_view_if_needed()
                page.screenshot(path=str(output_dir / "team-study-revealed.png"), full_page=True)
            if number < 3:
                page.locator("#team-next").click()
        expect(page.locator("#team-progress")).to_contain_text("judged 3 of the 9")

        page.get_by_role("tab", name="Leaderboard").click()
        expect(page.locator("#team-board-note")).to_contain_text("3 votes from 1 raters", timeout=20_000)
        assert page.locator("#team-standings").inner_text() != standings_before
        expect(page.locator("#team-matrix")).to_contain_text("%")
        page.screenshot(path=str(output_dir / "team-study-leaderboard.png"), full_page=True)
        page.get_by_role("tab", name="New study").click()
        expect(page.locator("#team-studies")).to_contain_text("9 / 9")  # every answer made
        expect(page.locator("#team-new-setups")).to_contain_text("Set-up 3")
        sheet = tmp_path / "two.jsonl"
        sheet.write_text('{"id": "a", "prompt": "Hi?"}\n{"id": "b", "prompt": "Bye?"}\n', encoding="utf-8")
        page.locator("#team-new-name input").fill("Made on the page")
        page.locator("#team-new-files input[type=file]").set_input_files([str(sheet)])
        expect(page.locator("#team-new-files a")).to_have_count(1, timeout=20_000)
        page.locator("#team-create").click()  # the three set-ups the table starts with
        expect(page.locator("#team-studies")).to_contain_text("Made on the page", timeout=20_000)
        expect(page.locator("#team-studies")).to_contain_text("Set-up 1, Set-up 2, Set-up 3")
        assert not errors, errors
    finally:
        page.close()
    # Another browser, the same name: the rater goes on where they were.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    other = context.new_page()
    try:
        other.goto(app)
        other.get_by_role("tab", name="Team study").click()
        expect(other.locator("#team-study input")).to_have_value(re.compile("Made on the page"), timeout=20_000)
        other.locator("#team-study input").click()  # the newest study is picked first
        other.get_by_role("option", name=re.compile("Browser study")).click()
        other.locator("#team-rater input").fill("Browser rater")
        other.locator("#team-start").click()
        expect(other.locator("#team-progress")).to_contain_text("judged 3 of the 9", timeout=20_000)
        expect(other.locator("#team-vote-A")).to_be_enabled()
    finally:
        context.close()


def test_a_creator_reads_each_raters_progress_and_closes_the_study_and_a_rater_is_told(browser, app, output_dir):
    """The Manage sub-tab: two raters' votes (through the API) in its table, Close, and a rater's page that says the
    study is closed, in its list of studies and when they ask for a pair; Reopen lets them go on."""
    from playwright.sync_api import expect

    client = Client(app, verbose=False)
    study = next(s["study_id"] for s in json.loads(client.predict(api_name="/mcp_study_list"))
                 if s["name"] == "Browser study")
    for rater, votes in (("Ana", 2), ("Ben", 1)):
        for _ in range(votes):
            pair = json.loads(client.predict(study, rater, api_name="/mcp_study_next_pair")[0])
            client.predict(pair["pair_id"], "A", rater, "", api_name="/mcp_study_vote")

    def opened(page):
        page.goto(app)
        page.get_by_role("tab", name="Team study").click()
        expect(page.locator("#team-study input")).to_have_value(re.compile(r"\(s-"), timeout=20_000)
        page.locator("#team-study input").click()
        page.get_by_role("option", name=re.compile("Browser study")).click()
        expect(page.locator("#team-study input")).to_have_value(re.compile("Browser study"))

    creator = browser.new_page(viewport={"width": 1280, "height": 1000})
    rater = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors = []
    for page in (creator, rater):
        page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        opened(rater)
        rater.locator("#team-rater input").fill("Cai")
        opened(creator)
        creator.get_by_role("tab", name="Manage").click()
        table = creator.locator("#team-raters")
        expect(table).to_contain_text("Ana", timeout=20_000)
        texts = [line.strip() for line in table.inner_text().splitlines() if line.strip()]
        values = texts[texts.index("last vote") + 1:]  # the cells, row by row, after the label and the headers
        rows = {values[k]: values[k + 1:k + 4] for k in range(0, len(values), 4)}
        assert rows["Ana"][:2] == ["2", "7"] and rows["Ben"][:2] == ["1", "8"], rows  # votes, pairs left of 9
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows["Ana"][2]), rows
        expect(creator.locator("#team-manage-status")).to_contain_text("open")
        creator.locator("#team-close").click()
        expect(creator.locator("#team-manage-status")).to_contain_text("closed since", timeout=20_000)
        expect(creator.locator("#team-study input")).to_have_value(re.compile("Browser study .*· closed"))
        expect(creator.locator("#team-reopen")).to_be_enabled()
        expect(creator.locator("#team-close")).to_be_disabled()
        creator.screenshot(path=str(output_dir / "team-study-manage.png"), full_page=True)
        # The rater's open page: its list says so within a few seconds, and so does asking for a pair.
        expect(rater.locator("#team-study input")).to_have_value(re.compile("· closed"), timeout=20_000)
        rater.locator("#team-start").click()
        expect(rater.get_by_text(re.compile("Browser study is closed: it takes no more votes"))).to_be_visible(
            timeout=20_000)
        expect(rater.locator("#team-vote-A")).to_be_disabled()
        creator.locator("#team-reopen").click()
        expect(creator.locator("#team-manage-status")).to_contain_text(": open", timeout=20_000)
        expect(rater.locator("#team-study input")).not_to_have_value(re.compile("closed"), timeout=20_000)
        rater.locator("#team-start").click()
        expect(rater.locator("#team-vote-A")).to_be_enabled(timeout=20_000)
        assert not errors, errors
    finally:
        creator.close()
        rater.context.close()
