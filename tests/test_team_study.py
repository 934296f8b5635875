"""Team studies through the app's API (one launch on the tiny model, kept for the module): a study of three set-ups
and five prompts answered in the background while chat goes on, raters voting blind at the same time, the
leaderboard against Bradley–Terry computed by hand, a restart mid-study, 20 raters at once, exports, MCP tools, and the
README's example."""

from __future__ import annotations

import csv
import html
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from backends.base import Backend
from studies import StudyError
from studies.records import Vote
from tests.test_mcp import call, list_tools
from tests.test_studies import hand_bradley_terry
from ui import build_demo, queue_settings
from ui.evaluate.team import Creators, TeamStudies
from ui.i18n import I18N

SETUPS = [{"label": "Warm Ethan", "speaker": "ethan", "temperature": 0.7, "seed": 1, "max_new_tokens": 4,
           "speech": True},
          {"label": "Cold Chelsie", "speaker": "chelsie", "temperature": 0.0, "max_new_tokens": 4, "speech": False},
          {"label": "Pirate Aiden", "speaker": "aiden", "system_prompt": "Talk like a pirate.", "max_new_tokens": 4,
           "seed": 3, "speech": False}]
SECRETS = ["Warm Ethan", "Cold Chelsie", "Pirate Aiden", "ethan", "chelsie", "aiden", "pirate"]
"""What would tell a rater which set-up made an answer (labels and the settings that differ), case-insensitively."""
TOOLS = ["study_create", "study_list", "study_next_pair", "study_vote", "study_leaderboard", "study_export",
         "study_progress", "study_close", "study_reopen", "study_delete"]


class Holding(Backend):
    """The tiny engine, recording the requests it gets. While ``hold`` is on, every request after the first waits
    (up to 20 s) for a chat turn ("Hi") to reach the engine: the study can't run ahead of chat users by accident."""

    def __init__(self, inner: Backend):
        self.inner, self.info, self.requests, self.hold = inner, inner.info, [], False

    async def stream(self, request):
        import asyncio

        text = request.turns[-1].text
        self.requests.append(text)
        if self.hold and len(self.requests) > 1 and text != "Hi":
            deadline = time.monotonic() + 20
            while "Hi" not in self.requests and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        async for event in self.inner.stream(request):
            yield event


def launch(backend: Backend, data_dir: Path):
    demo = build_demo(backend, data_dir=str(data_dir), creators=Creators(anyone=True))  # this machine only
    demo.queue(**queue_settings(backend.info)).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                                                      show_error=True, i18n=I18N, mcp_server=True)
    return demo


@pytest.fixture(scope="module")
def app(instruct_backend, tmp_path_factory):
    """The app, as a dict whose ``url`` and ``demo`` a restart replaces."""
    state = {"data": tmp_path_factory.mktemp("data"), "engine": Holding(instruct_backend)}
    state["demo"] = launch(state["engine"], state["data"])
    state["url"] = state["demo"].local_url
    yield state
    state["demo"].close()


@pytest.fixture(scope="module")
def study(app, tmp_path_factory, speech_path, image_path):
    """A five-prompt study of three set-ups, created while someone chats; its id once every answer is made."""
    folder = tmp_path_factory.mktemp("sheet")
    sheet = folder / "five.csv"
    sheet.write_text("id,prompt,media,reference\nhear,What is said?,speech.wav,a question\nhello,Say hello.,,\n"
                     "count,Count to three.,,\ncolor,Name a color.,,\nshapes,What shapes?,gradient.png,\n",
                     encoding="utf-8")
    lead = Client(app["url"], verbose=False)
    app["engine"].hold = True
    study_id, _status = lead.predict([handle_file(str(f)) for f in (sheet, speech_path, image_path)],
                                     json.dumps(SETUPS), "Five prompts", api_name="/mcp_study_create")
    while len(app["engine"].requests) < 1:
        time.sleep(0.02)
    reply = Client(app["url"], verbose=False).predict({"text": "Hi", "files": []}, temperature=0, max_tokens=4,
                                                       api_name="/chat")
    app["chat_during_study"] = (reply[0], summary(lead, study_id)["answers"])
    deadline = time.monotonic() + 240
    while summary(lead, study_id)["answers"] < 15:
        assert time.monotonic() < deadline, summary(lead, study_id)
        time.sleep(0.2)
    app["engine"].hold = False
    return study_id


