"""Studies, answers, pairs shown and votes in one SQLite database in the app's data folder, with their files.

The database runs in WAL mode (readers never wait for a writer) and every change is one ``BEGIN IMMEDIATE``
transaction on its own connection, so raters voting at the same moment from many threads (or several app
processes on one folder) queue for a few milliseconds and never lose or double a vote: a vote is keyed by the pair
it answers, and a pair by its rater, prompt and two set-ups. ``schema_version`` says which layout the file has; a
newer app migrates an older file on open, an older app refuses a newer file rather than misread it. What a study's
creators do once it runs (close, reopen, delete, every rater's progress) is ``studies.admin``'s part of the store.

Files sit beside the database: a prompt's media under ``media/<sha256><suffix>`` (kept, since uploads are deleted
after a day), spoken answers under ``audio/<random>.wav`` (a name that says nothing about the set-up).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from messages import Message
from studies import schedule
from studies.admin import StudyAdmin, ready_prompts
from studies.records import CHOICES, MediaFile, Pair, Study, StudyAnswer, StudyError, StudyPrompt, StudySetup, Vote

SCHEMA_VERSION = 2
DATABASE = "studies.sqlite3"
FRESH_S = 600.0
"""A pair shown and not voted on counts towards its cell this long (a rater who left doesn't hold it forever)."""
MAX_RATER_CHARS = 80
MAX_COMMENT_CHARS = 2000

_V1 = """
CREATE TABLE studies (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL, created_by TEXT NOT NULL,
                      app_version TEXT NOT NULL);
CREATE TABLE setups (study_id TEXT NOT NULL REFERENCES studies(id), position INTEGER NOT NULL, label TEXT NOT NULL,
                     settings TEXT NOT NULL, engine TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (study_id, position));
CREATE TABLE prompts (study_id TEXT NOT NULL REFERENCES studies(id), position INTEGER NOT NULL, id TEXT NOT NULL,
                      text TEXT NOT NULL, media TEXT NOT NULL, system_prompt TEXT NOT NULL, reference TEXT NOT NULL,
                      problem TEXT NOT NULL, PRIMARY KEY (study_id, position));
CREATE TABLE answers (study_id TEXT NOT NULL REFERENCES studies(id), prompt INTEGER NOT NULL, setup INTEGER NOT NULL,
                      text TEXT NOT NULL, audio TEXT, audio_sha256 TEXT, error TEXT NOT NULL,
                      finish_reason TEXT NOT NULL, first_token_s REAL, first_audio_s REAL, tokens_per_s REAL,
                      created_at REAL NOT NULL, PRIMARY KEY (study_id, prompt, setup));
CREATE TABLE pairs (id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(id), rater TEXT NOT NULL,
                    prompt INTEGER NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL, left_setup INTEGER NOT NULL,
                    right_setup INTEGER NOT NULL, shown_at REAL NOT NULL, UNIQUE (study_id, rater, prompt, low, high));
CREATE TABLE votes (seq INTEGER PRIMARY KEY AUTOINCREMENT, pair_id TEXT NOT NULL UNIQUE REFERENCES pairs(id),
                    choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie', 'both_bad')), comment TEXT NOT NULL,
                    voted_at REAL NOT NULL);
CREATE INDEX pairs_by_rater ON pairs (study_id, rater);
"""
_V2 = """
ALTER TABLE studies ADD COLUMN closed_at REAL;
"""
"""A study can be closed (studies.admin): when, or NULL while it is open."""
MIGRATIONS = {1: _V1, 2: _V2}
"""version → the SQL that brings the version before it to this one."""


class StudyStore(StudyAdmin):
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        (self.folder / "media").mkdir(parents=True, exist_ok=True)
        (self.folder / "audio").mkdir(exist_ok=True)
        self.path = self.folder / DATABASE
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept in the file: every later connection is WAL too
        self._migrate()

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA foreign_keys=ON")
            if not write:
                yield db
                return
            db.execute("BEGIN IMMEDIATE")  # the write lock now: reads inside see what no one else changes
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def _migrate(self) -> None:
        with self._connect(write=True) as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None:
                db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                db.execute("INSERT INTO schema_version VALUES (0)")
            version = db.execute("SELECT version FROM schema_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StudyError(Message("studies.newer_schema", {"file": str(self.path), "version": version,
                                                                  "known": SCHEMA_VERSION}))
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("UPDATE schema_version SET version = ?", (step,))

    # Files

    def keep_media(self, path: str, name: str) -> MediaFile:
        """A copy of ``path`` in the data folder, named by its content (the same file twice is kept once)."""
        digest = _sha256(path)
        relative = f"media/{digest}{Path(path).suffix.lower()}"
        copy_whole(path, self.folder / relative)
        return MediaFile(name, relative, digest)

    def new_audio_file(self) -> str:
        """A fresh relative path for a spoken answer."""
        return f"audio/{secrets.token_hex(12)}.wav"

    def file(self, relative: str) -> Path:
        return self.folder / relative

    # Studies and answers

    def create_study(self, name: str, setups: Sequence[tuple[str, dict]], prompts: Sequence[StudyPrompt],
                     created_by: str = "", app_version: str = "") -> Study:
        """A new study of ``setups`` ((label, settings) each) over ``prompts`` (their media kept already)."""
        study_id = f"s-{secrets.token_hex(4)}"
        with self._connect(write=True) as db:
            # The media were kept before this lock was taken: a study deleted meanwhile may have removed one it
            # alone used (studies.admin removes them under this lock, so what is here now stays).
            if gone := sorted({m.name for p in prompts for m in p.media if not (self.folder / m.file).is_file()}):
                raise StudyError(Message("studies.media_gone", {"files": ", ".join(gone)}))
            db.execute("INSERT INTO studies (id, name, created_at, created_by, app_version) VALUES (?, ?, ?, ?, ?)",
                       (study_id, name, time.time(), created_by, app_version))
            db.executemany("INSERT INTO setups (study_id, position, label, settings) VALUES (?, ?, ?, ?)",
                           [(study_id, k, label, json.dumps(settings)) for k, (label, settings) in enumerate(setups)])
            db.executemany("INSERT INTO prompts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(study_id, k, p.id, p.text, json.dumps([m.__dict__ for m in p.media]), p.system_prompt,
                             p.reference, p.problem) for k, p in enumerate(prompts)])
        return self.study(study_id)

    def studies(self) -> list[Study]:
        """Every study, newest first (one deleted while they are read is left out)."""
        with self._connect() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM studies ORDER BY created_at DESC, id")]
        found = []
        for study_id in ids:
            try:
                found.append(self.study(study_id))
            except StudyError:
                continue
        return found

    def catalog(self) -> list[tuple[str, str, bool]]:
        """(id, name, closed) of every study, newest first, in one query: what open pages look at every few seconds
        to keep their list of studies current."""
        with self._connect() as db:
            return [(row[0], row[1], row[2] is not None) for row in db.execute(
                "SELECT id, name, closed_at FROM studies ORDER BY created_at DESC, id")]

    def study(self, study_id: str) -> Study:
        with self._connect() as db:
            row = db.execute("SELECT * FROM studies WHERE id = ?", (study_id,)).fetchone()
            if row is None:
                raise StudyError(Message("studies.no_study", {"id": study_id}))
            setups = tuple(StudySetup(r["position"], r["label"], json.loads(r["settings"]), json.loads(r["engine"]))
                           for r in db.execute("SELECT * FROM setups WHERE study_id = ? ORDER BY position",
                                               (study_id,)))
            prompts = tuple(StudyPrompt(r["position"], r["id"], r["text"],
                                        tuple(MediaFile(**m) for m in json.loads(r["media"])), r["system_prompt"],
                                        r["reference"], r["problem"])
                            for r in db.execute("SELECT * FROM prompts WHERE study_id = ? ORDER BY position",
                                                (study_id,)))
        return Study(row["id"], row["name"], row["created_at"], row["created_by"], row["app_version"], setups,
                     prompts, row["closed_at"])

    def set_engine(self, study_id: str, setup: int, engine: dict) -> None:
        """What model and backend answer for ``setup`` (known once its first answer is made)."""
        with self._connect(write=True) as db:
            db.execute("UPDATE setups SET engine = ? WHERE study_id = ? AND position = ?",
                       (json.dumps(engine), study_id, setup))

    def missing_answers(self) -> list[tuple[str, int, int]]:
        """(study, prompt, set-up) of every answer still to make, oldest study first, prompt by prompt (so a
        study's first prompts can be rated while the rest are answered); none of a closed study."""
        with self._connect() as db:
            return [tuple(row) for row in db.execute(
                "SELECT p.study_id, p.position, s.position FROM prompts p JOIN setups s ON s.study_id = p.study_id "
                "JOIN studies st ON st.id = p.study_id WHERE p.problem = '' AND st.closed_at IS NULL AND NOT EXISTS "
                "(SELECT 1 FROM answers a WHERE a.study_id = p.study_id AND a.prompt = p.position "
                "AND a.setup = s.position) "
                "ORDER BY st.created_at, st.id, p.position, s.position")]

    def save_answer(self, study_id: str, answer: StudyAnswer) -> None:
        """Keep ``answer``; an answer is made once (a second one for the same prompt and set-up is ignored).
        ``StudyError`` when the study was deleted while the answer was made: nothing of it is kept."""
        with self._connect(write=True) as db:
            _check_study(db, study_id)
            db.execute("INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (study_id, answer.prompt, answer.setup, answer.text, answer.audio, answer.audio_sha256,
                        answer.error, answer.finish_reason, answer.first_token_s, answer.first_audio_s,
                        answer.tokens_per_s, time.time()))

    def answers(self, study_id: str) -> dict[tuple[int, int], StudyAnswer]:
        """(prompt, set-up) → answer, for the answers made so far."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM answers WHERE study_id = ?", (study_id,)).fetchall()
        return {(r["prompt"], r["setup"]): StudyAnswer(
            r["prompt"], r["setup"], r["text"], r["audio"], r["audio_sha256"], r["error"], r["finish_reason"],
            r["first_token_s"], r["first_audio_s"], r["tokens_per_s"]) for r in rows}

    # Raters: pairs and votes

    def next_pair(self, study_id: str, rater: str, rng: random.Random | None = None) -> Pair | None:
        """The pair ``rater`` judges now: the one shown to them and not voted on yet (from any browser), else a new
        one (``studies.schedule``); None when they have judged every pair whose answers are ready."""
        rater = check_rater(rater)
        rng = rng or random.SystemRandom()  # sides no one can predict
        study = self.study(study_id)
        with self._connect(write=True) as db:
            if _check_study(db, study_id)["closed_at"] is not None:  # closed now, maybe after ``study`` was read
                raise StudyError(Message("studies.closed", {"name": study.name}))
            if (open_pair := self._open_pair(db, study_id, rater)) is not None:
                return open_pair
            ready = ready_prompts(db, study_id, len(study.setups))
            counts = {(r[0], r[1], r[2]): r[3] for r in db.execute(
                "SELECT p.prompt, p.low, p.high, COUNT(*) FROM pairs p LEFT JOIN votes v ON v.pair_id = p.id "
                "WHERE p.study_id = ? AND (v.seq IS NOT NULL OR p.shown_at > ?) GROUP BY p.prompt, p.low, p.high",
                (study_id, time.time() - FRESH_S))}
            seen = {(r[0], r[1], r[2]) for r in db.execute(
                "SELECT prompt, low, high FROM pairs WHERE study_id = ? AND rater = ?", (study_id, rater))}
            cell = schedule.next_cell(schedule.cells(ready, len(study.setups)), counts, seen, rng)
            if cell is None:
                return None
            left, right = schedule.sides(cell, rng)
            pair = Pair(secrets.token_urlsafe(12), study_id, rater, cell[0], left, right)
            db.execute("INSERT INTO pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (pair.id, study_id, rater, cell[0], cell[1], cell[2], left, right, time.time()))
        return pair

    def _open_pair(self, db: sqlite3.Connection, study_id: str, rater: str) -> Pair | None:
        row = db.execute("SELECT p.* FROM pairs p LEFT JOIN votes v ON v.pair_id = p.id WHERE p.study_id = ? AND "
                         "p.rater = ? AND v.seq IS NULL ORDER BY p.shown_at LIMIT 1", (study_id, rater)).fetchone()
        return None if row is None else _pair(row, voted=False)

    def pair(self, pair_id: str) -> Pair:
        with self._connect() as db:
            row = db.execute("SELECT p.*, v.seq FROM pairs p LEFT JOIN votes v ON v.pair_id = p.id WHERE p.id = ?",
                             (pair_id,)).fetchone()
        if row is None:
            raise StudyError(Message("studies.no_pair", {"id": pair_id}))
        return _pair(row, voted=row["seq"] is not None)

    def vote(self, pair_id: str, rater: str, choice: str, comment: str = "") -> tuple[Vote, bool]:
        """Store ``rater``'s vote on the pair shown to them; returns (the vote, whether it was stored before). A
        pair takes one vote: the same vote sent again (a retry, a second tab) is answered with the first."""
        rater = check_rater(rater)
        if choice not in CHOICES:
            raise StudyError(Message("studies.bad_choice", {"choice": str(choice)[:40], "choices": ", ".join(CHOICES)}))
        if len(comment or "") > MAX_COMMENT_CHARS:
            raise StudyError(Message("studies.comment_too_long", {"limit": MAX_COMMENT_CHARS}))
        with self._connect(write=True) as db:
            row = db.execute("SELECT * FROM pairs WHERE id = ?", (pair_id,)).fetchone()
            if row is None or row["rater"] != rater:  # someone else's pair is as unknown as no pair
                raise StudyError(Message("studies.no_pair", {"id": pair_id}))
            existed = db.execute("SELECT 1 FROM votes WHERE pair_id = ?", (pair_id,)).fetchone() is not None
            if not existed and (study := _check_study(db, row["study_id"]))["closed_at"] is not None:
                # Closed while the pair was shown: refused, so a closed study's board and exports are final. The
                # pair stays the rater's, and comes back to be voted on if the study is reopened.
                raise StudyError(Message("studies.closed_before_vote", {"name": study["name"]}))
            if not existed:
                db.execute("INSERT INTO votes (pair_id, choice, comment, voted_at) VALUES (?, ?, ?, ?)",
                           (pair_id, choice, comment or "", time.time()))
            vote = _votes(db, "v.pair_id = ?", (pair_id,))[0]
        return vote, existed

    def votes(self, study_id: str) -> list[Vote]:
        """The study's votes in the order they were stored."""
        with self._connect() as db:
            return _votes(db, "p.study_id = ?", (study_id,))

    def progress(self, study_id: str, rater: str) -> tuple[int, int]:
        """(pairs ``rater`` has voted on, pairs they can be shown now: every pair of the prompts answered)."""
        rater = check_rater(rater)
        study = self.study(study_id)
        with self._connect() as db:
            ready = ready_prompts(db, study_id, len(study.setups))
            voted = db.execute("SELECT COUNT(*) FROM pairs p JOIN votes v ON v.pair_id = p.id WHERE p.study_id = ? "
                               "AND p.rater = ?", (study_id, rater)).fetchone()[0]
        return voted, len(ready) * len(study.pairs)

    def counts(self, study_id: str) -> tuple[int, int, int]:
        """(answers made, votes, raters who voted), counted in the database (a list of studies asks often);
        ``StudyError`` for a study that is no more (the app's cached boards must not outlive it)."""
        with self._connect() as db:
            _check_study(db, study_id)
            answers = db.execute("SELECT COUNT(*) FROM answers WHERE study_id = ?", (study_id,)).fetchone()[0]
            votes, raters = db.execute("SELECT COUNT(*), COUNT(DISTINCT p.rater) FROM votes v JOIN pairs p ON "
                                       "p.id = v.pair_id WHERE p.study_id = ?", (study_id,)).fetchone()
        return answers, votes, raters

    def raters(self, study_id: str) -> dict[str, int]:
        """Each rater's number of votes."""
        with self._connect() as db:
            return {r[0]: r[1] for r in db.execute(
                "SELECT p.rater, COUNT(*) FROM pairs p JOIN votes v ON v.pair_id = p.id WHERE p.study_id = ? "
                "GROUP BY p.rater ORDER BY p.rater", (study_id,))}


