"""Team studies as the page and the API use them: create a study, show a rater their next pair (blind), take
their vote and reveal it, the leaderboard; for its creators, close, reopen or delete it, and every rater's progress.
The data lives in ``studies`` (SQLite in the data folder); this module adds who may do what, the Evaluate tab's
sheet and set-ups, and files the page can serve.

Blindness: a pair reaches the page as its prompt, two answers called A and B, and their speech copied to files
named ``answer-a.wav`` and ``answer-b.wav`` in a folder named by the pair's random id; the set-ups' labels and
settings are given only with the vote's answer. The answers themselves are what they are: a rater who has heard a
set-up's answer to a prompt next to one set-up will recognise it next to another.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from backends.base import Backend
from backends.request import ChatRequest
from messages import Message
from studies import CHOICES, Pair, RaterProgress, Study, StudyError, StudyPrompt, StudySetup, StudyStore
from studies.generation import Generator
from studies.ranking import Leaderboard, leaderboard, score_history
from studies.store import check_rater, copy_whole
from ui.evaluate.results import app_version
from ui.evaluate.setup import Setup, SetupError, check_setup, unavailable
from ui.evaluate.sheet import Prompt, read_prompts
from ui.evaluate.team_export import write_exports
from ui.scratch import session_folder

MAX_SETUPS = 8
"""28 pairs of set-ups per prompt: beyond that a team can't give every pair votes."""
MAX_LABEL_CHARS = 60
MAX_NAME_CHARS = 120
CHOICE_LABELS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both are bad"}


@dataclass(frozen=True)
class Creators:
    """Who may create studies and export them: the logins named (``--admin``); anyone, for an app that only its own
    machine reaches; or, with neither, no one (an app others reach that names no admin: any visitor could otherwise
    queue thousands of engine answers, and an export unblinds the study)."""

    logins: tuple[str, ...] = ()
    anyone: bool = False

    def include(self, login: str | None) -> bool:
        return self.anyone or login in self.logins

    @property
    def nobody(self) -> bool:
        return not self.anyone and not self.logins


@dataclass(frozen=True)
class Shown:
    """A pair as the rater sees it before voting: nothing here says which set-up made which answer."""

    pair_id: str
    study_id: str
    prompt_id: str
    prompt: str
    reference: str
    media: tuple[str, ...]
    """Local copies of the prompt's files, under the names the sheet gave."""
    answer_a: str
    answer_b: str
    audio_a: str | None
    audio_b: str | None
    done: int
    total: int

    def record(self) -> dict:
        """What the API returns (the files go separately)."""
        return {"pair_id": self.pair_id, "study_id": self.study_id, "prompt_id": self.prompt_id,
                "prompt": self.prompt, "reference": self.reference, "media": [Path(m).name for m in self.media],
                "answer_a": self.answer_a, "answer_b": self.answer_b, "done": self.done, "total": self.total}


@dataclass(frozen=True)
class Revealed:
    """A vote's answer: which set-up made A and which B, once the vote is kept."""

    pair_id: str
    choice: str
    setup_a: str
    setup_b: str
    settings_a: dict
    settings_b: dict
    already: bool
    """The pair had its vote already (this one was not counted again)."""
    done: int
    total: int

    def record(self) -> dict:
        return asdict(self)


def request_for(setup: StudySetup, prompt: StudyPrompt, paths: tuple[str, ...], backend: Backend) -> ChatRequest:
    """How a study's set-up asks the engine: as the Evaluate tab's ``Setup`` does."""
    known = {f.name for f in fields(Setup)}
    sheet_row = Prompt(prompt.position + 1, prompt.id, prompt.text, tuple(m.name for m in prompt.media),
                       prompt.system_prompt, prompt.reference, paths)
    return Setup(**{k: v for k, v in setup.settings.items() if k in known}).request(sheet_row, backend.info.can_speak)