def summary(client: Client, study_id: str) -> dict:
    return next(s for s in json.loads(client.predict(api_name="/mcp_study_list")) if s["study_id"] == study_id)


def next_pair(client: Client, study_id: str, rater: str) -> tuple[dict, str, str]:
    pair, audio_a, audio_b = client.predict(study_id, rater, api_name="/mcp_study_next_pair")
    return json.loads(pair), audio_a, audio_b


def vote(client: Client, pair_id: str, rater: str, choice: str, comment: str = "") -> dict:
    return json.loads(client.predict(pair_id, choice, rater, comment, api_name="/mcp_study_vote"))


def exported(client: Client, study_id: str) -> dict[str, Path]:
    return {Path(path).name: Path(path) for path in client.predict(study_id, api_name="/mcp_study_export")}


def test_the_study_is_answered_in_the_background_while_a_chat_turn_is_served(app, study):
    conversation, answers_when_chat_done = app["chat_during_study"]
    assert conversation[-1]["role"] == "assistant" and answers_when_chat_done < 15
    assert app["engine"].requests.index("Hi") in (1, 2)  # after the answer in progress, not after the study
    assert summary(Client(app["url"], verbose=False), study)["answers_total"] == 15


def test_three_raters_at_once_judge_every_pair_once_and_the_board_is_bradley_terry(app, study):
    kept: dict[str, list[str]] = {}

    def rate(name: str, seed: int) -> None:
        client, rng, mine = Client(app["url"], verbose=False), random.Random(seed), kept.setdefault(name, [])
        while (pair := next_pair(client, study, name)[0])["pair_id"] is not None:
            assert pair["done"] == len(mine) and pair["total"] == 15
            revealed = vote(client, pair["pair_id"], name, rng.choice(["A", "A", "B", "tie", "both_bad"]))
            assert not revealed["already"] and {revealed["setup_a"], revealed["setup_b"]} <= set(SECRETS)
            mine.append(pair["pair_id"])

    raters = [threading.Thread(target=rate, args=(name, k)) for k, name in enumerate(["ana", "ben", "cai"])]
    for rater in raters:
        rater.start()
    for rater in raters:
        rater.join()
    client = Client(app["url"], verbose=False)
    votes = [json.loads(line) for line in exported(client, study)["votes.jsonl"].read_text().splitlines()]
    assert sorted(v["pair_id"] for v in votes) == sorted(p for ids in kept.values() for p in ids)
    assert [len(ids) for ids in kept.values()] == [15, 15, 15]
    cells = [(v["rater"], v["prompt_id"], *sorted((v["setup_a"], v["setup_b"]))) for v in votes]
    assert len(set(cells)) == 45  # no rater saw a pair twice: every rater judged every pair once
    labels = [s["label"] for s in SETUPS]
    by_hand = hand_bradley_terry([Vote(v["vote"], v["pair_id"], study, v["rater"], 0, labels.index(v["setup_a"]),
                                       labels.index(v["setup_b"]), v["choice"], "", 0.0) for v in votes], 3, prior=1.0)
    board = json.loads(client.predict(study, api_name="/mcp_study_leaderboard"))
    assert board["votes"] == 45 and board["raters"] == 3 and board["agreement"] is not None
    assert {s["setup"]: s["score"] for s in board["standings"]} == \
        {label: pytest.approx(round(score, 1), abs=0.051) for label, score in zip(labels, by_hand)}
    assert [s["score"] for s in board["standings"]] == sorted((s["score"] for s in board["standings"]), reverse=True)
    assert sum(s["votes"] for s in board["standings"]) == 2 * 45
    lefts = [labels.index(v["setup_a"]) < labels.index(v["setup_b"]) for v in votes]
    assert 0.2 < sum(lefts) / len(lefts) < 0.8  # sides drawn at random, not by set-up


