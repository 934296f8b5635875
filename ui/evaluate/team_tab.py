"""The Team study tab: raters judge pairs of answers blind, the leaderboard pools their votes, admins create studies
and manage them (``ui.evaluate.team_manage``: close, reopen, delete, every rater's progress).

Layout first (the study and the rater's name above four sub-tabs: Rate, Leaderboard, New study, and Manage for those
who may create studies), then the handlers, then the wiring. The page's events are private: scripts and agents use
the typed ``study_*`` endpoints and MCP tools (``ui.tools.team``), which do the same through ``ui.evaluate.team``.
The pair shown is kept on the server (``gr.State``), so the page holds nothing about its set-ups until the vote.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

import gradio as gr
import pandas as pd

from messages import Message
from studies import StudyError
from ui.evaluate import team_manage
from ui.evaluate.setup import RANGES
from ui.evaluate.sheet import SheetError
from ui.evaluate.team import CHOICE_LABELS, Revealed, Shown, TeamStudies, board_record, in_thread
from ui.i18n import fixed_text, t
from ui.messages import language_of, translator
from turns.voice import default_speaker

INTRO = ("Judge answers blind, with your team: pick a study, type your name (your login, if the app has one) and "
         "press **Start rating**. Each pair is one prompt answered by two set-ups whose names are hidden until you "
         "vote; the leaderboard pools everyone's votes. Your progress is kept under your name, in any browser.")
NEW_STUDY_NOTE = ("A study answers a prompt sheet (the Evaluate tab's format) once with every set-up, in the "
                  "background between chat turns; raters can start as soon as a prompt has all its answers. "
                  "One row per set-up; a seed of -1 is random.")
OFF_NOTE = ("Team studies (blind votes from many raters, pooled into a leaderboard) are kept on disk: start the app "
            "with `--data-dir DIR` to offer them.")
NO_CREATORS_NOTE = ("Creating and exporting studies is off: others can reach this app and it names no admin. "
                    "Start it with `--auth USER:PASSWORD --admin USER` to let that login create and export studies "
                    "(raters need no admin).")
SETUP_COLUMNS = ["label", "engine", "speaker", "system_prompt", "temperature", "top_p", "top_k", "max_new_tokens",
                 "seed", "speech"]
STANDING_COLUMNS = ["rank", "set-up", "score", "95% interval", "votes", "wins", "losses", "ties", "both bad",
                    "win rate"]
BOARD_EVERY_S = 5.0
"""An open leaderboard looks for new votes this often (it is computed again only when there are some)."""
CHOICE_MESSAGES = {"A": "team.choice.a", "B": "team.choice.b", "tie": "team.choice.tie",
                   "both_bad": "team.choice.both_bad"}


@dataclass(frozen=True)
class TeamParts:
    """What the page's load fills in (``ui.build_demo`` wires it): the studies, the rater's name."""

    opened: Callable
    wake: Callable
    inputs: list
    outputs: list


def build(teams: TeamStudies, speakers: tuple[str, ...], random_weights: bool) -> TeamParts:
    gr.Markdown(t(INTRO))
    with gr.Row(equal_height=True):
        study = gr.Dropdown([], label=t("Study"), elem_id="team-study", scale=3)
        rater_name = gr.Textbox("", label=t("Your name"), elem_id="team-rater", scale=2, max_lines=1)
        start_button = gr.Button(t("Start rating"), variant="primary", elem_id="team-start", scale=1)
    remembered = gr.BrowserState("", storage_key="qwen3-omni-team-rater")
    shown_pair = gr.State("")  # the pair's id; the page gets its answers only, never its set-ups
    board_shown = gr.State("")  # which study's board, at how many votes, the page shows
    listed = team_manage.list_parts()  # keeps the list of studies current
    with gr.Tabs():
        with gr.Tab(t("Rate"), id="team-rate"):
            progress = gr.Markdown("", elem_id="team-progress")
            prompt = gr.Markdown("", elem_id="team-prompt")
            media = gr.File(label=t("Media"), file_count="multiple", interactive=False, visible=False)
            with gr.Row():
                with gr.Column():
                    answer_a = gr.Markdown("", elem_id="team-answer-a")
                    audio_a = gr.Audio(label=t("Speech A"), type="filepath", interactive=False, visible=False)
                with gr.Column():
                    answer_b = gr.Markdown("", elem_id="team-answer-b")
                    audio_b = gr.Audio(label=t("Speech B"), type="filepath", interactive=False, visible=False)
            comment = gr.Textbox("", label=t("Comment (optional)"), elem_id="team-comment", max_lines=3)
            with gr.Row():
                vote_buttons = {choice: gr.Button(t(label), interactive=False, elem_id=f"team-vote-{choice}")
                                for choice, label in CHOICE_LABELS.items()}
            reveal = gr.Markdown("", elem_id="team-reveal")
            next_button = gr.Button(t("Next pair →"), visible=False, elem_id="team-next")
        with gr.Tab(t("Leaderboard"), id="team-board"):
            board_note = gr.Markdown("", elem_id="team-board-note")
            standings = gr.Dataframe(headers=STANDING_COLUMNS, interactive=False, elem_id="team-standings",
                                     label=t("Standings (Bradley–Terry, Elo scale)"))
            with gr.Row():
                rates_plot = gr.BarPlot(None, x="set-up", y="win rate", y_lim=[0, 1], label=t("Win rate"),
                                        elem_id="team-win-rates")
                history_plot = gr.LinePlot(None, x="votes", y="score", color="set-up",
                                           label=t("Score as the votes came in"), elem_id="team-history")
            matrix = gr.Dataframe(interactive=False, elem_id="team-matrix",
                                  label=t("How often the row's set-up beat the column's"))
            timer = gr.Timer(BOARD_EVERY_S)
        with gr.Tab(t("New study"), id="team-new"):
            gr.Markdown(t(NEW_STUDY_NOTE))
            if teams.creators.nobody:
                gr.Markdown(t(NO_CREATORS_NOTE), elem_id="team-no-creators")
            new_name = gr.Textbox("", label=t("Study name"), elem_id="team-new-name", max_lines=1)
            new_files = gr.File(label=t("Prompt sheet and its media (files or a .zip)"), file_count="multiple",
                                file_types=[".csv", ".jsonl", ".zip", "image", "audio", "video"], type="filepath",
                                elem_id="team-new-files")
            new_setups = gr.Dataframe(_default_setups(speakers, random_weights), headers=SETUP_COLUMNS,
                                      datatype=["str", "str", "str", "str", "number", "number", "number", "number",
                                                "number", "bool"], type="array", interactive=True,
                                      label=t("Set-ups"), elem_id="team-new-setups")
            create_button = gr.Button(t("Create the study"), variant="primary", elem_id="team-create")
            studies_table = gr.Dataframe(interactive=False, elem_id="team-studies", label=t("Studies"))
            export_button = gr.Button(t("⬇ Export"), elem_id="team-export")
            exported = gr.File(label=t("Votes and leaderboard (CSV, JSONL), the whole study, a Parquet dataset (zip)"),
                               file_count="multiple", interactive=False, elem_id="team-exported")
        manage_tab = team_manage.build(teams, study, studies_table, listed)

    def opened(name: str, http_request: gr.Request):
        """A page opens: the studies, the rater's name (their login, or the one this browser remembers), and
        Create, Export and Manage for those who may."""
        login = getattr(http_request, "username", None)
        allowed = teams.may_create(login)
        return (team_manage.study_choices(teams, language=language_of(http_request)),
                gr.Textbox(value=login or name, interactive=not login), team_manage.studies_table(teams, http_request),
                gr.Button(interactive=allowed), gr.Button(interactive=allowed), gr.Tab(visible=allowed),
                team_manage.fingerprint(teams))

    def show(study_id: str | None, name: str, http_request: gr.Request):
        """The rater's pair to judge now (the same one until they vote, in any browser)."""
        say = translator(http_request)
        try:
            if not study_id:
                raise StudyError(Message("team.pick_study"))
            rater = teams.rater(name, getattr(http_request, "username", None))
            shown = teams.next_pair(study_id, rater)
        except StudyError as err:
            raise gr.Error(say(err.msg)) from err
        if shown is None:
            done, total = teams.progress(study_id, rater)
            return ("", rater, say(Message("team.all_judged", {"done": done, "total": total})), "",
                    gr.File(value=None, visible=False), "", gr.Audio(value=None, visible=False), "",
                    gr.Audio(value=None, visible=False), "", *_voting(False), gr.Button(visible=False))
        return (shown.pair_id, rater, _progress(shown.done, shown.total, say), _prompt_text(shown, say),
                gr.File(value=list(shown.media) or None, visible=bool(shown.media)),
                _answer("A", shown.answer_a, say), gr.Audio(value=shown.audio_a, visible=bool(shown.audio_a)),
                _answer("B", shown.answer_b, say), gr.Audio(value=shown.audio_b, visible=bool(shown.audio_b)),
                "", *_voting(True), gr.Button(visible=False))

    def voter(choice: str):
        def cast(pair_id: str, name: str, comment_text: str, study_id: str | None, http_request: gr.Request):
            say = translator(http_request)
            if not pair_id:
                raise gr.Error(say(Message("team.no_pair_shown")))
            try:
                revealed = teams.vote(pair_id, teams.rater(name, getattr(http_request, "username", None)), choice,
                                      comment_text or "")
            except StudyError as err:
                if study_id and study_id not in [study for study, _name, _closed in teams.store.catalog()]:
                    raise gr.Error(say(Message("team.study_gone"))) from err  # its pair went with it
                raise gr.Error(say(err.msg)) from err
            return ("", _progress(revealed.done, revealed.total, say), _reveal(revealed, say), "",
                    *_voting(False), gr.Button(visible=True))
        return cast

    def board(study_id: str | None, seen: str, http_request: gr.Request):
        """The leaderboard, or nothing new when the page shows this study's board at this many votes already."""
        say = translator(http_request)
        if not study_id:
            return "", "", None, None, None, None
        try:
            the_study, the_board, history = teams.leaderboard(study_id)
        except StudyError:
            return "", "", None, None, None, None
        shown_now = f"{study_id}:{the_board.votes}:{language_of(http_request)}"
        if shown_now == seen:
            return (gr.skip(),) * 6
        record = board_record(the_study, the_board)
        rows = [[s["rank"], s["setup"], s["score"], _interval(s), s["votes"], s["wins"], s["losses"], s["ties"],
                 s["both_bad"], s["win_rate"]] for s in record["standings"]]
        language = language_of(http_request)
        labels = [s.label for s in the_study.setups]
        matrix_rows = [[labels[i], *["—" if i == j or rate is None else f"{rate:.0%}" for j, rate in enumerate(row)]]
                       for i, row in enumerate(the_board.win_rates)]
        note = say(Message("team.board_note", {
            "votes": the_board.votes, "raters": the_board.raters,
            "agreement": "—" if the_board.agreement is None else f"{the_board.agreement:.0%}",
            "alpha": "—" if the_board.alpha is None else f"{the_board.alpha:.2f}"}))
        rates = pd.DataFrame({"set-up": [s["setup"] for s in record["standings"]],
                              "win rate": [s["win_rate"] or 0.0 for s in record["standings"]]})
        moves = pd.DataFrame([(k, labels[i], score) for k, i, score in history], columns=["votes", "set-up", "score"])
        headers = [fixed_text(c, language) for c in STANDING_COLUMNS]
        return (shown_now, note, {"headers": headers, "data": rows}, rates, moves,
                {"headers": [""] + labels, "data": matrix_rows})

    async def create(name: str, files: list[str] | None, table, http_request: gr.Request):
        say = translator(http_request)
        try:
            made = await in_thread(teams.create, name, list(files or []), _setups_from(table),
                                   getattr(http_request, "username", None))
        except (StudyError, SheetError) as err:
            raise gr.Error(say(err.msg)) from err
        await teams.wake()
        gr.Info(say(Message("team.created", {"name": made.name, "id": made.id})))
        return (team_manage.study_choices(teams, made.id, language_of(http_request)),
                team_manage.studies_table(teams, http_request), team_manage.fingerprint(teams))

    def export(study_id: str | None, http_request: gr.Request):
        say = translator(http_request)
        try:
            if not study_id:
                raise StudyError(Message("team.pick_study"))
            return teams.export(study_id, getattr(http_request, "username", None))
        except StudyError as err:
            raise gr.Error(say(err.msg)) from err

    async def wake():
        await teams.wake()  # a study cut short by a restart goes on as soon as a page opens

    # Wiring
    private = {"api_visibility": "private"}
    pair_view = [shown_pair, remembered, progress, prompt, media, answer_a, audio_a, answer_b, audio_b, reveal,
                 *vote_buttons.values(), next_button]
    board_view = [board_shown, board_note, standings, rates_plot, history_plot, matrix]
    gr.on([start_button.click, next_button.click], show, [study, rater_name], pair_view, **private,
          concurrency_limit=None).then(board, [study, board_shown], board_view, **private, concurrency_limit=None)
    for choice, button in vote_buttons.items():
        button.click(voter(choice), [shown_pair, rater_name, comment, study], [shown_pair, progress, reveal, comment,
                                                                                *vote_buttons.values(), next_button],
                     **private, concurrency_limit=None).then(board, [study, board_shown], board_view, **private,
                                                             concurrency_limit=None)
    study.change(board, [study, board_shown], board_view, **private, concurrency_limit=None)
    timer.tick(board, [study, board_shown], board_view, **private, concurrency_limit=None, show_progress="hidden")
    create_button.click(create, [new_name, new_files, new_setups], [study, studies_table, listed.seen],
                        **private, concurrency_limit=None)
    export_button.click(export, study, exported, **private, concurrency_limit=None)
    return TeamParts(opened, wake, [remembered], [study, rater_name, studies_table, create_button, export_button,
                                                  manage_tab, listed.seen])


