"""The team-study tools: create a study, judge pairs blind, read the leaderboard, export; close, reopen or delete a
study and read every rater's progress (its creators); through ``ui.evaluate.team``, as the Team study tab does. A
study, a rater and a pair are named by ids and names, so nothing is kept per call."""

# No `from __future__ import annotations`: gr.api reads a tool's outputs from its return annotation as it
# stands (a string would be one output).

import json
from typing import Literal

import gradio as gr

from studies import StudyError
from ui.evaluate.sheet import SheetError
from ui.evaluate.team import TeamStudies, board_record, in_thread, progress_record
from ui.messages import translator
from ui.tools.common import File, ToolSet, file_out, path_of

Choice = Literal["A", "B", "tie", "both_bad"]


def register(tools: ToolSet, teams: TeamStudies) -> None:
    def login_of(http_request: gr.Request) -> str | None:
        return getattr(http_request, "username", None)

    async def call(http_request: gr.Request, function, *args):
        """``function(*args)`` off the event loop, with the store's refusals as errors in the caller's language."""
        await teams.wake()  # the first call after a restart finishes the answers it cut short
        try:
            return await in_thread(function, *args)
        except (StudyError, SheetError) as err:
            raise gr.Error(translator(http_request)(err.msg)) from err

    async def study_create(files: list[File], setups: str, name: str = "",
                           http_request: gr.Request = None) -> tuple[str, str]:
        """Create a team study: a prompt sheet (.csv or .jsonl with columns id, prompt, media, and optionally
        system_prompt, reference) is answered once by every set-up, in the background, and raters then judge pairs
        of those answers blind (study_next_pair, study_vote). Only the app's admins (--admin) may create one; an app
        that names none lets anyone create when it runs on the caller's own machine, and no one otherwise.

        Args:
            files: the sheet and the media it names (or a .zip of them), each a URL or a data: URI
            setups: a JSON list of 2 to 8 objects, one per set-up: label (its name, shown after a vote), and any of
                engine (app or compare), speaker, system_prompt, temperature, top_p, top_k, max_new_tokens, seed
                (null: random), speech (true or false)
            name: the study's name
        Returns:
            study_id: the new study's id
            status: the study as JSON: its set-ups, prompts, answers made so far and votes
        """
        say = translator(http_request)
        paths = [path_of(file, say) for file in files or []]
        try:
            parsed = json.loads(setups)
        except (TypeError, ValueError):
            parsed = None
        study = await call(http_request, teams.create, name, paths, parsed if isinstance(parsed, list) else [],
                           login_of(http_request))
        await teams.wake()  # its answers
        return study.id, json.dumps(_summary(teams, study.id), ensure_ascii=False)

    async def study_list(http_request: gr.Request = None) -> str:
        """List the team studies, newest first: each study's id, name, set-up labels, prompts, answers made (and how
        many there will be), votes and raters, and whether it is closed (closed, closed_at in UTC).

        Returns:
            studies: JSON, one object per study
        """
        return json.dumps(await call(http_request, teams.summaries), ensure_ascii=False)

    async def study_next_pair(study_id: str, rater: str = "",
                              http_request: gr.Request = None) -> tuple[str, File, File]:
        """The next pair a rater judges in a study: one prompt answered by two set-ups, shown as A and B in random
        order with the set-ups hidden. The same pair comes back until it is voted on (from any client); a rater is
        never shown the same pair twice.

        Args:
            study_id: the study's id (study_list)
            rater: the rater's name (behind a login the login is the rater)
        Returns:
            pair: JSON with pair_id, prompt_id, prompt, reference, media (names), answer_a, answer_b, done and total
                (the rater's pairs judged and judgeable now); {"done": …, "total": …} alone once every pair is judged
            speech_a: the URL of A's spoken answer ("" when it has none)
            speech_b: the URL of B's spoken answer ("" when it has none)
        """
        who = await call(http_request, teams.rater, rater, login_of(http_request))
        shown = await call(http_request, teams.next_pair, study_id, who)
        if shown is None:
            done, total = await call(http_request, teams.progress, study_id, who)
            return json.dumps({"pair_id": None, "done": done, "total": total}), "", ""
        return json.dumps(shown.record(), ensure_ascii=False), file_out(shown.audio_a), file_out(shown.audio_b)

    async def study_vote(pair_id: str, choice: Choice, rater: str = "", comment: str = "",
                         http_request: gr.Request = None) -> str:
        """Vote on the pair study_next_pair gave the rater, then learn which set-up made A and which made B. A pair
        takes one vote: sending it again changes nothing and says so.

        Args:
            pair_id: the pair's id (study_next_pair)
            choice: A (A is better), B (B is better), tie, or both_bad (neither is acceptable)
            rater: the rater's name, as given to study_next_pair (behind a login the login is the rater)
            comment: why, optionally
        Returns:
            revealed: JSON with setup_a, setup_b (their labels), settings_a, settings_b, the choice kept, already
                (true when the pair had its vote before), done and total
        """
        who = await call(http_request, teams.rater, rater, login_of(http_request))
        revealed = await call(http_request, teams.vote, pair_id, who, choice, comment or "")
        return json.dumps(revealed.record(), ensure_ascii=False)

    async def study_leaderboard(study_id: str, http_request: gr.Request = None) -> str:
        """A study's leaderboard from every rater's votes: Bradley–Terry scores on the Elo scale with 95% bootstrap
        intervals, each set-up's votes, wins, losses, ties and both-bad, the win-rate matrix, and how often raters
        judging the same pair agreed (with Krippendorff's alpha).

        Args:
            study_id: the study's id
        Returns:
            leaderboard: JSON with standings (best first), win_rates (by label), votes, raters, agreement,
                krippendorff_alpha
        """
        study, board, _history = await call(http_request, teams.leaderboard, study_id)
        return json.dumps(board_record(study, board), ensure_ascii=False)

    async def study_export(study_id: str, http_request: gr.Request = None) -> tuple[File, File, File, File, File, File]:
        """Export a study: the vote log and the leaderboard, each as CSV and JSONL (every vote with its prompt, media
        names and SHA-256, both answers, both set-ups' labels and settings, model and backend, rater, choice and
        comment), the whole study as a zip (those, every answer, their speech, the prompts' media and the dataset),
        and the dataset alone: a folder that datasets.load_dataset reads (answers with their speech as an audio
        column, and votes, as Parquet), zipped. Only those who may create studies may export one: it names the
        set-up behind every answer.

        Args:
            study_id: the study's id
        Returns:
            votes_csv: the URL of votes.csv
            votes_jsonl: the URL of votes.jsonl
            leaderboard_csv: the URL of leaderboard.csv
            leaderboard_jsonl: the URL of leaderboard.jsonl
            study_zip: the URL of study.zip
            dataset_zip: the URL of dataset.zip
        """
        return tuple(file_out(p) for p in await call(http_request, teams.export, study_id, login_of(http_request)))

    async def study_progress(study_id: str, http_request: gr.Request = None) -> str:
        """Every rater's progress in a study: votes given, pairs left for them among those ready, and the time of
        their last vote. Only those who may create studies may read it.

        Args:
            study_id: the study's id
        Returns:
            progress: JSON with study_id, name, closed, pairs_ready (per rater), and raters: one object per rater
                (rater, votes, left, last_vote_at in UTC or null), by name
        """
        study, ready, raters = await call(http_request, teams.rater_progress, study_id, login_of(http_request))
        return json.dumps(progress_record(study, ready, raters), ensure_ascii=False)

    async def study_close(study_id: str, http_request: gr.Request = None) -> str:
        """Close a study: raters get no more pairs and a vote on a pair shown before is refused (it comes back if the
        study is reopened); no more answers are made for it; its leaderboard and exports stay. Only those who may
        create studies may close one.

        Args:
            study_id: the study's id
        Returns:
            study: the study as study_list gives it (closed: true, closed_at)
        """
        study = await call(http_request, teams.close_study, study_id, login_of(http_request), True)
        return json.dumps(_summary(teams, study.id), ensure_ascii=False)

    async def study_reopen(study_id: str, http_request: gr.Request = None) -> str:
        """Reopen a closed study: raters go on where they were, and its missing answers are made. Only those who
        may create studies may reopen one.

        Args:
            study_id: the study's id
        Returns:
            study: the study as study_list gives it (closed: false)
        """
        study = await call(http_request, teams.close_study, study_id, login_of(http_request), False)
        await teams.wake()  # the answers it still lacks
        return json.dumps(_summary(teams, study.id), ensure_ascii=False)

    async def study_delete(study_id: str, confirm_name: str, http_request: gr.Request = None) -> str:
        """Delete a study for good: its prompts, answers, pairs, votes and files (speech, and the media no other study
        uses); it leaves every rater's list, and their next call about it says it is gone. Export it first to keep
        its votes. Only those who may create studies may delete one.

        Args:
            study_id: the study's id
            confirm_name: the study's name exactly, as study_list gives it (a check that the id is the one meant)
        Returns:
            deleted: JSON with the study_id and name deleted
        """
        study = await call(http_request, teams.delete_study, study_id, confirm_name, login_of(http_request))
        return json.dumps({"study_id": study.id, "name": study.name, "deleted": True}, ensure_ascii=False)

    for tool in (study_create, study_list, study_next_pair, study_vote, study_leaderboard, study_export,
                 study_progress, study_close, study_reopen, study_delete):
        tools.add(tool, concurrency_limit=None)  # quick store calls: raters never wait behind one another


def _summary(teams: TeamStudies, study_id: str) -> dict:
    return next(s for s in teams.summaries() if s["study_id"] == study_id)
