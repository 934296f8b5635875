"""The Evaluate tab through its API: a prompt set, two set-ups, Stop and resume, ratings, exports, and fairness
to people chatting at the same time."""

from __future__ import annotations

import asyncio
import csv
import json
import threading
import time
import zipfile
from pathlib import Path

import pytest
import soundfile
from gradio_client import Client, handle_file

from backends.base import Backend
from tests.test_app import launch
from ui.evaluate.sheet import read_prompts

SET_A = {"engine_a": "app", "speaker_a": "ethan", "system_a": "", "temperature_a": 0.0, "top_p_a": 0.8,
         "top_k_a": 20, "max_tokens_a": 6, "seed_a": 0, "speech_a": True}
SET_B = {"use_b": True, "engine_b": "app", "speaker_b": "chelsie", "system_b": "Answer briefly.",
         "temperature_b": 0.9, "top_p_b": 0.9, "top_k_b": 50, "max_tokens_b": 6, "seed_b": 7, "speech_b": False}


class Recording(Backend):
    """The app's engine, with a record of the requests it got. While ``release`` says no, every request after
    the first waits (up to 20 s) before it reaches the engine: a test can hold a run between two rows."""

    def __init__(self, inner: Backend):
        self.inner, self.info, self.requests = inner, inner.info, []
        self.release = None

    async def stream(self, request):
        self.requests.append(request)
        if self.release is not None and len(self.requests) > 1 and request.turns[-1].text != "Hi":
            deadline = time.monotonic() + 20
            while not self.release() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        async for event in self.inner.stream(request):
            yield event


@pytest.fixture
def prompt_set(tmp_path, speech_path, image_path) -> list[str]:
    sheet = tmp_path / "set.csv"
    with sheet.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "prompt", "media", "reference"])
        writer.writerow(["hear", "What is said?", "speech.wav", "a question"])
        writer.writerow(["lost", "And this one?", "missing.wav", ""])
        writer.writerow(["see", "What shapes?", "gradient.png", ""])
        writer.writerow(["plain", "Say hello.", "", "hello"])
    return [str(sheet), str(speech_path), str(image_path)]


@pytest.fixture
def app(instruct_backend):
    recording = Recording(instruct_backend)
    demo = launch(recording)
    yield demo.local_url, recording
    demo.close()


def run(client: Client, files: list[str], **setups):
    return client.predict([handle_file(f) for f in files], **{**SET_A, "use_b": False, **setups},
                          api_name="/evaluate")


def rows_of(table) -> dict[str, list]:
    return {row[0]: row for row in table["data"]}


def test_a_sheet_names_its_bad_rows_and_keeps_the_rest(tmp_path, speech_path):
    sheet = tmp_path / "set.jsonl"
    sheet.write_text('{"id": "ok", "prompt": "Hi", "media": ["speech.wav"]}\n'
                     "not json\n"
                     '{"id": "gone", "prompt": "Hi", "media": ["nowhere.png"]}\n'
                     '{"id": "empty"}\n', encoding="utf-8")
    prompts = read_prompts([str(sheet), str(speech_path)], tmp_path / "work")
    problems = {p.row: p.problem for p in prompts}
    assert problems[1] == "" and prompts[0].paths == (str(speech_path),)
    assert problems[2].startswith("not a JSON object")
    assert problems[3] == "missing file: nowhere.png" and problems[4] == "no prompt and no media"


def test_two_set_ups_answer_every_good_row_and_the_same_seed_answers_the_same(app, prompt_set, tmp_path):
    url, engine = app
    first = Client(url, verbose=False, download_files=str(tmp_path / "first"))
    table, progress, status, _ = run(first, prompt_set, **SET_B)
    rows = rows_of(table)
    assert set(rows) == {"hear", "lost", "see", "plain"}
    assert "row 3" in rows["lost"][8] and "missing file: missing.wav" in rows["lost"][8]
    for good in ("hear", "see", "plain"):
        assert rows[good][3] and rows[good][4], f"{good}: both set-ups answer"
    assert 'value="4"' in progress
    # Each set-up's own settings went to the engine: A speaks as Ethan, greedy; B is sampled, seeded, silent.
    sides = {(r.speaker, r.sampling.seed, r.return_audio, r.system_prompt) for r in engine.requests}
    assert sides == {("ethan", 0, True, ""), ("chelsie", 7, False, "Answer briefly.")}
    assert len(engine.requests) == 6, "the row with a missing file is not sent"

    second = Client(url, verbose=False, download_files=str(tmp_path / "second"))
    again, *_ = run(second, prompt_set, **SET_B)
    assert [row[3:5] for row in again["data"]] == [row[3:5] for row in table["data"]], "same seeds, same answers"


def test_the_bundled_example_set_runs_with_two_speakers_and_every_row_is_answered_and_spoken(app, tmp_path):
    """What a non-coder does first: "Load the example set" (its sheet and files), run it with two speakers, and
    every row gets both answers, set-up A's with its speech; no row is refused."""
    from ui import examples

    url, engine = app
    files = examples.evaluation_files()
    assert Path(files[0]).name == examples.EVALUATION_SET and len(files) > 1
    client = Client(url, verbose=False, download_files=str(tmp_path))
    table, progress, _, _ = run(client, files, **{**SET_B, "speech_b": True})
    rows = rows_of(table)
    with open(files[0], encoding="utf-8") as sheet:
        assert len(rows) == len(list(csv.DictReader(sheet))) >= 7
    for row_id, row in rows.items():
        assert row[3] and row[4], f"{row_id}: both set-ups answer"
        assert row[8].startswith("✓"), f"{row_id}: {row[8]}"
    assert {r.speaker for r in engine.requests} == {"ethan", "chelsie"}
    assert all(r.return_audio for r in engine.requests)


