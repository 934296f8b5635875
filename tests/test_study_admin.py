"""A study's creators manage it (issue 34): close it and reopen it, delete it with its rows and files while the
generator and raters are busy with it, read every rater's progress; the store's schema 1 migrated; and the API's
endpoints for it, refused to those who may not create studies."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file

from backends.base import Backend
from backends.events import AudioChunk, Done, TextDelta
from studies import StudyAnswer, StudyError, StudyPrompt, StudyStore
from studies.generation import Generator
from studies.store import MIGRATIONS, SCHEMA_VERSION
from tests.test_studies import SETUPS, Flaky, answered_study, short_request, until
from tests.test_team_study import FakeRequest
from ui import build_demo, queue_settings
from ui.evaluate.team import Creators, TeamStudies
from ui.i18n import I18N

TABLES = ("studies", "setups", "prompts", "answers", "pairs")


def rows_of(store: StudyStore, study_id: str) -> dict[str, int]:
    """How many rows of each table belong to the study (votes through its pairs), read with SQL."""
    db = sqlite3.connect(store.path)
    try:
        counts = {table: db.execute(f"SELECT COUNT(*) FROM {table} WHERE {'id' if table == 'studies' else 'study_id'}"
                                    " = ?", (study_id,)).fetchone()[0] for table in TABLES}
        counts["votes"] = db.execute("SELECT COUNT(*) FROM votes WHERE pair_id IN (SELECT id FROM pairs WHERE "
                                     "study_id = ?)", (study_id,)).fetchone()[0] + db.execute(
            "SELECT COUNT(*) FROM votes WHERE pair_id NOT IN (SELECT id FROM pairs)").fetchone()[0]
    finally:
        db.close()
    return counts


# Closing and reopening


def test_a_closed_study_hands_out_no_pair_and_takes_no_vote_until_it_is_reopened(tmp_path):
    store = StudyStore(tmp_path)
    study = answered_study(store)
    shown = store.next_pair(study.id, "ana")  # on her screen when the study is closed
    voted = store.next_pair(study.id, "ben")
    store.vote(voted.id, "ben", "A")
    before = store.votes(study.id)
    closed = store.close_study(study.id)
    assert closed.closed and closed.closed_at <= time.time()
    assert store.close_study(study.id).closed_at == closed.closed_at  # closing again keeps when it was closed
    with pytest.raises(StudyError, match="Study five prompts is closed"):
        store.next_pair(study.id, "ana")
    with pytest.raises(StudyError, match="is closed"):
        store.next_pair(study.id, "cai")  # a rater new to it too
    with pytest.raises(StudyError, match="was closed before your vote: it was not counted"):
        store.vote(shown.id, "ana", "B")
    assert store.vote(voted.id, "ben", "tie") == (before[0], True)  # a vote sent again is answered, not changed
    assert store.votes(study.id) == before and store.progress(study.id, "ana") == (0, 15)  # the board stays
    reopened = store.close_study(study.id, closed=False)
    assert not reopened.closed and reopened.closed_at is None
    assert store.next_pair(study.id, "ana") == shown  # her pair comes back, sides and all
    assert store.vote(shown.id, "ana", "B")[1] is False and len(store.votes(study.id)) == 2
    with pytest.raises(StudyError, match="No study s-gone"):
        store.close_study("s-gone")


def test_no_answer_is_made_for_a_closed_study_until_it_is_reopened(tmp_path):
    store = StudyStore(tmp_path)
    waiting = store.create_study("closed", [("one", {}), ("two", {})],
                                 [StudyPrompt(k, f"p{k}", "Hi?") for k in range(2)])
    other = store.create_study("open", [("one", {}), ("two", {})], [StudyPrompt(0, "p", "Hi?")])
    store.close_study(waiting.id)
    assert {job[0] for job in store.missing_answers()} == {other.id}
    engine = Flaky(0)
    generator = Generator(store, {"app": engine}, short_request)

    async def work():
        generator.wake()
        await generator.idle()
        assert store.answers(waiting.id) == {} and len(store.answers(other.id)) == 2
        store.close_study(waiting.id, closed=False)
        generator.wake()  # as the tab and study_reopen do
        await generator.idle()
        await generator.close()

    asyncio.run(work())
    assert len(store.answers(waiting.id)) == 4 and engine.requests == 6


# Deleting


def test_deleting_a_study_removes_its_rows_and_files_and_leaves_the_others_whole(tmp_path, speech_path, image_path):
    store = StudyStore(tmp_path)
    shared = store.keep_media(str(speech_path), "speech.wav")  # both studies' prompts name it: kept once
    own = store.keep_media(str(image_path), "gradient.png")
    studies = {}
    for name, media in (("doomed", (shared, own)), ("kept", (shared,))):
        made = store.create_study(name, SETUPS, [StudyPrompt(0, "p0", "What is this?", media),
                                                 StudyPrompt(1, "p1", "And this?")])
        for prompt in range(2):
            for setup in range(3):
                audio = store.new_audio_file()
                store.file(audio).write_bytes(speech_path.read_bytes())
                store.save_answer(made.id, StudyAnswer(prompt, setup, f"{name} {prompt}/{setup}", audio, "sha"))
        for rater in ("ana", "ben"):
            store.vote(store.next_pair(made.id, rater).id, rater, "A")
        store.next_pair(made.id, "ana")  # shown, not voted on
        studies[name] = made
    doomed, kept = studies["doomed"], studies["kept"]
    kept_before = (store.study(kept.id), store.answers(kept.id), store.votes(kept.id), rows_of(store, kept.id))
    doomed_audio = [store.file(a.audio) for a in store.answers(doomed.id).values()]
    doomed_pair = store.next_pair(doomed.id, "ana")
    with sqlite3.connect(store.path) as db:
        doomed_pairs = sorted(row[0] for row in db.execute("SELECT id FROM pairs WHERE study_id = ?", (doomed.id,)))

    assert sorted(store.delete_study(doomed.id)) == doomed_pairs and len(doomed_pairs) == 3
    assert rows_of(store, doomed.id) == dict.fromkeys([*TABLES, "votes"], 0)
    assert not [path for path in doomed_audio if path.exists()]
    assert not store.file(own.file).exists() and store.file(shared.file).exists()  # the other study's is kept
    assert (store.study(kept.id), store.answers(kept.id), store.votes(kept.id), rows_of(store, kept.id)) == \
        kept_before
    assert all(store.file(a.audio).exists() for a in store.answers(kept.id).values())
    assert [s.id for s in store.studies()] == [kept.id] and [c[0] for c in store.catalog()] == [kept.id]
    with pytest.raises(StudyError, match="it was deleted, or the id is wrong"):
        store.next_pair(doomed.id, "ana")
    with pytest.raises(StudyError, match="No pair"):
        store.vote(doomed_pair.id, "ana", "A")
    with pytest.raises(StudyError, match="No study"):
        store.save_answer(doomed.id, StudyAnswer(0, 0, "late"))  # an answer finished afterwards is not kept
    with pytest.raises(StudyError, match="No study"):
        store.delete_study(doomed.id)
    assert rows_of(store, doomed.id)["answers"] == 0


def test_a_study_created_while_another_is_deleted_never_loses_a_medium_it_names(tmp_path, image_path):
    """A new study keeps its media before it writes its rows: a deletion in between may remove a medium only the
    deleted study named. The new study then finds it gone and is refused, rather than made with a missing file."""
    store = StudyStore(tmp_path)
    old = store.create_study("old", SETUPS, [StudyPrompt(0, "p", "Hi?", (store.keep_media(str(image_path), "a.png"),))])
    medium = store.keep_media(str(image_path), "a.png")  # the new study's: the same file, already there
    store.delete_study(old.id)
    with pytest.raises(StudyError, match="a.png were removed while the study was created"):
        store.create_study("new", SETUPS, [StudyPrompt(0, "p", "Hi?", (medium,))])
    assert store.studies() == []
    again = store.create_study("new", SETUPS, [StudyPrompt(0, "p", "Hi?",
                                                           (store.keep_media(str(image_path), "a.png"),))])
    assert store.file(again.prompts[0].media[0].file).is_file()


class Gate(Backend):
    """The tiny engine, whose first request stops after its first event until ``go`` is set (a study is deleted
    meanwhile); it notes the streams the generator closes."""

    def __init__(self, inner: Backend):
        self.inner, self.info = inner, inner.info
        self.started, self.go, self.requests, self.closed = threading.Event(), threading.Event(), [], []

    async def stream(self, request):
        self.requests.append(request.turns[-1].text)
        first, inner = len(self.requests) == 1, self.inner.stream(request)
        try:
            async for event in inner:
                yield event
                if first and not self.go.is_set():
                    self.started.set()
                    while not self.go.is_set():
                        await asyncio.sleep(0.01)
        finally:
            await inner.aclose()
            self.closed.append(request.turns[-1].text)


def teams_on(tmp_path: Path, engine: Backend) -> TeamStudies:
    """The app's studies on ``engine``, with a generator that asks for short answers."""
    teams = TeamStudies(tmp_path, {"app": engine}, Creators(anyone=True))
    teams.generator = Generator(teams.store, {"app": engine}, short_request, pause_s=0.05)
    return teams