def test_nothing_sent_before_the_vote_tells_which_setup_made_which_answer(app, study):
    client = Client(app["url"], verbose=False)
    for rater in ("eve", "fay", "gus", "hal", "ida", "jo"):  # a pair with speech (one set-up speaks)
        pair, audio_a, audio_b = next_pair(client, study, rater)
        if audio_a or audio_b:
            break
    again, *_ = next_pair(client, study, rater)
    assert again == pair  # the same pair, the same sides, until the vote
    sent = json.dumps(pair) + audio_a + audio_b
    assert not [s for s in SECRETS if s.lower() in sent.lower()], sent
    assert Path(audio_a or audio_b).name in ("answer-a.wav", "answer-b.wav")
    # The page's own event sends the same: its answers, neutral file names, no set-up.
    show = next(fn.fn for fn in app["demo"].fns.values() if getattr(fn.fn, "__name__", "") == "show")
    outputs = show(study, rater, FakeRequest())
    page = json.dumps([getattr(o, "constructor_args", o) for o in outputs], default=str, ensure_ascii=False)
    assert html.escape(pair["answer_b"]) in page and pair["pair_id"] in page and "/answer-" in page
    assert not [s for s in SECRETS if s.lower() in page.lower()], page
    revealed = vote(client, pair["pair_id"], rater, "B", "A was cut short")
    assert {revealed["setup_a"], revealed["setup_b"]} < set(SETUPS[k]["label"] for k in range(3))
    assert vote(client, pair["pair_id"], rater, "A")["already"]  # sent again: counted once, the first kept


class FakeRequest:
    headers: dict = {}
    username = None


def test_a_restart_mid_study_keeps_studies_answers_votes_and_each_raters_place(app, study):
    client = Client(app["url"], verbose=False)
    for _ in range(2):
        vote(client, next_pair(client, study, "dana")[0]["pair_id"], "dana", "tie")
    open_pair = next_pair(client, study, "dana")[0]
    before = (summary(client, study), client.predict(study, api_name="/mcp_study_leaderboard"))
    app["demo"].close()  # the app stops and starts again on the same data folder
    app["demo"] = launch(app["engine"], app["data"])
    app["url"] = app["demo"].local_url
    client = Client(app["url"], verbose=False)
    assert (summary(client, study), client.predict(study, api_name="/mcp_study_leaderboard")) == before
    assert before[0]["answers"] == 15 and before[0]["votes"] == 45 + 1 + 2
    assert next_pair(client, study, "dana")[0] == open_pair | {"done": 2}
    assert vote(client, open_pair["pair_id"], "dana", "A")["done"] == 3


RATERS = """
import json, random, sys, threading, time
from gradio_client import Client

url, study, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
clients = {f"rater {k:02d}": Client(url, verbose=False) for k in range(20)}
voted = {name: [] for name in clients}
print("ready", flush=True)
sys.stdin.readline()
stop = time.time() + seconds


def rate(name):
    client = clients[name]
    while time.time() < stop:
        pair = json.loads(client.predict(study, name, api_name="/mcp_study_next_pair")[0])
        if pair["pair_id"] is None:
            return
        choice = random.choice(["A", "B", "tie", "both_bad"])
        client.predict(pair["pair_id"], choice, name, "", api_name="/mcp_study_vote")
        voted[name].append((pair["pair_id"], time.time()))


threads = [threading.Thread(target=rate, args=(name,)) for name in clients]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(voted), flush=True)
"""
"""Twenty raters' browsers: in a process of their own, as they would be on their own machines."""