def test_stop_keeps_the_rows_done_and_a_second_run_answers_only_the_rest(app, prompt_set, tmp_path):
    url, engine = app
    released = threading.Event()
    engine.release = released.is_set  # the run waits after its first row, until the test has stopped it
    client = Client(url, verbose=False, download_files=str(tmp_path))
    job = client.submit([handle_file(f) for f in prompt_set], **{**SET_A, "use_b": False}, api_name="/evaluate")
    for outputs in job:
        if rows_of(outputs[0])["hear"][3]:
            job.cancel()
            break
    released.set()
    asked_before = len(engine.requests)
    final, *_ = run(client, prompt_set)  # the same session: the run resumes
    rows = rows_of(final)
    asked_after = [r.turns[-1].text for r in engine.requests[asked_before:]]
    assert asked_after == ["What shapes?", "Say hello."], "only the rows not done are asked, once each"
    assert rows["hear"][3] == rows_of(outputs[0])["hear"][3], "the row done before Stop is kept as it was"
    assert all(rows[row_id][3] for row_id in ("hear", "see", "plain"))


def test_ratings_export_to_csv_jsonl_and_zip_that_agree_and_import_back(app, prompt_set, tmp_path):
    url, _ = app
    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
    run(client, prompt_set, **SET_B)
    client.predict("hear", "A better", "clearer", api_name="/evaluate_rate")
    client.predict("plain", "both wrong", "", api_name="/evaluate_rate")
    table_csv, table_jsonl, archive = client.predict(api_name="/evaluate_export")

    with open(table_csv, encoding="utf-8") as f:
        from_csv = {row["id"]: row for row in csv.DictReader(f)}
    from_jsonl = {r["id"]: r for r in map(json.loads, Path(table_jsonl).read_text(encoding="utf-8").splitlines())}
    assert set(from_csv) == set(from_jsonl) == {"hear", "lost", "see", "plain"}
    assert (from_csv["hear"]["rating"], from_csv["hear"]["comment"]) == ("A better", "clearer")
    assert from_jsonl["plain"]["rating"] == "both wrong" and from_jsonl["see"]["rating"] == ""
    for row_id, record in from_jsonl.items():
        assert from_csv[row_id]["answer_a"] == (record["answer_a"] or {}).get("text", "")
        assert json.loads(from_csv[row_id]["setup_b"])["seed"] == record["setup_b"]["seed"] == 7
    assert len(from_jsonl["hear"]["media_sha256"][0]) == 64 and from_jsonl["hear"]["model_a"]
    assert from_jsonl["hear"]["app_version"]
    with zipfile.ZipFile(archive) as z:
        assert z.read("results.jsonl").decode() == Path(table_jsonl).read_text(encoding="utf-8")
        speech = [n for n in z.namelist() if n.startswith("audio/")]
        assert speech == [from_jsonl[i]["answer_a"]["audio"] for i in ("hear", "see", "plain")], "A speaks, B doesn't"
        z.extract(speech[0], tmp_path / "unzipped")
    samples, rate = soundfile.read(tmp_path / "unzipped" / speech[0])
    assert rate == 24_000 and samples.size > 0

    other = Client(url, verbose=False, download_files=str(tmp_path / "other"))
    table, _progress, status, _ = other.predict(handle_file(archive), api_name="/evaluate_import")
    assert rows_of(table)["hear"][7] == "A better" and "Imported 4 rows" in status
    other.predict("see", "tie", "close call", api_name="/evaluate_rate")
    again = other.predict(api_name="/evaluate_export")[1]
    records = {r["id"]: r for r in map(json.loads, Path(again).read_text(encoding="utf-8").splitlines())}
    assert records["see"]["rating"] == "tie" and records["hear"]["comment"] == "clearer"
    assert records["hear"]["answer_a"]["audio"] == from_jsonl["hear"]["answer_a"]["audio"], "the speech came along"


def test_a_chat_turn_sent_during_a_run_is_answered_before_the_run_ends(app, tmp_path):
    url, engine = app
    sheet = tmp_path / "long.csv"
    sheet.write_text("id,prompt\n" + "".join(f"r{i},Count to ten. ({i})\n" for i in range(4)), encoding="utf-8")
    # The run's second row waits until a chat turn has reached the engine (20 s at most): if the run held the
    # model queue for all its rows, the chat could never get there and would be answered after the run.
    engine.release = lambda: any(r.turns[-1].text == "Hi" for r in engine.requests)
    evaluator = Client(url, verbose=False, download_files=str(tmp_path / "e"))
    chatter = Client(url, verbose=False, download_files=str(tmp_path / "c"))
    run_job = evaluator.submit([handle_file(str(sheet))], **{**SET_A, "use_b": False}, api_name="/evaluate")
    for outputs in run_job:
        if any(row[3] for row in outputs[0]["data"]):
            break  # the first row is answered: the run is under way
    chatter.predict({"text": "Hi", "files": []}, temperature=0, max_tokens=4, api_name="/chat")
    answered_during_the_run = not run_job.done()
    run_job.result(timeout=300)
    order = [r.turns[-1].text for r in engine.requests]
    assert answered_during_the_run and order.index("Hi") == 2, order
