"""What a study's creators do with it once it runs: close it (no more pairs or votes), reopen it, delete it with its
files, and read every rater's progress. Mixed into ``studies.store.StudyStore``, whose connections it uses.

Closing freezes the study: the store hands out no pair and takes no vote (a pair shown before the close keeps its
place and comes back if the study is reopened), and ``missing_answers`` leaves it out, so no answer is started for
it. Deleting removes every row of the study in one transaction, then its files: its spoken answers (each answer has
its own), and those of its prompts' media that no other study uses (a file two studies share is kept once).
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

from messages import Message
from studies.records import RaterProgress, Study, StudyError


class StudyAdmin:
    """The creators' part of the store (``StudyStore`` provides these attributes)."""

    folder: Path
    _connect: Callable[..., AbstractContextManager[sqlite3.Connection]]
    study: Callable[[str], Study]
    file: Callable[[str], Path]

    def close_study(self, study_id: str, closed: bool = True) -> Study:
        """Close the study (``closed``) or reopen it; closing one closed already keeps the time it was closed."""
        with self._connect(write=True) as db:
            changed = db.execute("UPDATE studies SET closed_at = CASE WHEN ? THEN COALESCE(closed_at, ?) END "
                                 "WHERE id = ?", (closed, time.time(), study_id)).rowcount
        if not changed:
            raise StudyError(Message("studies.no_study", {"id": study_id}))
        return self.study(study_id)

    def delete_study(self, study_id: str) -> list[str]:
        """Remove the study: its rows, its speech files and the media only it used. Returns the ids of the pairs it
        had shown (the app removes its copies of them)."""
        with self._connect(write=True) as db:
            if db.execute("SELECT 1 FROM studies WHERE id = ?", (study_id,)).fetchone() is None:
                raise StudyError(Message("studies.no_study", {"id": study_id}))
            pair_ids = [row[0] for row in db.execute("SELECT id FROM pairs WHERE study_id = ?", (study_id,))]
            audio = [row[0] for row in db.execute("SELECT audio FROM answers WHERE study_id = ? AND audio IS NOT NULL",
                                                  (study_id,))]
            media = {item["file"] for row in db.execute("SELECT media FROM prompts WHERE study_id = ?", (study_id,))
                     for item in json.loads(row[0])}
            db.execute("DELETE FROM votes WHERE pair_id IN (SELECT id FROM pairs WHERE study_id = ?)", (study_id,))
            for table in ("pairs", "answers", "prompts", "setups"):
                db.execute(f"DELETE FROM {table} WHERE study_id = ?", (study_id,))
            db.execute("DELETE FROM studies WHERE id = ?", (study_id,))
        # Each answer's speech is its own: no one else can take it up once the rows are gone. (A crash right here
        # leaves files no row names: harmless, never a row without its file.)
        for relative in audio:
            self.file(relative).unlink(missing_ok=True)
        # A medium may be another study's too, or become one's: a study being created keeps its media before its
        # rows, and checks they are there inside its transaction. So a medium goes only under the write lock, once
        # no prompt names it: a study created meanwhile either names it here (it stays) or finds it gone (refused).
        with self._connect(write=True) as db:
            for relative in sorted(media):
                if db.execute("SELECT 1 FROM prompts WHERE instr(media, ?) LIMIT 1", (json.dumps(relative),)) \
                        .fetchone() is None:  # the name holds the file's SHA-256: no other file's name contains it
                    self.file(relative).unlink(missing_ok=True)
        return pair_ids

    def rater_progress(self, study_id: str) -> tuple[int, list[RaterProgress]]:
        """(the pairs ready now, each rater's progress by name): every rater who has been shown a pair of the
        study, with their votes, the ready pairs they have not voted on, and the time of their last vote."""
        study = self.study(study_id)
        with self._connect() as db:
            ready = len(ready_prompts(db, study_id, len(study.setups))) * len(study.pairs)
            rows = db.execute("SELECT p.rater, COUNT(v.seq), MAX(v.voted_at) FROM pairs p LEFT JOIN votes v ON "
                              "v.pair_id = p.id WHERE p.study_id = ? GROUP BY p.rater ORDER BY p.rater",
                              (study_id,)).fetchall()
        # A rater's pairs are all of ready prompts (a pair is shown only once its prompt is answered, and answers
        # are never taken back), so what is left for them is the ready pairs less their votes.
        return ready, [RaterProgress(rater, votes, max(0, ready - votes), last) for rater, votes, last in rows]


def ready_prompts(db: sqlite3.Connection, study_id: str, setups: int) -> list[int]:
    """The prompts every set-up has answered."""
    return [row[0] for row in db.execute(
        "SELECT prompt FROM answers WHERE study_id = ? GROUP BY prompt HAVING COUNT(*) = ? ORDER BY prompt",
        (study_id, setups))]
