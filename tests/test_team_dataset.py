"""A team study's dataset export read back with ``datasets``, as its users will: a study answered by the tiny engine
(one set-up speaking), voted on by two raters, exported, and ``dataset.zip`` unpacked and loaded with
``load_dataset(folder, "answers")`` and ``"votes"``: the rows, the audio column typed ``Audio`` holding the stored
WAV byte for byte, every setting, the votes joined to their answers; and a study without speech or votes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
import yaml
from datasets import Audio, load_dataset

from studies import Study, StudyPrompt, StudyStore
from studies.generation import Generator
from studies.ranking import leaderboard
from tests.test_studies import short_request
from ui.evaluate.team_export import write_exports

SETUPS = [("Warm Ethan", {"speaker": "ethan", "temperature": 0.7, "seed": 1, "speech": True}),
          ("Cold | Chelsie", {"speaker": "chelsie", "temperature": 0.0, "speech": False}),  # "|": a table cell
          ("Pirate", {"speaker": "aiden", "system_prompt": "Talk like a pirate.", "speech": False})]


def answered(store: StudyStore, setups, prompts: list[StudyPrompt], engine) -> Study:
    """A study whose answers the tiny engine made, as the app's background task makes them."""
    made = store.create_study("Voices: round 1", setups, prompts, created_by="lead", app_version="abc123")
    generator = Generator(store, {"app": engine}, short_request)

    async def work():
        generator.wake()
        await generator.idle()
        await generator.close()

    asyncio.run(work())
    return store.study(made.id)


def exported(store: StudyStore, study: Study, folder: Path) -> Path:
    """Export the study into ``folder/export`` and unpack the dataset.zip it offers; the dataset folder."""
    files = {Path(p).name: Path(p) for p in write_exports(store, study, leaderboard(len(study.setups),
                                                                                  store.votes(study.id)),
                                                          folder / "export")}
    with zipfile.ZipFile(files["dataset.zip"]) as archive:
        archive.extractall(folder / "unpacked")
        (name,) = {Path(n).parts[0] for n in archive.namelist()}
    return folder / "unpacked" / name


@pytest.fixture(scope="module")
def study(tmp_path_factory, instruct_backend, speech_path):
    """Five prompts (one with speech attached, one a row that can't be answered) by three set-ups, every pair judged by
    two raters; (store, study, dataset folder)."""
    root = tmp_path_factory.mktemp("dataset")
    store = StudyStore(root / "studies")
    prompts = [StudyPrompt(0, "hear", "What is said?", (store.keep_media(str(speech_path), "speech.wav"),),
                           reference="a question")]
    prompts += [StudyPrompt(k, f"p{k}", f"Question {k}?") for k in range(1, 4)]
    prompts.append(StudyPrompt(4, "bad", "", problem="missing file: gone.wav"))  # kept, never answered
    made = answered(store, SETUPS, prompts, instruct_backend)
    assert len(store.answers(made.id)) == 12
    choices = iter(["A", "B", "tie", "both_bad"] * 20)
    for rater in ("ana", "bo"):
        while (pair := store.next_pair(made.id, rater)) is not None:
            store.vote(pair.id, rater, next(choices), "A was cut short" if rater == "bo" else "")
    return store, made, exported(store, made, root)


def load(folder: Path, config: str) -> datasets.Dataset:
    return load_dataset(str(folder), config, cache_dir=str(folder.parent.parent / "cache"))["train"]


def test_answers_load_with_their_speech_as_an_audio_column(study):
    store, made, folder = study
    answers = load(folder, "answers")
    stored = store.answers(made.id)
    assert answers.num_rows == len(stored) == 12
    assert isinstance(answers.features["audio"], Audio)
    assert answers.features["media_sha256"] == datasets.List(datasets.Value("string"))
    rows = answers.cast_column("audio", Audio(decode=False))  # decoding would need torchcodec, which isn't locked
    spoken = 0
    for row, ((prompt_at, setup_at), answer) in zip(rows, sorted(stored.items())):
        prompt, setup = made.prompts[prompt_at], made.setups[setup_at]
        assert (row["prompt_id"], row["setup"], row["text"]) == (prompt.id, setup.label, answer.text)
        assert json.loads(row["settings"]) == dict(setup.settings)
        assert (row["model"], row["backend"]) == (setup.engine["model"], "transformers")
        assert row["audio_sha256"] == answer.audio_sha256 and row["first_token_s"] == answer.first_token_s
        if answer.audio is None:
            assert row["audio"] is None
            continue
        spoken += 1
        assert hashlib.sha256(row["audio"]["bytes"]).hexdigest() == answer.audio_sha256
        assert row["audio"]["path"].endswith(".wav") and "Warm_Ethan" in row["audio"]["path"]
        heard, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]))
        kept, kept_rate = soundfile.read(store.file(answer.audio))
        assert rate == kept_rate == 24_000 and np.array_equal(heard, kept) and len(heard) > 0
    assert spoken >= 2 and {r["setup"] for r in rows if r["audio"]} == {"Warm Ethan"}
    heard_row = next(r for r in rows if r["prompt_id"] == "hear")
    assert heard_row["media"] == ["speech.wav"] and heard_row["reference"] == "a question"
    assert heard_row["media_sha256"] == [made.prompts[0].media[0].sha256]