def test_the_generator_drops_the_answer_under_way_of_a_study_deleted_and_goes_on(tmp_path, instruct_backend,
                                                                                 caplog):
    engine = Gate(instruct_backend)
    teams = teams_on(tmp_path, engine)
    spoken = [("warm", {"speaker": "ethan", "speech": True}), ("cold", {"speaker": "chelsie"})]
    doomed = teams.store.create_study("doomed", spoken, [StudyPrompt(k, f"d{k}", f"Doomed {k}?") for k in range(2)])
    kept = teams.store.create_study("kept", spoken, [StudyPrompt(k, f"k{k}", f"Kept {k}?") for k in range(2)])
    caplog.set_level(logging.INFO, logger="studies.generation")

    async def work():
        teams.generator.wake()
        await until(engine.started.is_set, 60)
        assert teams.generator.current == (doomed.id, 0, 0)
        await asyncio.to_thread(teams.delete_study, doomed.id, "doomed", None)  # as the tab's handler, from a thread
        engine.go.set()
        await until(lambda: len(teams.store.answers(kept.id)) == 4, 120)
        await teams.generator.idle()
        assert not teams.generator._task.done()  # alive, resting: a new study is answered
        again = teams.store.create_study("after", [("one", {}), ("two", {})], [StudyPrompt(0, "a", "After?")])
        teams.generator.wake()
        await until(lambda: len(teams.store.answers(again.id)) == 2, 60)
        await teams.generator.close()

    asyncio.run(work())
    assert engine.requests[0] == "Doomed 0?" and "Doomed 0?" in engine.closed  # its engine request was closed
    assert "Doomed 1?" not in engine.requests  # nothing more made for it
    assert rows_of(teams.store, doomed.id) == dict.fromkeys([*TABLES, "votes"], 0)
    kept_audio = {Path(a.audio).name for a in teams.store.answers(kept.id).values() if a.audio}
    assert {p.name for p in (tmp_path / "studies" / "audio").iterdir()} == kept_audio  # no speech left behind
    assert not troubles(caplog), caplog.text
    assert "its answer under way is dropped" in caplog.text and doomed.id not in teams.generator.waiting


