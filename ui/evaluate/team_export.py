"""A study's exports: the vote log and the leaderboard as CSV and JSONL, the whole study as a zip, and a dataset.

Like the Evaluate tab's export (``ui.evaluate.results``), a vote's record holds what is needed to judge and
reproduce it: the prompt, its media's names and SHA-256, both answers and their speech's SHA-256, each set-up's
label and every setting, the model and backend that answered, the rater, the choice, the comment, and the app's
version. The zip adds every answer (``answers.jsonl``), their speech, the prompts' media and the dataset folder
(``ui.evaluate.team_dataset``: the answers with their speech and the votes as Parquet, for ``datasets``), which
``dataset.zip`` holds alone.
"""

from __future__ import annotations

import csv
import json
import time
import zipfile
from pathlib import Path

from studies import Study, StudyAnswer, StudyPrompt, StudySetup, StudyStore, Vote
from studies.ranking import Leaderboard
from ui.evaluate.team_dataset import write_dataset

VOTE_COLUMNS = ["vote", "pair_id", "voted_at", "rater", "prompt_id", "prompt", "media", "media_sha256", "system_prompt",
                "reference", "setup_a", "setup_b", "choice", "winner", "comment", "answer_a", "answer_b",
                "audio_a_sha256", "audio_b_sha256", "settings_a", "settings_b", "model_a", "backend_a", "model_b",
                "backend_b", "study_id", "study_name", "app_version"]
ANSWER_COLUMNS = ["prompt_id", "prompt", "media", "media_sha256", "system_prompt", "reference", "setup", "settings",
                  "model", "backend", "text", "audio", "audio_sha256", "error", "finish_reason", "first_token_s",
                  "first_audio_s", "tokens_per_s"]
BOARD_COLUMNS = ["rank", "setup", "score", "ci_low", "ci_high", "votes", "wins", "losses", "ties", "both_bad",
                 "win_rate", "win_rates", "settings", "model", "backend", "study_id", "study_votes", "raters",
                 "agreement", "krippendorff_alpha"]


def vote_records(study: Study, answers: dict[tuple[int, int], StudyAnswer], votes: list[Vote]) -> list[dict]:
    records = []
    for vote in votes:
        prompt = study.prompts[vote.prompt]
        record = {"vote": vote.seq, "pair_id": vote.pair_id, "voted_at": _time(vote.voted_at), "rater": vote.rater, "prompt_id": prompt.id,
                  "prompt": prompt.text, "media": [m.name for m in prompt.media],
                  "media_sha256": [m.sha256 for m in prompt.media], "system_prompt": prompt.system_prompt,
                  "reference": prompt.reference, "choice": vote.choice,
                  "winner": study.setups[vote.winner].label if vote.winner is not None else vote.choice,
                  "comment": vote.comment, "study_id": study.id, "study_name": study.name,
                  "app_version": study.app_version}
        for side, position in (("a", vote.left), ("b", vote.right)):
            setup, answer = study.setups[position], answers.get((vote.prompt, position))
            record[f"setup_{side}"] = setup.label
            record[f"answer_{side}"] = answer.text if answer else None
            record[f"audio_{side}_sha256"] = answer.audio_sha256 if answer else None
            record[f"settings_{side}"] = dict(setup.settings)
            record[f"model_{side}"], record[f"backend_{side}"] = setup.engine.get("model"), setup.engine.get("backend")
        records.append(record)
    return records


def board_records(study: Study, board: Leaderboard) -> list[dict]:
    labels = [s.label for s in study.setups]
    return [{"rank": rank, "setup": labels[s.setup], "score": round(s.score, 2),
             "ci_low": _round(s.low), "ci_high": _round(s.high), "votes": s.votes, "wins": s.wins,
             "losses": s.losses, "ties": s.ties, "both_bad": s.both_bad, "win_rate": _round(s.win_rate, 4),
             "win_rates": {labels[j]: _round(rate, 4) for j, rate in enumerate(board.win_rates[s.setup])
                           if j != s.setup},
             "settings": dict(study.setups[s.setup].settings), "model": study.setups[s.setup].engine.get("model"),
             "backend": study.setups[s.setup].engine.get("backend"), "study_id": study.id,
             "study_votes": board.votes, "raters": board.raters, "agreement": _round(board.agreement, 4),
             "krippendorff_alpha": _round(board.alpha, 4)}
            for rank, s in enumerate(board.standings, 1)]