class TeamStudies:
    """The app's studies: one store in ``data_dir``, one generator on the app's engines; ``creators`` say who may
    create and export studies (by default no one)."""

    def __init__(self, data_dir: str | Path, engines: dict[str, Backend], creators: Creators = Creators()):
        self.store = StudyStore(Path(data_dir) / "studies")
        self.engines, self.creators = engines, creators
        self.generator = Generator(self.store, engines, request_for)
        self._boards: dict[str, tuple[int, Study, Leaderboard, list[tuple]]] = {}
        """study → (the votes it was computed from, the study, its board, its score history)."""
        self._board_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._pairs_folder = session_folder("omni-pairs-")  # what the page is sent, copied per pair
        self._exports_folder = session_folder("omni-study-exports-")  # each study's latest export

    # Who

    def may_create(self, login: str | None) -> bool:
        """Whether ``login`` may create studies and export them (an export names the set-up behind every answer, so
        it is as closed as creating)."""
        return self.creators.include(login)

    def _check_creator(self, login: str | None, refusal: str) -> None:
        if self.creators.nobody:
            raise StudyError(Message("team.no_admin"))
        if not self.may_create(login):
            raise StudyError(Message(refusal))

    def rater(self, typed: str | None, login: str | None) -> str:
        """A logged-in rater is their login; anyone else is the name they type (the same name goes on from any
        browser)."""
        return check_rater(login or typed or "")

    # Studies

    def create(self, name: str, files: Sequence[str], setups: Sequence[dict], login: str | None) -> Study:
        """A new study from a sheet and its media (the Evaluate tab's format) and two or more set-ups (``label``
        plus the Evaluate tab's set-up fields); its answers are made in the background (``wake`` the generator)."""
        self._check_creator(login, "team.not_admin")
        name = " ".join((name or "").split())[:MAX_NAME_CHARS] or "study"
        checked = self.check_setups(setups)
        work = Path(session_folder("omni-study-"))
        try:
            prompts = read_prompts(list(files), work / "media")
            kept = [StudyPrompt(k, p.id, p.text, tuple(self.store.keep_media(path, media) for media, path
                                                       in zip(p.media, p.paths)) if not p.problem else (),
                                p.system_prompt, p.reference, p.problem) for k, p in enumerate(prompts)]
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not any(not p.problem for p in kept):
            raise StudyError(Message("team.no_good_rows"))
        return self.store.create_study(name, checked, kept, created_by=login or "", app_version=app_version())

    def check_setups(self, setups: Sequence[dict]) -> list[tuple[str, dict]]:
        """(label, settings) of each set-up, checked against the Evaluate tab's bounds and this server's engines."""
        if not isinstance(setups, (list, tuple)) or not 2 <= len(setups) <= MAX_SETUPS:
            raise StudyError(Message("team.setup_count", {"low": 2, "high": MAX_SETUPS}))
        checked, labels = [], set()
        for k, values in enumerate(setups):
            if not isinstance(values, dict):
                raise StudyError(Message("team.setup_not_object", {"number": k + 1}))
            label = " ".join(str(values.get("label") or f"Set-up {k + 1}").split())[:MAX_LABEL_CHARS]
            if label in labels:
                raise StudyError(Message("team.same_label", {"label": label}))
            labels.add(label)
            try:
                setup = check_setup(values, f"setups[{k}]")
            except SetupError as err:
                raise StudyError(err.msg) from err
            if problem := unavailable(setup, label, self.engines):
                raise StudyError(problem)
            checked.append((label, asdict(setup)))
        return checked

    def summaries(self) -> list[dict]:
        """Every study, newest first: its id, name, set-ups, prompts, answers made and votes, whether it is closed."""
        out, waiting = [], self.generator.waiting
        for study in self.store.studies():
            answerable = sum(1 for p in study.prompts if not p.problem) * len(study.setups)
            try:
                answers, votes, raters = self.store.counts(study.id)
            except StudyError:  # deleted while the list was read
                continue
            out.append({"study_id": study.id, "name": study.name, "setups": [s.label for s in study.setups],
                        "prompts": len(study.prompts), "answers": answers, "answers_total": answerable,
                        "votes": votes, "raters": raters,
                        "waiting": str(waiting[study.id]) if study.id in waiting else "",
                        "closed": study.closed, "closed_at": None if study.closed_at is None else utc(study.closed_at)})
        return out

    # Managing a study (its creators: those who may create studies)

    def close_study(self, study_id: str, login: str | None, closed: bool = True) -> Study:
        """Close the study (raters get no more pairs, a vote on a pair shown before is refused; the leaderboard and
        exports stay) or reopen it (``closed`` False: ``wake`` the generator for the answers it still lacks)."""
        self._check_creator(login, "team.manage_not_admin")
        return self.store.close_study(study_id, closed)

    def delete_study(self, study_id: str, confirm_name: str, login: str | None) -> Study:
        """Remove the study for good: its rows, its files, the copies of its pairs and its export here; its answer
        under way is dropped. ``confirm_name`` must be the study's name (the page's and the API's safety catch)."""
        self._check_creator(login, "team.manage_not_admin")
        study = self.store.study(study_id)
        if " ".join(str(confirm_name or "").split()) != study.name:
            raise StudyError(Message("team.delete_confirm", {"name": study.name}))
        self.generator.drop(study_id)
        for pair_id in self.store.delete_study(study_id):
            shutil.rmtree(self._pair_folder(pair_id, make=False), ignore_errors=True)
        shutil.rmtree(Path(self._exports_folder) / study_id, ignore_errors=True)
        self._boards.pop(study_id, None)
        with self._locks_lock:
            self._board_locks.pop(study_id, None)
        return study

    def rater_progress(self, study_id: str, login: str | None) -> tuple[Study, int, list[RaterProgress]]:
        """(the study, the pairs ready for each rater, every rater's progress), for its creators only: it names who
        rates and how much."""
        self._check_creator(login, "team.manage_not_admin")
        ready, raters = self.store.rater_progress(study_id)
        return self.store.study(study_id), ready, raters

    # Rating

    def next_pair(self, study_id: str, rater: str) -> Shown | None:
        """The rater's pair to judge now (the same one until they vote), or None when they have judged every pair
        whose answers are ready."""
        pair = self.store.next_pair(study_id, rater)
        if pair is None:
            return None
        return self._shown(pair)

    def _shown(self, pair: Pair) -> Shown:
        try:
            return self._copied(pair)
        except (KeyError, FileNotFoundError):  # its study deleted while the pair was read: StudyError says so
            self.store.study(pair.study_id)
            raise

    def _copied(self, pair: Pair) -> Shown:
        study = self.store.study(pair.study_id)
        answers = self.store.answers(pair.study_id)
        prompt = study.prompts[pair.prompt]
        folder = self._pair_folder(pair.id)
        # Copied whole or not at all: the same rater's two pages (or a retry) may ask for this pair at once.
        media = [str(copy_whole(self.store.file(item.file), folder / f"media-{number}" / Path(item.name).name))
                 for number, item in enumerate(prompt.media)]  # under the names the sheet gave
        sides = {}
        for side, setup in (("a", pair.left), ("b", pair.right)):
            answer = answers[pair.prompt, setup]
            audio = None
            if answer.audio and self.store.file(answer.audio).is_file():
                audio = copy_whole(self.store.file(answer.audio), folder / f"answer-{side}.wav")
            sides[side] = (answer.text, str(audio) if audio else None)
        done, total = self.store.progress(pair.study_id, pair.rater)
        return Shown(pair.id, pair.study_id, prompt.id, prompt.text, prompt.reference, tuple(media),
                     sides["a"][0], sides["b"][0], sides["a"][1], sides["b"][1], done, total)

    def vote(self, pair_id: str, rater: str, choice: str, comment: str = "") -> Revealed:
        vote, already = self.store.vote(pair_id, rater, choice, comment)
        study = self.store.study(vote.study_id)
        done, total = self.store.progress(vote.study_id, rater)
        shutil.rmtree(self._pair_folder(pair_id, make=False), ignore_errors=True)  # the page has its copies
        left, right = study.setups[vote.left], study.setups[vote.right]
        return Revealed(pair_id, vote.choice, left.label, right.label, dict(left.settings), dict(right.settings),
                        already, done, total)

    def progress(self, study_id: str, rater: str) -> tuple[int, int]:
        return self.store.progress(study_id, rater)

    def _pair_folder(self, pair_id: str, make: bool = True) -> Path:
        folder = Path(self._pairs_folder) / pair_id
        if make:
            folder.mkdir(exist_ok=True)
        return folder

    # The board

    def leaderboard(self, study_id: str) -> tuple[Study, Leaderboard, list[tuple]]:
        """The study, its leaderboard and its score history (``studies.ranking.score_history``). Whether votes came
        in since is one count query (every open page asks every few seconds); the board is computed again only
        then, once per study at a time: whoever asks meanwhile waits for that board rather than computing another."""
        votes_now = self.store.counts(study_id)[1]
        if (known := self._boards.get(study_id)) is None or known[0] < votes_now:
            with self._board_lock(study_id):
                if (known := self._boards.get(study_id)) is None or known[0] < votes_now:  # not computed meanwhile
                    study, votes = self.store.study(study_id), self.store.votes(study_id)
                    known = (len(votes), study, leaderboard(len(study.setups), votes),
                             score_history(len(study.setups), votes))
                    self._boards[study_id] = known
        return known[1], known[2], known[3]

    def _board_lock(self, study_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._board_locks.setdefault(study_id, threading.Lock())

    def export(self, study_id: str, login: str | None) -> list[str]:
        """The study's exports (``ui.evaluate.team_export``), for those who may create studies only: the vote log
        and the answers name which set-up wrote every answer, so a rater holding them could tell the sides of every
        pair still to come.

        They are written in this process's scratch folder (removed when the app stops), one folder per study: an
        export replaces the study's previous one file by file, so a download under way keeps a whole file, the old
        or the new, and a study's zip of every WAV and medium is kept once, not once per export."""
        self._check_creator(login, "team.export_not_admin")
        _study, board, _history = self.leaderboard(study_id)
        study = self.store.study(study_id)  # as it is now: the models and backends that answered, once known
        folder = Path(self._exports_folder) / study.id
        fresh = Path(tempfile.mkdtemp(prefix=f"{study.id}-", dir=self._exports_folder))
        try:
            written = [Path(path) for path in write_exports(self.store, study, board, fresh)]
            folder.mkdir(exist_ok=True)
            for path in written:
                os.replace(path, folder / path.name)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
        return [str(folder / path.name) for path in written]

    async def wake(self) -> None:
        """Make the answers still missing (on the server's event loop; once per call is cheap)."""
        self.generator.wake()

    async def close(self) -> None:
        await self.generator.close()


def progress_record(study: Study, ready: int, raters: list[RaterProgress]) -> dict:
    """Every rater's progress as JSON (``study_progress``), times in UTC."""
    return {"study_id": study.id, "name": study.name, "closed": study.closed, "pairs_ready": ready,
            "raters": [{"rater": r.rater, "votes": r.votes, "left": r.left,
                        "last_vote_at": None if r.last_vote_at is None else utc(r.last_vote_at)} for r in raters]}


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def board_record(study: Study, board: Leaderboard) -> dict:
    """The leaderboard as JSON: standings best first, the win-rate matrix by label, agreement."""
    labels = [s.label for s in study.setups]
    return {"study_id": study.id, "votes": board.votes, "raters": board.raters,
            "agreement": board.agreement, "krippendorff_alpha": board.alpha,
            "standings": [{"rank": rank, "setup": labels[s.setup], "score": round(s.score, 1),
                           "ci_low": None if s.low is None else round(s.low, 1),
                           "ci_high": None if s.high is None else round(s.high, 1), "votes": s.votes, "wins": s.wins,
                           "losses": s.losses, "ties": s.ties, "both_bad": s.both_bad,
                           "win_rate": None if s.win_rate is None else round(s.win_rate, 3)}
                          for rank, s in enumerate(board.standings, 1)],
            "win_rates": {labels[i]: {labels[j]: (None if rate is None else round(rate, 3))
                                      for j, rate in enumerate(row) if j != i}
                          for i, row in enumerate(board.win_rates)}}


STORE_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="studies")
"""Store calls run here, not in asyncio's default pool, which engines use to prepare turns: a crowd of raters
never makes a chat turn wait for a thread."""


async def in_thread(function, *args) -> Any:
    """A store call off the event loop (a write may wait for another rater's for a few milliseconds)."""
    return await asyncio.get_running_loop().run_in_executor(STORE_THREADS, functools.partial(function, *args))


__all__ = ["CHOICES", "CHOICE_LABELS", "Creators", "Revealed", "Shown", "TeamStudies", "board_record", "in_thread",
           "progress_record", "utc"]