class Speaking(Backend):
    """An engine that answers at once with a little text and a second of speech."""

    def __init__(self):
        from types import SimpleNamespace

        self.info = SimpleNamespace(model="speaking", backend="test", can_speak=True)

    async def stream(self, request):
        yield TextDelta("spoken")
        yield AudioChunk(np.zeros(24_000, dtype=np.float32), 24_000)
        yield Done()


def test_an_answer_kept_just_as_its_study_is_deleted_leaves_no_row_and_no_speech(tmp_path, caplog):
    """The deletion lands between the engine's last event and the answer's keeping: the store refuses the answer
    (no row comes back to life), its speech file is removed, and the generator goes on with the next study."""
    teams = teams_on(tmp_path, Speaking())
    spoken = [("one", {"speech": True}), ("two", {"speech": True})]
    doomed = teams.store.create_study("doomed", spoken, [StudyPrompt(0, "d", "Doomed?")])
    kept = teams.store.create_study("kept", spoken, [StudyPrompt(0, "k", "Kept?")])
    save, written = teams.store.save_answer, []

    def deleted_first(study_id, answer):
        written.append(answer.audio)
        if study_id == doomed.id and teams.store.catalog()[-1][0] == doomed.id:
            teams.delete_study(doomed.id, "doomed", None)
        return save(study_id, answer)

    teams.store.save_answer = deleted_first
    caplog.set_level(logging.INFO, logger="studies.generation")

    async def work():
        teams.generator.wake()
        await until(lambda: len(teams.store.answers(kept.id)) == 2, 30)
        await teams.generator.close()

    asyncio.run(work())
    assert written[0] and not teams.store.file(written[0]).exists()  # written, then removed with the refusal
    assert rows_of(teams.store, doomed.id)["answers"] == 0 and "is not kept" in caplog.text
    assert sorted(p.name for p in (tmp_path / "studies" / "audio").iterdir()) == \
        sorted(Path(a.audio).name for a in teams.store.answers(kept.id).values())
    assert not troubles(caplog), caplog.text