def answer_records(study: Study, answers: dict[tuple[int, int], StudyAnswer]) -> list[dict]:
    records = []
    for (prompt_at, setup_at), answer in sorted(answers.items()):
        prompt, setup = study.prompts[prompt_at], study.setups[setup_at]
        records.append({"prompt_id": prompt.id, "prompt": prompt.text, "media": [m.name for m in prompt.media],
                        "media_sha256": [m.sha256 for m in prompt.media], "system_prompt": prompt.system_prompt,
                        "reference": prompt.reference, "setup": setup.label,
                        "settings": dict(setup.settings), "model": setup.engine.get("model"),
                        "backend": setup.engine.get("backend"), "text": answer.text,
                        "audio": _audio_name(prompt, setup) if answer.audio else None,
                        "audio_sha256": answer.audio_sha256, "error": answer.error,
                        "finish_reason": answer.finish_reason, "first_token_s": answer.first_token_s,
                        "first_audio_s": answer.first_audio_s, "tokens_per_s": answer.tokens_per_s})
    return records


def write_exports(store: StudyStore, study: Study, board: Leaderboard, folder: Path) -> list[str]:
    """votes.csv, votes.jsonl, leaderboard.csv, leaderboard.jsonl, study.zip (those, answers.jsonl, the speech, the
    media and the dataset folder) and dataset.zip (the dataset folder, which is left in ``folder`` too)."""
    folder.mkdir(parents=True, exist_ok=True)
    answers = store.answers(study.id)
    votes, every_answer = vote_records(study, answers, store.votes(study.id)), answer_records(study, answers)
    written = []
    for name, records, columns in (("votes", votes, VOTE_COLUMNS),
                                   ("leaderboard", board_records(study, board), BOARD_COLUMNS)):
        table, lines = folder / f"{name}.csv", folder / f"{name}.jsonl"
        _write_csv(table, records, columns)
        _write_jsonl(lines, records)
        written += [str(table), str(lines)]
    answers_file = folder / "answers.jsonl"
    _write_jsonl(answers_file, every_answer)
    speech = {_audio_name(study.prompts[prompt_at], study.setups[setup_at]): store.file(answer.audio)
              for (prompt_at, setup_at), answer in sorted(answers.items())
              if answer.audio and store.file(answer.audio).is_file()}
    dataset = folder / _dataset_name(study)
    dataset_files = write_dataset(dataset, study, every_answer, ANSWER_COLUMNS, speech, votes, VOTE_COLUMNS)
    archive = folder / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in [*map(Path, written), answers_file]:
            out.write(path, path.name)
        for name, path in speech.items():
            out.write(path, name)
        for media in {m.file: m for p in study.prompts for m in p.media}.values():
            if store.file(media.file).is_file():
                out.write(store.file(media.file), media.file)  # media/<sha256><suffix>
        _add_dataset(out, dataset, dataset_files)
    dataset_archive = folder / "dataset.zip"
    with zipfile.ZipFile(dataset_archive, "w", zipfile.ZIP_DEFLATED) as out:
        _add_dataset(out, dataset, dataset_files)
    return [*written, str(archive), str(dataset_archive)]


def _add_dataset(archive: zipfile.ZipFile, folder: Path, files: list[Path]) -> None:
    """The dataset folder under its name; Parquet is compressed already (and WAV hardly compresses), so stored."""
    for path in files:
        archive.write(path, f"{folder.name}/{path.name}",
                      zipfile.ZIP_STORED if path.suffix == ".parquet" else zipfile.ZIP_DEFLATED)


def _write_csv(path: Path, records: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        for record in records:
            writer.writerow({key: _cell(record.get(key)) for key in columns})


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _cell(value):
    """A CSV cell: lists joined by ';' (as the Evaluate export's media), objects as JSON."""
    if isinstance(value, list):
        return ";".join("" if v is None else str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return value


def _audio_name(prompt: StudyPrompt, setup: StudySetup) -> str:
    """An answer's speech in the zip: its prompt's row, id and set-up, readable (the vote is long cast). The rows'
    and set-ups' numbers keep it unique where cut or replaced characters make two ids or labels alike."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{prompt.id[:40]}-{setup.label[:40]}")
    return f"audio/{prompt.position + 1:04d}-{setup.position + 1}-{safe}.wav"


def _dataset_name(study: Study) -> str:
    """``<study-name>-dataset``, the name readable and safe in any file system (the id if nothing is left)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in study.name[:60]).strip("_") or study.id
    return f"{safe}-dataset"


def _time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)