def _default_setups(speakers: tuple[str, ...], random_weights: bool) -> list[list]:
    voices = [default_speaker(speakers)] + [v for v in speakers if v != default_speaker(speakers)]
    tokens = 64 if random_weights else 1024
    return [[f"Set-up {k + 1}", "app", voices[k % len(voices)] if voices[0] else "", "", temperature, 0.8, 20,
             tokens, 0, bool(speakers)] for k, temperature in enumerate((0.7, 0.7, 0.0))]


def _setups_from(table) -> list[dict]:
    """The set-ups table's rows as the set-ups ``TeamStudies.create`` takes (blank rows left out)."""
    rows = table.get("data", []) if isinstance(table, dict) else (table or [])
    setups = []
    for row in rows:
        values = dict(zip(SETUP_COLUMNS, row))
        if not any(str(v).strip() for v in values.values() if v is not None):
            continue
        for key in ("temperature", "top_p", "top_k", "max_new_tokens", "seed"):
            values[key] = _number(values.get(key), whole=RANGES[key].whole)
        if values["seed"] is not None and values["seed"] < 0:
            values["seed"] = None
        values["speech"] = values.get("speech") in (True, "true", "True", 1, "1")
        setups.append(values)
    return setups


def _number(value, whole: bool):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value  # check_setup names it
    return int(number) if whole and number == int(number) else number


def _voting(active: bool) -> list:
    return [gr.Button(interactive=active) for _ in CHOICE_LABELS]


def _progress(done: int, total: int, say) -> str:
    return say(Message("team.progress", {"done": done, "total": total}))


def _prompt_text(shown: Shown, say) -> str:
    text = f"**{html.escape(shown.prompt_id)}** · {html.escape(shown.prompt) or '—'}"
    if shown.reference:
        text += "\n\n" + say(Message("evaluate.reference")) + f" {html.escape(shown.reference)}"
    return text


def _answer(side: str, text: str, say) -> str:
    return f"**{side}** " + (html.escape(text) or say(Message("reply.empty")))


def _reveal(revealed: Revealed, say) -> str:
    code = "team.revealed_again" if revealed.already else "team.revealed"
    return say(Message(code, {"a": html.escape(revealed.setup_a), "b": html.escape(revealed.setup_b),
                              "choice": Message(CHOICE_MESSAGES[revealed.choice])}))


def _interval(standing: dict) -> str:
    return "—" if standing["ci_low"] is None else f"{standing['ci_low']:.0f} – {standing['ci_high']:.0f}"