def troubles(caplog) -> list[logging.LogRecord]:
    """What the study answers' task logged as a warning or an error (a failure, an exception it went on after)."""
    return [r for r in caplog.records if r.name.startswith("studies") and r.levelno >= logging.WARNING]


def test_deleting_asks_for_the_studys_name_and_removes_the_apps_copies_of_its_pairs(tmp_path):
    teams = TeamStudies(tmp_path, {}, Creators(anyone=True))
    study = answered_study(teams.store)
    shown = teams.next_pair(study.id, "ana")
    copies = Path(teams._pairs_folder) / shown.pair_id
    assert copies.is_dir()
    exported = Path(teams.export(study.id, None)[0]).parent
    teams.leaderboard(study.id)
    for typed in ("", "five", "Five prompts"):
        with pytest.raises(StudyError, match="type its name exactly"):
            teams.delete_study(study.id, typed, None)
    assert teams.store.study(study.id) == study
    assert teams.delete_study(study.id, " five   prompts ", None) == study  # spaces folded, as names are kept
    assert not copies.exists() and not exported.exists()
    with pytest.raises(StudyError, match="No study"):
        teams.leaderboard(study.id)  # not served from the app's cache of boards
    assert teams.summaries() == []


# Progress per rater


def test_every_raters_progress_counts_votes_the_pairs_left_and_the_last_vote(tmp_path):
    store = StudyStore(tmp_path)
    study = store.create_study("s", SETUPS, [StudyPrompt(k, f"p{k}", f"Q{k}?") for k in range(5)])
    for prompt in range(4):  # the last prompt is not answered yet: 4 × 3 pairs ready
        for setup in range(3):
            store.save_answer(study.id, StudyAnswer(prompt, setup, "answer"))
    for rater, votes in (("ana", 3), ("ben", 1)):
        for _ in range(votes):
            store.vote(store.next_pair(study.id, rater).id, rater, "A")
    store.next_pair(study.id, "ben")  # shown, not voted on: still left for him
    store.next_pair(study.id, "cai")  # has seen a pair, voted on none
    last = {rater: max(v.voted_at for v in store.votes(study.id) if v.rater == rater) for rater in ("ana", "ben")}
    ready, progress = store.rater_progress(study.id)
    assert ready == 12
    assert [(p.rater, p.votes, p.left, p.last_vote_at) for p in progress] == \
        [("ana", 3, 9, last["ana"]), ("ben", 1, 11, last["ben"]), ("cai", 0, 12, None)]
    assert [(p.votes, p.left) for p in progress] == [(store.progress(study.id, r)[0], 12 - store.progress(
        study.id, r)[0]) for r in ("ana", "ben", "cai")]
    store.close_study(study.id)
    assert store.rater_progress(study.id) == (ready, progress)  # a closed study's progress is still read
    assert store.rater_progress(answered_study(store).id) == (15, [])


# The schema