def test_votes_load_one_row_per_vote_and_join_their_answers(study):
    store, made, folder = study
    votes, answers = load(folder, "votes"), load(folder, "answers").cast_column("audio", Audio(decode=False))
    stored = store.votes(made.id)
    assert votes.num_rows == len(stored) == 2 * 4 * 3  # two raters, every pair of the four answered prompts
    by_answer = {(a["prompt_id"], a["setup"]): a for a in answers}
    labels = [s.label for s in made.setups]
    for row, vote in zip(votes, stored):
        assert (row["vote"], row["pair_id"], row["rater"], row["choice"]) == (vote.seq, vote.pair_id, vote.rater,
                                                                           vote.choice)
        assert row["voted_at"] == datetime.fromtimestamp(int(vote.voted_at), timezone.utc)
        assert (row["setup_a"], row["setup_b"]) == (labels[vote.left], labels[vote.right])
        assert json.loads(row["settings_a"]) == dict(made.setups[vote.left].settings)
        for side in ("a", "b"):
            answer = by_answer[row["prompt_id"], row[f"setup_{side}"]]
            assert row[f"answer_{side}"] == answer["text"] and row[f"audio_{side}_sha256"] == answer["audio_sha256"]
        assert (row["study_id"], row["study_name"], row["app_version"]) == (made.id, made.name, "abc123")
    assert {r["comment"] for r in votes} == {"", "A was cut short"}


def test_the_features_are_stored_as_datasets_itself_writes_them(study):
    """The schema's metadata is what ``datasets.Features.arrow_schema`` would write for these columns, so nothing
    depends on ``datasets`` falling back to guessing from Arrow types."""
    _store, _made, folder = study
    for name in ("answers", "votes"):
        schema = pq.read_schema(folder / f"{name}.parquet")
        ours = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
        features = datasets.Features.from_arrow_schema(schema)
        assert ours == features.to_dict()
        assert json.loads(features.arrow_schema.metadata[b"huggingface"])["info"]["features"] == ours
        assert features.arrow_schema.remove_metadata() == schema.remove_metadata()


def test_the_card_declares_the_configs_and_both_zips_hold_the_same_folder(study):
    _store, made, folder = study
    card = (folder / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["pretty_name"] == made.name
    assert header["configs"] == [{"config_name": "answers", "data_files": "answers.parquet"},
                                 {"config_name": "votes", "data_files": "votes.parquet"}]
    assert "| Cold \\| Chelsie |" in card and "24 votes by 2 raters" in card
    assert folder.name == "Voices__round_1-dataset"
    export = folder.parent.parent / "export"
    with zipfile.ZipFile(export / "study.zip") as whole, zipfile.ZipFile(export / "dataset.zip") as alone:
        assert sorted(n for n in whole.namelist() if n.startswith(folder.name)) == sorted(alone.namelist())
        for name in alone.namelist():
            assert whole.read(name) == alone.read(name) == (folder.parent / name).read_bytes()


def test_a_study_without_speech_or_votes_exports_what_it_has(tmp_path, instruct_backend):
    """Text-only set-ups: the audio column is there, typed, and empty. No votes yet: no votes config (``datasets``
    can't load an empty split), and the card says so; the first vote brings it."""
    store = StudyStore(tmp_path / "studies")
    made = answered(store, [("plain", {"speaker": "ethan"}), ("greedy", {"temperature": 0.0})],
                    [StudyPrompt(0, "a", "Hi?"), StudyPrompt(1, "b", "Hello?")], instruct_backend)
    folder = exported(store, made, tmp_path / "before")
    answers = load(folder, "answers")
    assert answers.num_rows == 4 and isinstance(answers.features["audio"], Audio)
    assert answers["audio"] == [None] * 4 and answers["audio_sha256"] == [None] * 4
    assert "No votes yet" in (folder / "README.md").read_text(encoding="utf-8")
    assert not (folder / "votes.parquet").exists()
    with pytest.raises(ValueError, match="votes"):
        load(folder, "votes")
    pair = store.next_pair(made.id, "ana")
    store.vote(pair.id, "ana", "tie")
    votes = load(exported(store, made, tmp_path / "after"), "votes")
    assert votes.num_rows == 1 and votes[0]["choice"] == "tie" and votes[0]["audio_a_sha256"] is None