def test_twenty_raters_voting_at_once_lose_no_vote_and_chat_is_still_answered(app, study):
    raters = subprocess.Popen([sys.executable, "-c", RATERS, app["url"], study, "4"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert raters.stdout.readline().strip() == "ready"
        raters.stdin.write("go\n")
        raters.stdin.flush()
        time.sleep(0.5)  # the raters are voting
        asked = time.time()
        reply = Client(app["url"], verbose=False).predict({"text": "Hi again", "files": []}, temperature=0,
                                                           max_tokens=4, api_name="/chat")
        answered = time.time()
        voted = json.loads(raters.stdout.readline())
    finally:
        raters.kill()
        raters.wait()
    assert reply[0][-1]["role"] == "assistant" and reply[0][-1]["content"]
    assert any(asked < at < answered for times in voted.values() for _, at in times)  # chat while they voted
    log = [json.loads(line) for line in exported(Client(app["url"], verbose=False), study)["votes.jsonl"]
           .read_text().splitlines()]
    mine = [v for v in log if v["rater"] in voted]
    assert sorted(v["pair_id"] for v in mine) == sorted(p for times in voted.values() for p, _ in times)
    assert len(mine) >= 20 and len({v["pair_id"] for v in log}) == len(log)
    cells = [(v["rater"], v["prompt_id"], *sorted((v["setup_a"], v["setup_b"]))) for v in mine]
    assert len(cells) == len(set(cells))
    print(f"chat answered in {answered - asked:.2f} s while 20 raters cast {len(mine)} votes")


def test_the_vote_log_and_the_board_export_with_every_setting_and_media_hash(app, study, speech_path):
    import hashlib
    import zipfile

    files = exported(Client(app["url"], verbose=False), study)
    assert sorted(files) == ["dataset.zip", "leaderboard.csv", "leaderboard.jsonl", "study.zip", "votes.csv",
                            "votes.jsonl"]
    log = [json.loads(line) for line in files["votes.jsonl"].read_text().splitlines()]
    with files["votes.csv"].open(encoding="utf-8") as table:
        assert [row["pair_id"] for row in csv.DictReader(table)] == [v["pair_id"] for v in log]
    heard = next(v for v in log if v["prompt_id"] == "hear")
    assert heard["media"] == ["speech.wav"] and heard["reference"] == "a question"
    assert heard["media_sha256"] == [hashlib.sha256(speech_path.read_bytes()).hexdigest()]
    assert {heard["settings_a"]["speaker"], heard["settings_b"]["speaker"]} <= {"ethan", "chelsie", "aiden"}
    assert heard["model_a"] and heard["backend_a"] == "transformers" and heard["app_version"]
    commented = next(v for v in log if v["comment"])
    assert (commented["choice"], commented["comment"]) == ("B", "A was cut short")
    assert commented["winner"] == commented["setup_b"]
    board = [json.loads(line) for line in files["leaderboard.jsonl"].read_text().splitlines()]
    assert [b["rank"] for b in board] == [1, 2, 3] and board[0]["settings"]["max_new_tokens"] == 4
    with zipfile.ZipFile(files["study.zip"]) as archive:
        names = archive.namelist()
        answers = [json.loads(line) for line in archive.read("answers.jsonl").decode().splitlines()]
    assert len(answers) == 15 and {"votes.csv", "leaderboard.jsonl", "answers.jsonl"} <= set(names)
    spoken = [a for a in answers if a["audio"]]
    assert spoken and all(a["audio"] in names and a["setup"] == "Warm Ethan" for a in spoken)
    assert sum(n.startswith("media/") for n in names) == 2


def test_the_study_tools_serve_over_mcp(app, study):
    tools = list_tools(app["url"])
    assert [name for name in tools if name.startswith("study_")] == TOOLS
    for name in TOOLS:
        assert len(tools[name].description) > 60 and "$defs" not in json.dumps(tools[name].inputSchema), name
        assert all(p.get("description") for p in tools[name].inputSchema["properties"].values()), name
    assert tools["study_vote"].inputSchema["properties"]["choice"]["enum"] == ["A", "B", "tie", "both_bad"]
    pair, *_ = call(app["url"], "study_next_pair", {"study_id": study, "rater": "an agent"})
    assert json.loads(pair)["answer_a"] is not None
    revealed = json.loads(call(app["url"], "study_vote", {"pair_id": json.loads(pair)["pair_id"], "choice": "tie",
                                                          "rater": "an agent"})[0])
    assert revealed["choice"] == "tie" and revealed["done"] == 1


def test_refusals_are_named_in_the_raters_language(app, study):
    chinese = Client(app["url"], verbose=False, headers={"Accept-Language": "zh-CN"})
    with pytest.raises(Exception, match="你没有编号为"):
        chinese.predict("no-such-pair", "A", "ana", "", api_name="/mcp_study_vote")
    with pytest.raises(Exception, match="Type your name first"):
        Client(app["url"], verbose=False).predict(study, "  ", api_name="/mcp_study_next_pair")


def test_only_the_admins_named_create_studies(tmp_path, instruct_backend):
    teams = TeamStudies(tmp_path, {"app": instruct_backend}, Creators(logins=("lead",)))
    with pytest.raises(StudyError, match="Only the app's admins"):
        teams.create("s", [], SETUPS, login="bob")
    with pytest.raises(StudyError, match="called Warm Ethan"):
        teams.create("s", [], [SETUPS[0], SETUPS[0]], login="lead")
    with pytest.raises(StudyError, match="2 to 8 set-ups"):
        teams.create("s", [], SETUPS[:1], login="lead")
    assert TeamStudies(tmp_path, {"app": instruct_backend}, Creators(anyone=True)).may_create(None)


def test_an_app_others_reach_without_an_admin_lets_no_one_create_or_export(tmp_path, instruct_backend):
    """Issue 34: whoever runs the app creates studies. On this machine alone that is whoever opens the page; once
    others can reach the app (0.0.0.0: a Space, a studio; --share) and it names no admin, no one, and the tab says
    how to name one."""
    import cli
    from ui.i18n import ZH
    from ui.evaluate.team_tab import NO_CREATORS_NOTE

    def creators(*argv: str) -> Creators:
        return cli.study_creators(cli.parse_args(list(argv)))

    for name in ("127.0.0.1", "localhost", "::1"):
        assert creators("--server-name", name) == Creators(anyone=True)
    for argv in (["--server-name", "0.0.0.0"], ["--server-name", "127.0.0.1", "--share"],
                 ["--server-name", "192.168.1.5"]):
        assert creators(*argv).nobody, argv
    assert creators("--server-name", "0.0.0.0", "--admin", "lead", "--auth", "lead:pw") == Creators(logins=("lead",))
    teams = TeamStudies(tmp_path, {"app": instruct_backend})  # by default: no one
    for attempt in (lambda: teams.create("s", [], SETUPS, login="bob"), lambda: teams.export("s-1", None)):
        with pytest.raises(StudyError, match="No one creates or exports studies on this app"):
            attempt()
    def notes(demo) -> list[str]:
        return [c["props"]["elem_id"] for c in demo.get_config_file()["components"]
                if c.get("props", {}).get("elem_id") == "team-no-creators"]

    assert NO_CREATORS_NOTE in ZH and notes(build_demo(instruct_backend, data_dir=str(tmp_path)))
    assert not notes(build_demo(instruct_backend, data_dir=str(tmp_path), creators=Creators(anyone=True)))


class LoggedIn(FakeRequest):
    def __init__(self, username: str):
        self.username = username


def answered(folder: Path) -> str:
    """A two-prompt study of two set-ups in ``folder``'s store, every answer made (no engine); its id."""
    from studies import StudyAnswer, StudyPrompt, StudyStore

    store = StudyStore(folder / "studies")
    made = store.create_study("s", [("one", {}), ("two", {})], [StudyPrompt(k, f"p{k}", f"Q{k}?") for k in range(2)])
    for prompt in range(2):
        for setup in range(2):
            store.save_answer(made.id, StudyAnswer(prompt, setup, f"answer {prompt}/{setup}"))
    return made.id


def test_only_those_who_may_create_studies_export_them(tmp_path, instruct_backend):
    """An export names the set-up behind every answer: a rater holding one could look up each pair before voting.
    The tab's Export and the study_export endpoint both refuse a login that may not create studies."""
    import asyncio

    import gradio as gr

    study_id = answered(tmp_path)
    demo = build_demo(instruct_backend, data_dir=str(tmp_path), creators=Creators(logins=("lead",)))
    handlers = {(fn.fn.__module__, fn.fn.__name__): fn.fn for fn in demo.fns.values() if fn.fn is not None}
    export, study_export = handlers["ui.evaluate.team_tab", "export"], handlers["ui.tools.team", "study_export"]
    with pytest.raises(gr.Error, match="Only those who may create studies export them"):
        export(study_id, LoggedIn("bob"))
    with pytest.raises(gr.Error, match="Only those who may create studies export them"):
        asyncio.run(study_export(study_id, http_request=LoggedIn("bob")))
    assert len(export(study_id, LoggedIn("lead"))) == 6
    assert len(asyncio.run(study_export(study_id, http_request=LoggedIn("lead")))) == 6


def test_an_export_replaces_the_studys_previous_one_in_the_apps_scratch_folder(tmp_path):
    """Exports go where the app's session files go (removed when it stops), and a second export of a study replaces
    the first rather than leaving another zip of every WAV behind."""
    from ui.scratch import process_folder

    study_id = answered(tmp_path)
    teams = TeamStudies(tmp_path, {}, Creators(anyone=True))
    first = teams.export(study_id, None)
    assert all(Path(path).is_relative_to(process_folder()) for path in first)
    assert teams.export(study_id, None) == first
    folder = Path(first[0]).parent
    assert sorted(p.name for p in folder.parent.iterdir()) == [study_id]  # no folder left per export
    assert sorted(p.name for p in folder.iterdir()) == sorted(Path(path).name for path in first)


class Endless(Backend):
    """The tiny engine's info; a reply that never ends, noting when it starts and when its stream is closed."""

    def __init__(self, inner: Backend):
        self.info, self.started, self.closed = inner.info, threading.Event(), threading.Event()

    async def stream(self, request):
        import asyncio

        from backends.events import TextDelta

        try:
            self.started.set()
            yield TextDelta("never ")
            await asyncio.sleep(3600)
        finally:
            self.closed.set()


def test_stopping_the_server_drops_the_studys_answer_under_way(instruct_backend, tmp_path):
    """The answers' task lives on the server's event loop: stopping the server closes its engine request (before
    the app closes the engines, next test) and keeps nothing of it."""
    from studies import StudyPrompt, StudyStore

    store = StudyStore(tmp_path / "studies")
    study_id = store.create_study("s", [("one", {}), ("two", {})], [StudyPrompt(0, "p", "Hi?")]).id
    engine = Endless(instruct_backend)
    demo = launch(engine, tmp_path)
    try:
        Client(demo.local_url, verbose=False).predict(api_name="/mcp_study_list")  # a call wakes the task
        assert engine.started.wait(10)
    finally:
        demo.close()
    assert engine.closed.wait(5) and store.answers(study_id) == {}


def test_the_app_stops_its_server_before_its_engines(monkeypatch):
    """SIGTERM (the app's handler calls sys.exit) leaves launch with the server running: main stops it before the
    engines close, so no engine closes under a team study's answer."""
    import contextlib
    from types import SimpleNamespace

    import api
    import app as app_module
    import cli
    import ui

    order = []

    class Demo:
        def queue(self, **settings):
            return self

        def launch(self, **settings):
            raise SystemExit(0)

        def close(self):
            order.append("server")

    @contextlib.contextmanager
    def engine(args):
        try:
            yield SimpleNamespace(warm_up=lambda: None, info=None)
        finally:
            order.append("engines")

    for name in ("QWEN_OMNI_AUTH", "QWEN_OMNI_AUTH_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli, "backend_from_args", engine)
    monkeypatch.setattr(cli, "check_mcp_server", lambda args: None)
    monkeypatch.setattr(cli, "exit_cleanly_on_sigterm", lambda: None)
    monkeypatch.setattr(ui, "build_demo", lambda *args, **kwargs: Demo())
    monkeypatch.setattr(ui, "queue_settings", lambda info: {})
    monkeypatch.setattr(api, "app_kwargs", lambda *args, **kwargs: {})
    with pytest.raises(SystemExit):
        app_module.main([])
    assert order == ["server", "engines"]


def test_a_crowd_looking_at_the_board_computes_it_once_and_a_look_without_new_votes_reads_none(tmp_path,
                                                                                               monkeypatch):
    """Every open page looks every 5 s: many at once compute one board between them, and a look when no vote came in
    costs a count query, not a read of every vote."""
    import ui.evaluate.team as team_module

    study_id = answered(tmp_path)
    teams = TeamStudies(tmp_path, {})
    computed, read, real_board, real_votes = [], [], team_module.leaderboard, teams.store.votes

    def slow_board(*args, **kwargs):
        computed.append(1)
        time.sleep(0.2)
        return real_board(*args, **kwargs)

    def votes(*args):
        read.append(1)
        return real_votes(*args)

    monkeypatch.setattr(team_module, "leaderboard", slow_board)
    monkeypatch.setattr(teams.store, "votes", votes)
    vote_on = teams.store.next_pair(study_id, "ana")
    teams.store.vote(vote_on.id, "ana", "A")
    lookers = [threading.Thread(target=teams.leaderboard, args=(study_id,)) for _ in range(8)]
    for looker in lookers:
        looker.start()
    for looker in lookers:
        looker.join()
    assert (len(computed), len(read)) == (1, 1)
    for _ in range(3):
        assert teams.leaderboard(study_id)[1].votes == 1
    assert (len(computed), len(read)) == (1, 1)
    teams.store.vote(teams.store.next_pair(study_id, "ana").id, "ana", "B")
    assert teams.leaderboard(study_id)[1].votes == 2 and (len(computed), len(read)) == (2, 2)


def test_a_pair_asked_for_twice_at_once_never_hands_out_half_a_speech_file(tmp_path, monkeypatch, speech_path):
    """The same rater's two pages ask for their pair at the same moment: the second must not be given the path of
    the speech the first is still copying (the player would get half a file)."""
    import shutil

    from studies import StudyAnswer, StudyPrompt

    teams = TeamStudies(tmp_path, {})
    made = teams.store.create_study("s", [("one", {}), ("two", {})], [StudyPrompt(0, "p", "Hi?")])
    relative = teams.store.new_audio_file()
    shutil.copyfile(speech_path, teams.store.file(relative))
    teams.store.save_answer(made.id, StudyAnswer(0, 0, "spoken", relative))
    teams.store.save_answer(made.id, StudyAnswer(0, 1, "written"))
    whole = speech_path.read_bytes()

    def slow_copy(source, target, **kwargs):
        with open(target, "wb") as out:
            out.write(whole[:len(whole) // 2])
            out.flush()
            time.sleep(0.3)
            out.write(whole[len(whole) // 2:])
        return target

    monkeypatch.setattr(shutil, "copyfile", slow_copy)
    first = threading.Thread(target=teams.next_pair, args=(made.id, "ana"))
    first.start()
    time.sleep(0.1)  # the first page's copy is under way
    shown = teams.next_pair(made.id, "ana")
    spoken = Path(shown.audio_a or shown.audio_b)
    assert spoken.read_bytes() == whole
    first.join()
    assert [p.name for p in spoken.parent.iterdir()] == [spoken.name]  # no copy left half-way


def test_the_readme_team_example_runs_as_written(app, speech_path, tmp_path):
    import re
    import zipfile

    from tests.test_archive_and_docs import readme_section

    (code,) = re.findall(r"```python\n(.*?)```", readme_section("Team studies"), re.DOTALL)
    (tmp_path / "prompts.csv").write_text("id,prompt,media\nrow-1,What is said?,clip.wav\nrow-2,Hello.,\n")
    with zipfile.ZipFile(tmp_path / "media.zip", "w") as media:
        media.write(speech_path, "clip.wav")
    code = re.sub(r"http://127\.0\.0\.1:786\d/", app["url"], code)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    _shown, revealed, board = run.stdout.rstrip("\n").rsplit("\n", 2)
    assert revealed in ("Ethan, sampled Chelsie, greedy", "Chelsie, greedy Ethan, sampled")  # named after the vote
    assert "Ethan, sampled" in board and "Chelsie, greedy" in board


def test_the_data_folder_and_admins_come_from_the_command_line(monkeypatch, tmp_path):
    import app as app_module
    import cli

    monkeypatch.setenv("QWEN_OMNI_DATA_DIR", str(tmp_path))
    assert cli.parse_args([]).data_dir == str(tmp_path)
    monkeypatch.delenv("QWEN_OMNI_DATA_DIR")
    monkeypatch.delenv("SYSTEM", raising=False)
    assert cli.parse_args([]).data_dir is None  # no folder named: no team studies
    args = cli.parse_args(["--data-dir", "d", "--admin", "lead", "--admin", "kim"])
    assert (args.data_dir, args.admin) == ("d", ["lead", "kim"])
    monkeypatch.delenv("QWEN_OMNI_AUTH", raising=False)
    monkeypatch.delenv("QWEN_OMNI_AUTH_FILE", raising=False)
    monkeypatch.setattr(cli, "check_mcp_server", lambda args: None)
    monkeypatch.setattr(cli, "exit_cleanly_on_sigterm", lambda: None)  # pytest's own SIGTERM stays
    with pytest.raises(SystemExit, match="--admin names logins"):
        app_module.main(["--admin", "lead"])  # no login: no one could be the admin
    # main gives build_demo who may create studies, from where the app listens.
    import contextlib

    import ui

    given = {}

    def build_demo_stub(*args, **kwargs):
        given.update(kwargs)
        raise SystemExit("built")

    monkeypatch.setattr(cli, "backend_from_args", lambda args: contextlib.nullcontext(None))
    monkeypatch.setattr(ui, "build_demo", build_demo_stub)
    with pytest.raises(SystemExit, match="built"):
        app_module.main(["--data-dir", str(tmp_path), "--server-name", "0.0.0.0"])
    assert given["creators"] == Creators()