def test_a_database_of_schema_1_opens_migrated_with_every_study_open(tmp_path):
    """A file the previous version (schema 1) wrote, made by its SQL: opened, it gains ``closed_at`` (every study
    open), keeps every row, and its studies can be closed."""
    assert SCHEMA_VERSION == 2
    db = sqlite3.connect(tmp_path / "studies.sqlite3")
    db.executescript(MIGRATIONS[1] + "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                     "INSERT INTO schema_version VALUES (1);")
    db.execute("INSERT INTO studies VALUES ('s-old', 'old', 1.0, 'lead', 'abc')")  # schema 1's five columns
    db.executemany("INSERT INTO setups (study_id, position, label, settings) VALUES ('s-old', ?, ?, '{}')",
                   [(0, "one"), (1, "two")])
    db.execute("INSERT INTO prompts VALUES ('s-old', 0, 'p', 'Hi?', '[]', '', '', '')")
    db.executemany("INSERT INTO answers VALUES ('s-old', 0, ?, ?, NULL, NULL, '', 'stop', NULL, NULL, NULL, 1.0)",
                   [(0, "hello"), (1, "hi")])
    db.execute("INSERT INTO pairs VALUES ('pair-1', 's-old', 'ana', 0, 0, 1, 1, 0, 2.0)")
    db.execute("INSERT INTO votes (pair_id, choice, comment, voted_at) VALUES ('pair-1', 'A', 'ok', 3.0)")
    db.commit()
    db.close()
    store = StudyStore(tmp_path)
    db = sqlite3.connect(tmp_path / "studies.sqlite3")
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    assert "closed_at" in [row[1] for row in db.execute("PRAGMA table_info(studies)")]
    db.close()
    old = store.study("s-old")
    assert (old.name, old.created_by, old.closed, [s.label for s in old.setups]) == ("old", "lead", False,
                                                                                   ["one", "two"])
    assert [(v.rater, v.choice, v.winner) for v in store.votes("s-old")] == [("ana", "A", 1)]
    ready, (ana,) = store.rater_progress("s-old")
    assert (ready, ana.rater, ana.votes, ana.left, ana.last_vote_at) == (1, "ana", 1, 0, 3.0)
    assert store.close_study("s-old").closed and StudyStore(tmp_path).study("s-old").closed  # opened again: as is


# The API: creators only, in the caller's language


def launch_with_logins(backend: Backend, data_dir: Path):
    demo = build_demo(backend, data_dir=str(data_dir), creators=Creators(logins=("lead",)))
    demo.queue(**queue_settings(backend.info)).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                                                      show_error=True, i18n=I18N,
                                                      auth=[("lead", "lead-pw"), ("bob", "bob-pw"), ("kim", "kim-pw")])
    return demo


@pytest.fixture(scope="module")
def app(instruct_backend, tmp_path_factory):
    demo = launch_with_logins(instruct_backend, tmp_path_factory.mktemp("data"))
    sheet = tmp_path_factory.mktemp("sheet") / "two.csv"
    sheet.write_text("id,prompt,media\nhello,Say hello.,\ncount,Count to three.,\n", encoding="utf-8")
    lead = Client(demo.local_url, auth=("lead", "lead-pw"), verbose=False)
    setups = [{"label": "Warm", "temperature": 0.7, "seed": 1, "max_new_tokens": 4, "speech": False},
              {"label": "Cold", "temperature": 0.0, "max_new_tokens": 4, "speech": False}]
    made = {}
    for name in ("Admin study", "Doomed study"):
        made[name], _ = lead.predict([handle_file(str(sheet))], json.dumps(setups), name, api_name="/mcp_study_create")
    deadline = time.monotonic() + 120
    while sum(s["answers"] for s in json.loads(lead.predict(api_name="/mcp_study_list"))) < 8:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    yield {"demo": demo, "url": demo.local_url, "lead": lead, **made}
    demo.close()


def as_user(app, name: str, **kwargs) -> Client:
    return Client(app["url"], auth=(name, f"{name}-pw"), verbose=False, **kwargs)


def pair_for(client: Client, study_id: str) -> dict:
    return json.loads(client.predict(study_id, "", api_name="/mcp_study_next_pair")[0])


def test_only_those_who_may_create_studies_manage_them_through_the_api(app):
    bob = as_user(app, "bob")
    study = app["Admin study"]
    for api_name, args in (("/mcp_study_progress", (study,)), ("/mcp_study_close", (study,)),
                           ("/mcp_study_reopen", (study,)), ("/mcp_study_delete", (study, "Admin study"))):
        with pytest.raises(Exception, match="Only those who may create studies close, reopen or delete them"):
            bob.predict(*args, api_name=api_name)
    with pytest.raises(Exception, match="只有可以创建研究的人才能关闭"):
        as_user(app, "bob", headers={"Accept-Language": "zh-CN"}).predict(study, api_name="/mcp_study_progress")
    assert len(json.loads(bob.predict(api_name="/mcp_study_list"))) == 2  # nothing was closed or deleted
    assert not any(s["closed"] for s in json.loads(bob.predict(api_name="/mcp_study_list")))