def copy_whole(source: str | os.PathLike, target: Path) -> Path:
    """``source`` copied to ``target`` unless a file is there already; whole or not at all (copied under a name of
    its own, then renamed), so whoever finds ``target`` while another thread copies it never reads half a file."""
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{secrets.token_hex(4)}.part")
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    return target


def check_rater(name: str) -> str:
    """A rater's name as it is kept (spaces folded); ``StudyError`` for none or one too long."""
    name = " ".join(str(name or "").split())
    if not name:
        raise StudyError(Message("studies.no_rater"))
    if len(name) > MAX_RATER_CHARS:
        raise StudyError(Message("studies.rater_too_long", {"limit": MAX_RATER_CHARS}))
    return name


def _check_study(db: sqlite3.Connection, study_id: str) -> sqlite3.Row:
    """The study's row; ``StudyError`` when there is none (deleted, or never made)."""
    row = db.execute("SELECT * FROM studies WHERE id = ?", (study_id,)).fetchone()
    if row is None:
        raise StudyError(Message("studies.no_study", {"id": study_id}))
    return row


def _pair(row: sqlite3.Row, voted: bool) -> Pair:
    return Pair(row["id"], row["study_id"], row["rater"], row["prompt"], row["left_setup"], row["right_setup"], voted)


def _votes(db: sqlite3.Connection, where: str, values: tuple) -> list[Vote]:
    rows = db.execute("SELECT v.seq, p.id, p.study_id, p.rater, p.prompt, p.left_setup, p.right_setup, v.choice, "
                      f"v.comment, v.voted_at FROM votes v JOIN pairs p ON p.id = v.pair_id WHERE {where} "
                      "ORDER BY v.seq", values).fetchall()
    return [Vote(*row) for row in rows]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
