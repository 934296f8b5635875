"""The Evaluate tab against bad input (issue 32): zip bombs in an import, sheets too long or crafted, rows whose
speech files would collide, imported set-ups beyond the tab's bounds, resuming a run, a failed import's folder,
an unreadable medium in the export; and a fuzz of a few hundred bad sheets and exports.

Memory is measured with tracemalloc (``tests.test_upload_limits.peak_growth``): through the API it counts the
server's threads, which run in this process, and the client's. Each bound is far below what the file holds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile
from gradio_client import Client, handle_file

from tests.test_app import launch
from tests.test_evaluate import SET_A, Recording, rows_of, run
from tests.test_upload_limits import MB, peak_growth
from ui import scratch
from ui.evaluate import importing, sheet
from ui.evaluate.importing import ResultsError, import_run
from ui.evaluate.results import Answer, EvalRow, EvalRun, export_records, write_exports
from ui.evaluate.setup import RANGES, Setup
from ui.evaluate.sheet import MAX_ROWS, Prompt, SheetError, parse_sheet, read_prompts

FAST = {**SET_A, "speech_a": False, "max_tokens_a": 4}


@pytest.fixture(scope="module")
def app(instruct_backend):
    recording = Recording(instruct_backend)
    demo = launch(recording)
    yield demo, recording
    demo.close()


def client_of(app, tmp_path, name="c") -> Client:
    return Client(app[0].local_url, verbose=False, download_files=str(tmp_path / name))


def export_record(row_id="r1", answered=True, **changes) -> dict:
    """One line of results.jsonl as the tab writes it (set-up A alone, no speech)."""
    record = {"id": row_id, "prompt": f"Say {row_id}.", "media": [], "media_sha256": [], "system_prompt": "",
              "reference": "", "problem": "", "rating": "", "comment": "",
              "setup_a": asdict(Setup(speaker="ethan", max_new_tokens=4, speech=False)), "setup_b": None,
              "app_version": "test", "model_a": "tiny", "backend_a": "transformers", "model_b": None,
              "backend_b": None, "answer_a": {"text": "hi", "audio": None, "first_token_s": 0.1,
                                              "first_audio_s": None, "tokens_per_s": 9.0, "error": "",
                                              "finish_reason": "stop"} if answered else None, "answer_b": None}
    return {**record, **changes}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def results_zip(path: Path, records: list[dict], members: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        for name, data in (members or {}).items():
            out.writestr(name, data)
    return path


def wav_bytes(seconds: float = 0.2, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    samples = np.random.default_rng(seed).uniform(-0.5, 0.5, int(24_000 * seconds)).astype(np.float32)
    soundfile.write(buffer, samples, 24_000, format="WAV")
    return buffer.getvalue()


def eval_folders() -> set[str]:
    return {name for name in os.listdir(scratch.process_folder()) if name.startswith("omni-eval-")}


# 1. Zip bombs and oversized files in an import ------------------------------------------------------------------

@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """0.2 MB that unpacks to a 100 MB results.jsonl of valid rows and a 100 MB WAV (the issue's, at a quarter)."""
    path = tmp_path_factory.mktemp("bomb") / "results.zip"
    line = (json.dumps(export_record()) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        with out.open("results.jsonl", "w") as jsonl:
            block = line * (MB // len(line))
            for _ in range(100):
                jsonl.write(block)
        with out.open("audio/0001-r1-A.wav", "w") as wav:
            wav.write(wav_bytes(0.01)[:44])
            zeros = bytes(MB)
            for _ in range(100):
                wav.write(zeros)
    return path


def test_a_results_zip_bomb_is_refused_from_its_headers_with_nothing_read_or_left(bomb, tmp_path):
    assert bomb.stat().st_size < MB
    folder = tmp_path / "import"
    with peak_growth() as peak, pytest.raises(ResultsError) as refused:
        import_run(str(bomb), folder)
    assert "results.zip: " in str(refused.value) and "zip bomb" in str(refused.value)
    assert peak[0] < 4 * MB, f"{peak[0] / MB:.0f} MB allocated to refuse it"
    assert not folder.exists(), "nothing written, and the import's folder is gone"


def test_results_jsonl_and_each_wav_are_read_within_their_caps(tmp_path, monkeypatch):
    """Not bombs by their ratio, but larger than an export holds: refused by name as they stream."""
    monkeypatch.setattr(importing, "RESULTS_MAX_BYTES", 100_000)
    rows = [export_record(f"r{i}", prompt="x" * 1000) for i in range(200)]  # 250 kB
    with pytest.raises(ResultsError, match=r"results.jsonl unpacks to 0.3 MB; the limit for it is 0.1 MB"):
        import_run(str(results_zip(tmp_path / "big.zip", rows)), tmp_path / "a")
    with pytest.raises(ResultsError, match=r"big.jsonl: more than 0 MB of results"):
        import_run(str(write_jsonl(tmp_path / "big.jsonl", rows)), tmp_path / "b")
    monkeypatch.setattr(importing, "SPEECH_MAX_BYTES", 20_000)
    spoken = [export_record("r1", answer_a={"text": "hi", "audio": "audio/0001-r1-A.wav"})]
    with pytest.raises(ResultsError, match=r"audio/0001-r1-A.wav unpacks to 0.0 MB; the limit for it is 0.0 MB"):
        import_run(str(results_zip(tmp_path / "wav.zip", spoken, {"audio/0001-r1-A.wav": wav_bytes(1)})),
                   tmp_path / "c")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_a_bare_jsonl_is_read_line_by_line_within_its_caps(tmp_path):
    """One 30 MB line: before, read whole (and parsed); now refused at the row's cap, holding little."""
    path = tmp_path / "results.jsonl"
    with path.open("w") as out:
        out.write('{"id": "r1", "setup_a": {}, "prompt": "' + "x" * (30 * 10**6) + '"}\n')
    with peak_growth() as peak, pytest.raises(ResultsError, match="results.jsonl, row 1: the row is longer than 4 MB"):
        import_run(str(path), tmp_path / "import")
    assert peak[0] < 12 * MB, f"{peak[0] / MB:.0f} MB allocated"


def test_the_import_endpoint_refuses_the_bomb_by_name_with_little_memory(app, bomb, tmp_path):
    client = client_of(app, tmp_path)
    before = eval_folders()
    with peak_growth() as peak, pytest.raises(Exception) as refused:
        client.predict(handle_file(str(bomb)), api_name="/evaluate_import")
    assert "Can't import it: results.zip: results.jsonl unpacks to" in str(refused.value)
    assert "zip bomb" in str(refused.value)
    assert peak[0] < 24 * MB, f"{peak[0] / MB:.0f} MB allocated in the server and client"
    assert eval_folders() == before, "a refused import leaves no folder"
    table, _, status, _ = client.predict(handle_file(str(write_jsonl(tmp_path / "ok.jsonl", [export_record()]))),
                                         api_name="/evaluate_import")
    assert "Imported 1 rows" in status and rows_of(table)["r1"][3] == "hi", "the next import is answered"


# 2. A sheet is streamed and stops at MAX_ROWS + 1 rows -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lines(tmp_path_factory) -> Path:
    """16.8 MB of tiny JSONL rows (1.1 million): the issue's sheet."""
    path = tmp_path_factory.mktemp("sheet") / "tiny.jsonl"
    path.write_bytes(b'{"prompt":"a"}\n' * 1_120_000)
    return path


def test_a_sheet_of_a_million_tiny_rows_is_refused_after_the_first_2001(tiny_lines, tmp_path):
    with peak_growth() as peak, pytest.raises(SheetError) as refused:
        read_prompts([str(tiny_lines)], tmp_path)
    assert str(refused.value) == "tiny.jsonl: more than 2000 rows; at most 2000 per run."
    assert peak[0] < 8 * MB, f"{peak[0] / MB:.0f} MB allocated (the file is 16.8 MB)"
    table = tmp_path / "tiny.csv"
    table.write_text("id,prompt\n" + "r,a\n" * 500_000, encoding="utf-8")
    with peak_growth() as peak, pytest.raises(SheetError, match="more than 2000 rows"):
        read_prompts([str(table)], tmp_path)
    assert peak[0] < 8 * MB, f"{peak[0] / MB:.0f} MB allocated for the CSV"


def test_a_sheet_past_its_byte_bound_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(sheet, "MAX_SHEET_BYTES", 2 * 10**6)
    path = tmp_path / "wide.jsonl"
    path.write_text("".join(json.dumps({"prompt": "p" * 90_000}) + "\n" for _ in range(30)), encoding="utf-8")
    with pytest.raises(SheetError, match="wide.jsonl: more than 2 MB; a sheet holds at most 2 MB"):
        parse_sheet(str(path))


def test_the_evaluate_endpoint_refuses_the_long_sheet_with_little_memory(app, tiny_lines, tmp_path):
    client = client_of(app, tmp_path)
    with peak_growth() as peak, pytest.raises(Exception) as refused:
        run(client, [str(tiny_lines)])
    assert "tiny.jsonl: more than 2000 rows" in str(refused.value)
    assert peak[0] < 48 * MB, f"{peak[0] / MB:.0f} MB allocated in the server and client (the file is 16.8 MB)"


# 4. Crafted rows are marked, and a sheet that can't be read keeps the previous run -------------------------------

def test_crafted_rows_are_marked_with_their_number_and_the_rest_kept(tmp_path):
    jsonl = tmp_path / "crafted.jsonl"
    jsonl.write_text('{"id": "ok", "prompt": "Hi"}\n' + "[" * 100_000 + "\n"
                     + '{"id": "five", "prompt": "Hi", "media": 5}\n' + '{"id": {"a": 1}, "prompt": "Hi"}\n'
                     + '{"id": "later", "prompt": "Still here"}\n', encoding="utf-8")
    rows = {p.row: p for p in parse_sheet(str(jsonl))}
    assert rows[1].problem == "" and rows[5].text == "Still here" and rows[5].problem == ""
    assert rows[2].problem == "not a JSON object (nested too deeply)"
    assert rows[3].problem == "'media' must be a list of file names" and rows[3].id == "five"
    assert rows[4].problem == "'id' must be text or a number"
    table = tmp_path / "crafted.csv"
    table.write_text('id,prompt\nok,Hi\nhuge,"' + "x" * 140_000 + '"\nlong,"' + "y" * 100_001 + '"\nlast,Bye\n',
                     encoding="utf-8")
    rows = {p.row: p for p in parse_sheet(str(table))}
    assert rows[2].problem == "" and rows[5].problem == "" and rows[5].text == "Bye"
    assert rows[3].problem == "a value is longer than 100000 characters"
    assert rows[4].problem == "'prompt' is longer than 100000 characters"


def test_a_sheet_that_cant_be_read_keeps_the_previous_run(app, tmp_path):
    client = client_of(app, tmp_path)
    good = tmp_path / "good.csv"
    good.write_text("id,prompt\nfirst,Say hi.\n", encoding="utf-8")
    table, *_ = run(client, [str(good)], **FAST)
    answer = rows_of(table)["first"][3]
    broken = tmp_path / "broken.csv"
    broken.write_text("question\nwhat?\n", encoding="utf-8")
    for files in ([str(broken)], [str(good), str(broken)]):
        with pytest.raises(Exception, match="broken.csv: the first line must name the columns|got 2"):
            run(client, files, **FAST)
    exported = client.predict(api_name="/evaluate_export")[1]
    records = [json.loads(line) for line in Path(exported).read_text(encoding="utf-8").splitlines()]
    assert [(r["id"], r["answer_a"]["text"]) for r in records] == [("first", answer)]


# 5. Each row's speech has a file of its own ----------------------------------------------------------------------

def test_rows_whose_ids_map_to_one_file_name_keep_their_own_speech_through_export_and_import(app, tmp_path):
    client = client_of(app, tmp_path)
    sheet_path = tmp_path / "ids.csv"
    sheet_path.write_text("id,prompt\nq 1,Say one.\nq_1,Say two.\nq?1,Say three.\nq 1,Say four.\n", encoding="utf-8")
    table, _, status, _ = run(client, [str(sheet_path)], **{**SET_A, "max_tokens_a": 8})
    assert set(rows_of(table)) == {"q 1", "q_1", "q?1", "q 1#5"}
    assert "Rows 5 repeat an earlier row's id, so each is named id#row." in status
    archive = client.predict(api_name="/evaluate_export")[2]
    with zipfile.ZipFile(archive) as z:
        names = [n for n in z.namelist() if n.startswith("audio/")]
        first = {r["id"]: z.read(r["answer_a"]["audio"]) for r in map(json.loads, z.read("results.jsonl").splitlines())
                 if r["answer_a"]["audio"]}
    assert len(names) == len(set(names)) == len(first) == 4, names
    other = client_of(app, tmp_path, "other")
    other.predict(handle_file(archive), api_name="/evaluate_import")
    with zipfile.ZipFile(other.predict(api_name="/evaluate_export")[2]) as z:
        again = {r["id"]: z.read(r["answer_a"]["audio"]) for r in map(json.loads, z.read("results.jsonl").splitlines())}
    assert again == first, "every row came back with its own speech"


def test_speech_that_two_rows_name_goes_to_neither(tmp_path):
    records = [export_record(i, answer_a={"text": i, "audio": "audio/x-A.wav"}) for i in ("q 1", "q_1")]
    imported = import_run(str(results_zip(tmp_path / "old.zip", records, {"audio/x-A.wav": wav_bytes()})),
                          tmp_path / "run")
    assert [row.a.audio for row in imported.rows] == [None, None]
    assert [str(n) for n in imported.notes] == ["Speech left out: audio/x-A.wav belong to more than one answer."]


# 6. Imported set-ups are held to the tab's own bounds ------------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    ({"max_new_tokens": 1e9}, "setup_a.max_new_tokens is 1000000000.0; the Evaluate tab takes 1 to 8192"),
    ({"temperature": 100}, "setup_a.temperature is 100; the Evaluate tab takes 0 to 2"),
    ({"top_k": 2.5}, "setup_a.top_k is 2.5, not a whole number"),
    ({"seed": 2**40}, "setup_a.seed is 1099511627776; the Evaluate tab takes 0 to 4294967295"),
    ({"speech": "yes"}, 'setup_a.speech is "yes", not true or false'),
    ({"engine": "other"}, 'setup_a.engine is "other"; it takes one of: app, compare'),
    ({"system_prompt": ["a"]}, 'setup_a.system_prompt is ["a"], not text'),
])
def test_an_imported_setup_beyond_the_tabs_bounds_is_refused_naming_file_row_and_field(tmp_path, change, message):
    setup = {**export_record()["setup_a"], **change}
    with pytest.raises(ResultsError) as refused:
        import_run(str(write_jsonl(tmp_path / "r.jsonl", [export_record(setup_a=setup)])), tmp_path / "run")
    assert str(refused.value) == f"r.jsonl, row 1: {message}"
    assert not (tmp_path / "run").exists()


def test_a_setup_or_row_of_the_wrong_kind_is_refused_by_name(tmp_path):
    cases = [(export_record(setup_a="fast"), 'row 1: setup_a is "fast", not a JSON object'),
             (export_record(setup_b=[1]), "row 1: setup_b is [1], not a JSON object"),
             (export_record(media=5), "row 1: media is 5, not a list of file names"),
             (export_record(rating="great"), 'row 1: rating is "great"; it takes one of: good, wrong'),
             (export_record(answer_a={"text": 5}), "row 1: answer_a.text is 5, not text"),
             (export_record(answer_a={"audio": "audio/../../x.wav"}), 'answer_a.audio is "audio/../../x.wav", not a'),
             ([1, 2], "not an Evaluate export (row 1 is not a JSON object with id and setup_a)")]
    for record, message in cases:
        with pytest.raises(ResultsError) as refused:
            import_run(str(write_jsonl(tmp_path / "r.jsonl", [record])), tmp_path / "run")
        assert message in str(refused.value)


def test_the_tabs_controls_take_their_bounds_from_the_same_table(app):
    components = {c["props"].get("elem_id"): c["props"] for c in app[0].config["components"]}
    for name, bounds in RANGES.items():
        for side in "ab":
            props = components[f"eval-{name}-{side}"]
            assert (props["minimum"], props["maximum"]) == ((-1 if name == "seed" else bounds.low), bounds.high)


def test_through_the_api_an_out_of_bounds_import_is_refused_and_an_engine_not_here_is_said(app, tmp_path):
    client = client_of(app, tmp_path)
    huge = {**export_record()["setup_a"], "max_new_tokens": 10**9}
    with pytest.raises(Exception, match="r.jsonl, row 1: setup_a.max_new_tokens is 1000000000; the Evaluate tab"):
        client.predict(handle_file(str(write_jsonl(tmp_path / "r.jsonl", [export_record(setup_a=huge)]))),
                       api_name="/evaluate_import")
    elsewhere = {**export_record()["setup_a"], "engine": "compare"}
    path = write_jsonl(tmp_path / "c.jsonl", [export_record(setup_a=elsewhere), export_record("r2", False, setup_a=elsewhere)])
    table, _, status, _ = client.predict(handle_file(str(path)), api_name="/evaluate_import")
    assert "Set-up A answers with the engine 'compare', which this server doesn't run." in status
    with pytest.raises(Exception, match="which this server doesn't run. 🗑 New run starts anew"):
        run(client, [], **FAST)
    table = client.predict("r1", None, "fine", api_name="/evaluate_rate")  # rating still works
    assert rows_of(table)["r1"][3] == "hi"


# 7. Resuming: the run's own set-ups, a new sheet starts anew, files added later are found --------------------------

def test_run_goes_on_with_the_runs_own_setups_and_says_the_shown_ones_differ(app, tmp_path):
    demo, engine = app
    client = client_of(app, tmp_path)
    client.predict(handle_file(str(write_jsonl(tmp_path / "r.jsonl", [export_record(), export_record("r2", False)]))),
                   api_name="/evaluate_import")
    asked = len(engine.requests)
    table, _, status, _ = run(client, [], **{**FAST, "temperature_a": 1.5})
    assert "Resuming: 1 rows left, with the run's own set-ups (the ones shown now differ: A.temperature" in status
    assert [r.turns[-1].text for r in engine.requests[asked:]] == ["Say r2."]
    assert engine.requests[-1].sampling.temperature == Setup().temperature
    assert rows_of(table)["r1"][3] == "hi" and rows_of(table)["r2"][3]


def test_a_different_sheet_starts_a_new_run_while_rows_are_left(app, tmp_path):
    client = client_of(app, tmp_path)
    client.predict(handle_file(str(write_jsonl(tmp_path / "r.jsonl", [export_record("old", False)]))),
                   api_name="/evaluate_import")
    new = tmp_path / "new.csv"
    new.write_text("id,prompt\nfresh,Say hi.\n", encoding="utf-8")
    table, _, status, _ = run(client, [str(new)], **FAST)
    assert set(rows_of(table)) == {"fresh"}
    assert "A different sheet starts a new run: the previous one's 1 rows not answered are dropped." in status


def test_a_row_whose_file_was_missing_is_answered_once_the_file_is_added(app, tmp_path, speech_path):
    demo, engine = app
    client = client_of(app, tmp_path)
    path = tmp_path / "set.csv"
    path.write_text("id,prompt,media\nplain,Say hi.,\nlost,What is said?,speech.wav\n", encoding="utf-8")
    table, *_ = run(client, [str(path)], **FAST)
    assert "missing file: speech.wav" in rows_of(table)["lost"][8]
    asked = len(engine.requests)
    table, _, status, _ = run(client, [str(path), str(speech_path)], **FAST)
    assert [r.turns[-1].text for r in engine.requests[asked:]] == ["What is said?"], "only the row left is asked"
    assert rows_of(table)["lost"][3] and rows_of(table)["lost"][8].startswith("✓")
    assert "Resuming: 1 rows left" in status


# 8. and 9. A failed import leaves nothing; the export names a file it couldn't read ------------------------------

def test_an_import_that_fails_part_way_removes_what_it_unpacked(tmp_path, monkeypatch):
    monkeypatch.setattr(importing, "SPEECH_MAX_BYTES", 30_000)
    records = [export_record("r1", answer_a={"text": "a", "audio": "audio/1.wav"}),
               export_record("r2", answer_a={"text": "b", "audio": "audio/2.wav"})]
    path = results_zip(tmp_path / "half.zip", records, {"audio/1.wav": wav_bytes(0.2), "audio/2.wav": wav_bytes(1)})
    with pytest.raises(ResultsError, match="audio/2.wav unpacks to"):
        import_run(str(path), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_export_names_a_medium_it_couldnt_read(tmp_path, speech_path):
    gone = tmp_path / "gone.wav"
    gone.write_bytes(speech_path.read_bytes())
    prompt = Prompt(2, "r1", "Hi", ("speech.wav", "gone.wav"), paths=(str(speech_path), str(gone)))
    gone.unlink()
    exported = EvalRun(rows=[EvalRow(prompt, Answer("hi"))], folder=str(tmp_path))
    record = export_records(exported)[0]
    assert record["media_sha256"][1] is None and len(record["media_sha256"][0]) == 64
    assert record["media_unreadable"] == ["gone.wav (can't be read: FileNotFoundError)"]
    table = write_exports(exported, tmp_path / "out")[0]
    with open(table, encoding="utf-8") as f:
        assert next(csv.DictReader(f))["media_unreadable"] == "gone.wav (can't be read: FileNotFoundError)"


# Fuzz: a few hundred bad sheets and exports, each read or refused by name ----------------------------------------

def _bad_sheet(rng: random.Random, folder: Path, number: int) -> Path:
    values = [5, -1.5, True, None, [], ["a", 3], {"x": 1}, "x" * 100_001, "\u2028", "..", "../../etc/passwd",
              "q 1", "q?1", "", float("nan")]
    kind = rng.choice(["jsonl", "csv"])
    path = folder / f"sheet-{number}.{kind}"
    lines: list[bytes] = []
    for row in range(rng.randint(0, 6)):
        shape = rng.randrange(8)
        record = {"id": rng.choice(values + [f"r{row}"]), "prompt": rng.choice(values + ["Hi"]),
                  "media": rng.choice(values)}
        if kind == "jsonl":
            lines.append([json.dumps(record).encode(), b"[" * rng.randint(1, 50_000), b"\xff\xfe{",
                          b'{"prompt": 1' + b"0" * 5000 + b"}", b"null", b"", b'"just text"',
                          json.dumps(record).encode() * 2][shape])
        else:
            cells = ['"' + "z" * 140_000 + '"', '"open', "a\x00b", str(record["prompt"])[:200], "\xff"]
            lines.append(",".join([str(record["id"])[:50], rng.choice(cells), "x.wav"]).encode("utf-8", "replace"))
    header = rng.choice([b"id,prompt,media", b"prompt", b"nothing", b"\xef\xbb\xbfid,text", b""])
    body = b"\n".join(([header] if kind == "csv" else []) + lines)
    if rng.random() < 0.05:
        body = b'{"prompt": "a"}\n' * (MAX_ROWS + 1)
    path.write_bytes(body)
    return path


def _bad_export(rng: random.Random, folder: Path, number: int) -> Path:
    record = export_record(f"r{number}", rng.random() < 0.5)
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(list(record) + ["setup_a.temperature", "setup_a.max_new_tokens", "setup_a.seed"])
        value = rng.choice([None, 1e9, -1, "x", [1], {}, True, float("inf"), "audio/../x.wav", "audio/a.wav", 2**70])
        if key.startswith("setup_a.") and isinstance(record["setup_a"], dict):
            record["setup_a"] = {**record["setup_a"], key[8:]: value}
        elif key.startswith("setup_a."):
            continue
        else:
            record[key] = value
    if rng.random() < 0.3:
        record["answer_a"] = {"text": "t", "audio": rng.choice(["audio/a.wav", "audio/../../a.wav", "/abs.wav"])}
    suffix = rng.choice(["zip", "zip", "jsonl"])
    path = folder / f"export-{number}.{suffix}"
    text = json.dumps(record, allow_nan=True) + "\n"
    if suffix == "jsonl":
        path.write_text(rng.choice([text, text * 2, "[" * 30_000, "not json", ""]), encoding="utf-8")
        return path
    choice = rng.randrange(6)
    if choice == 0:
        path.write_bytes(rng.randbytes(rng.randint(0, 3000)))  # not a zip
        return path
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        if choice != 1:
            out.writestr("results.jsonl", text)
        members = {"audio/a.wav": wav_bytes(0.05), "../evil.wav": b"RIFF", "/abs.wav": b"x", "audio/a.wav ": b"x"}
        for name in rng.sample(list(members), rng.randint(0, 4)):
            out.writestr(name, members[name])
        if choice == 2:
            out.writestr("audio/a.wav", b"duplicate")
        if choice == 3:
            out.writestr("audio/bomb.wav", bytes(3 * 10**6))
    if choice == 4:  # damage the packed data
        data = bytearray(path.read_bytes())
        data[40:60] = rng.randbytes(20)
        path.write_bytes(bytes(data))
    return path


def _bad_media_zip(rng: random.Random, folder: Path, number: int) -> Path:
    path = folder / f"media-{number}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for name in rng.sample(["../evil.wav", "/abs.wav", "a/../../up.wav", "x.wav", "x.wav", ".hidden", "bomb.wav"],
                               rng.randint(1, 4)):
            out.writestr(name, bytes(3 * 10**6) if name == "bomb.wav" else b"RIFF")
    return path


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_a_fuzz_of_bad_sheets_and_exports_gets_a_result_or_a_named_refusal(tmp_path, speech_path):
    rng = random.Random(32)
    inputs, sessions = tmp_path / "inputs", tmp_path / "sessions"
    inputs.mkdir()
    refused = 0
    for number in range(200):
        files = [_bad_sheet(rng, inputs, number), speech_path]
        if rng.random() < 0.3:
            files.append(_bad_media_zip(rng, inputs, number))
        work = sessions / f"sheet-{number}"
        try:
            prompts = read_prompts([str(f) for f in files], work)
        except SheetError as err:
            refused += 1
            assert str(err).startswith(tuple(f.name for f in files)), str(err)
            assert not _files_under(sessions / f"sheet-{number}"), "a refused zip leaves nothing unpacked"
        else:
            assert prompts and len({p.id for p in prompts}) == len(prompts), "every row has an id of its own"
            assert all(p.problem or p.text or p.media for p in prompts)
    for number in range(200):
        path = _bad_export(rng, inputs, number)
        folder = sessions / f"run-{number}"
        try:
            imported = import_run(str(path), folder)
        except ResultsError as err:
            refused += 1
            assert str(err).startswith(path.name), str(err)
            assert not folder.exists(), "a refused import leaves no folder"
        else:
            assert imported.rows
            assert {str(p) for p in _files_under(folder)} == {row.a.audio for row in imported.rows
                                                             if row.a and row.a.audio}
    assert 100 < refused < 400, f"{refused} of 400 refused: the fuzz makes good inputs too"
    outside = _files_under(tmp_path) - _files_under(inputs) - _files_under(sessions)
    assert not outside and not (tmp_path / "evil.wav").exists() and not Path("/abs.wav").exists()
    good = write_jsonl(tmp_path / "good.jsonl", [export_record()])
    assert import_run(str(good), sessions / "after").rows[0].a.text == "hi", "the next call is answered"
    assert parse_sheet(str(write_jsonl(tmp_path / "good-sheet.jsonl", [{"prompt": "Hi"}])))[0].text == "Hi"