def test_a_creator_closes_reopens_and_reads_each_raters_progress_through_the_api(app):
    lead, bob, kim = app["lead"], as_user(app, "bob"), as_user(app, "kim")
    study = app["Admin study"]
    for client, votes in ((bob, 2), (kim, 1)):
        for _ in range(votes):
            client.predict(pair_for(client, study)["pair_id"], "A", "", "", api_name="/mcp_study_vote")
    open_pair = pair_for(kim, study)
    closed = json.loads(lead.predict(study, api_name="/mcp_study_close"))
    assert closed["closed"] and closed["closed_at"].endswith("Z") and closed["votes"] == 3
    with pytest.raises(Exception, match="Study Admin study is closed"):
        pair_for(bob, study)
    with pytest.raises(Exception, match="was closed before your vote"):
        kim.predict(open_pair["pair_id"], "B", "", "", api_name="/mcp_study_vote")
    progress = json.loads(lead.predict(study, api_name="/mcp_study_progress"))
    assert progress["closed"] and progress["pairs_ready"] == 2
    assert [(r["rater"], r["votes"], r["left"]) for r in progress["raters"]] == [("bob", 2, 0), ("kim", 1, 1)]
    assert all(r["last_vote_at"].endswith("Z") for r in progress["raters"])
    board = json.loads(bob.predict(study, api_name="/mcp_study_leaderboard"))  # the board stays for everyone
    assert board["votes"] == 3
    assert not json.loads(lead.predict(study, api_name="/mcp_study_reopen"))["closed"]
    assert pair_for(kim, study) == open_pair | {"done": 1}  # the same pair comes back
    assert json.loads(kim.predict(open_pair["pair_id"], "B", "", "", api_name="/mcp_study_vote"))["done"] == 2


def test_a_creator_deletes_a_study_and_its_raters_next_step_says_so(app):
    lead, bob = app["lead"], as_user(app, "bob")
    study = app["Doomed study"]
    shown = pair_for(bob, study)
    with pytest.raises(Exception, match="type its name exactly"):
        lead.predict(study, "Doomed", api_name="/mcp_study_delete")
    assert json.loads(lead.predict(study, "Doomed study", api_name="/mcp_study_delete")) == \
        {"study_id": study, "name": "Doomed study", "deleted": True}
    assert [s["study_id"] for s in json.loads(bob.predict(api_name="/mcp_study_list"))] == [app["Admin study"]]
    with pytest.raises(Exception, match="it was deleted, or the id is wrong"):
        pair_for(bob, study)
    with pytest.raises(Exception, match="No pair"):
        bob.predict(shown["pair_id"], "A", "", "", api_name="/mcp_study_vote")
    # On the page: the rater's vote on the pair they still see, and their next pair, are refused in words.
    import gradio as gr

    handlers = {fn.fn.__name__: fn.fn for fn in app["demo"].fns.values()
                if fn.fn is not None and fn.fn.__module__ == "ui.evaluate.team_tab"}
    with pytest.raises(gr.Error, match="This study was deleted: your vote was not kept"):
        handlers["cast"](shown["pair_id"], "bob", "", study, FakeRequest())
    with pytest.raises(gr.Error, match="it was deleted"):
        handlers["show"](study, "bob", FakeRequest())
    board = handlers["board"](study, "", FakeRequest())
    assert board == ("", "", None, None, None, None)  # the open leaderboard empties, no traceback


def test_the_manage_sub_tab_is_shown_to_creators_only_and_its_actions_refuse_the_others(app):
    import gradio as gr

    from tests.test_team_study import LoggedIn

    handlers: dict[str, list] = {}
    for fn in app["demo"].fns.values():
        if fn.fn is not None and fn.fn.__module__ in ("ui.evaluate.team_tab", "ui.evaluate.team_manage"):
            handlers.setdefault(fn.fn.__name__, []).append(fn.fn)
    (opened,) = handlers["opened"]
    for login, shown in (("bob", False), ("lead", True)):
        tab = opened("", LoggedIn(login))[5]
        assert tab.constructor_args["visible"] is shown, login
    study = app["Admin study"]
    assert len(handlers["close"]) == 2  # Close and Reopen
    for action in [*(lambda close=close: close(study, LoggedIn("bob")) for close in handlers["close"]),
                   lambda: handlers["delete"][0](study, "Admin study", LoggedIn("bob"))]:
        with pytest.raises(gr.Error, match="Only those who may create studies close, reopen or delete them"):
            asyncio.run(action())
    manage = handlers["manage"][0]  # wired to several events
    assert "Only those who may create studies" in manage(study, LoggedIn("bob"))[0]  # said, not a table
    status, table, *_ = manage(study, LoggedIn("lead"))
    assert "Admin study" in status and table["headers"] == ["rater", "votes", "pairs left", "last vote"]
    assert not json.loads(app["lead"].predict(api_name="/mcp_study_list"))[0]["closed"]  # nothing was changed
