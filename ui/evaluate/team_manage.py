"""The Team study tab's list of studies, and its Manage sub-tab for those who may create studies: the study's state
and every rater's progress, Close, Reopen, and Delete once the study's name is typed.

The list of studies every page shows is looked at again every few seconds (one query): a study created, closed,
reopened or deleted shows in every open page without a reload, and a deleted one leaves it (the newest is picked in
its place). The Manage sub-tab is shown only to those who may create studies (``ui.evaluate.team.Creators``); its
actions check the same again on the server.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from messages import Message
from studies import StudyError
from ui.evaluate.team import TeamStudies, in_thread, utc
from ui.i18n import fixed_text, t
from ui.messages import language_of, translator

MANAGE_NOTE = ("For the study picked above: each rater's votes, the pairs left for them and their last vote (UTC). "
               "**Close** it and raters get no more pairs (a vote on a pair already shown is refused), no more "
               "answers are made, and its leaderboard and exports stay; **Reopen** undoes that. **Delete** removes "
               "it with its answers, votes and files for good: export it first to keep them.")
RATER_COLUMNS = ["rater", "votes", "pairs left", "last vote"]
LIST_EVERY_S = 5.0
"""An open page looks at the list of studies this often (one query; the list is sent only when it changed)."""


@dataclass(frozen=True)
class ListParts:
    """What keeps a page's list of studies current: its timer and what the list shows (``fingerprint``). Made
    outside the sub-tabs: a sub-tab's components exist only once it is opened, and raters stay on Rate."""

    timer: gr.Timer
    seen: gr.State


def list_parts() -> ListParts:
    return ListParts(gr.Timer(LIST_EVERY_S), gr.State(""))


def build(teams: TeamStudies, study: gr.Dropdown, studies_list: gr.Dataframe, listed: ListParts) -> gr.Tab:
    """The Manage sub-tab (inside the tab's ``gr.Tabs``), acting on the study picked in ``study``; ``studies_list``
    (the New study sub-tab's table) and ``study``'s choices follow what it does, and ``listed`` keeps them current."""
    seen = listed.seen
    with gr.Tab(t("Manage"), id="team-manage", visible=teams.creators.anyone) as manage_tab:
        gr.Markdown(t(MANAGE_NOTE))
        status = gr.Markdown("", elem_id="team-manage-status")
        raters = gr.Dataframe(headers=RATER_COLUMNS, interactive=False, elem_id="team-raters", label=t("Raters"))
        with gr.Row():
            refresh_button = gr.Button(t("↻ Refresh"), elem_id="team-refresh")
            close_button = gr.Button(t("Close the study"), elem_id="team-close")
            reopen_button = gr.Button(t("Reopen the study"), elem_id="team-reopen")
        with gr.Row(equal_height=True):
            typed_name = gr.Textbox("", label=t("To delete the study, type its name"), max_lines=1, scale=3,
                                    elem_id="team-delete-name")
            delete_button = gr.Button(t("Delete the study"), variant="stop", scale=1, elem_id="team-delete")

    def changed(study_id: str | None, shown: str, http_request: gr.Request):
        """The page's list again, if a study was created, closed, reopened or deleted since it was made."""
        now = fingerprint(teams)
        if now == shown:
            return gr.skip(), gr.skip()
        known = [study for study, _name, _closed in teams.store.catalog()]
        return study_choices(teams, study_id if study_id in known else None, language_of(http_request)), now

    def manage(study_id: str | None, http_request: gr.Request):
        """The study's state and every rater's progress, for those who may manage it (others read why not)."""
        say = translator(http_request)
        headers = [fixed_text(c, language_of(http_request)) for c in RATER_COLUMNS]
        empty = ("", {"headers": headers, "data": []}, gr.Button(interactive=False), gr.Button(interactive=False))
        if not study_id:
            return empty
        try:
            the_study, ready, progress = teams.rater_progress(study_id, getattr(http_request, "username", None))
            _answers, votes, voters = teams.store.counts(study_id)
        except StudyError as err:
            return say(err.msg), *empty[1:]
        state = Message("team.state.open") if not the_study.closed else \
            Message("team.state.closed", {"when": utc(the_study.closed_at)})
        note = say(Message("team.manage_status", {"name": html.escape(the_study.name), "id": the_study.id,
                                                  "state": state, "votes": votes, "raters": voters, "ready": ready}))
        rows = [[r.rater, r.votes, r.left, "—" if r.last_vote_at is None else utc(r.last_vote_at)] for r in progress]
        return (note, {"headers": headers, "data": rows}, gr.Button(interactive=not the_study.closed),
                gr.Button(interactive=the_study.closed))

    def closer(closed: bool):
        async def close(study_id: str | None, http_request: gr.Request):
            """Close or reopen the study picked; the list of studies says so."""
            say = translator(http_request)
            try:
                if not study_id:
                    raise StudyError(Message("team.pick_study"))
                the_study = await in_thread(teams.close_study, study_id, getattr(http_request, "username", None),
                                            closed)
            except StudyError as err:
                raise gr.Error(say(err.msg)) from err
            if not closed:
                await teams.wake()  # the answers it still lacks
            gr.Info(say(Message("team.closed" if closed else "team.reopened", {"name": the_study.name})))
            return (study_choices(teams, study_id, language_of(http_request)), studies_table(teams, http_request),
                    fingerprint(teams))
        return close

    async def delete(study_id: str | None, typed: str, http_request: gr.Request):
        """Delete the study picked, once its name is typed; the newest study left is picked."""
        say = translator(http_request)
        try:
            if not study_id:
                raise StudyError(Message("team.pick_study"))
            gone = await in_thread(teams.delete_study, study_id, typed, getattr(http_request, "username", None))
        except StudyError as err:
            raise gr.Error(say(err.msg)) from err
        gr.Info(say(Message("team.deleted", {"name": gone.name, "id": gone.id})))
        return (study_choices(teams, language=language_of(http_request)), studies_table(teams, http_request),
                fingerprint(teams), "")

    # Wiring
    private = {"api_visibility": "private", "concurrency_limit": None}
    listed.timer.tick(changed, [study, seen], [study, seen], **private, show_progress="hidden")
    view = [status, raters, close_button, reopen_button]
    gr.on([manage_tab.select, refresh_button.click, study.change], manage, study, view, **private,
          show_progress="hidden")
    for button, closed in ((close_button, True), (reopen_button, False)):
        button.click(closer(closed), study, [study, studies_list, seen], **private).then(manage, study, view,
                                                                                         **private)
    delete_button.click(delete, [study, typed_name], [study, studies_list, seen, typed_name], **private).then(
        manage, study, view, **private)
    return manage_tab


def study_choices(teams: TeamStudies, value: str | None = None, language: str = "en") -> gr.Dropdown:
    """Every study, ``value`` picked (None: the newest); a closed one says so."""
    closed = f" · {fixed_text('closed', language)}"
    choices = [(f"{name} ({study_id}){closed if is_closed else ''}", study_id)
               for study_id, name, is_closed in teams.store.catalog()]
    return gr.Dropdown(choices=choices, value=value or (choices[0][1] if choices else None))


def fingerprint(teams: TeamStudies) -> str:
    """What the page's list of studies shows, as one string a page keeps to see when it changes."""
    return "|".join(f"{study_id}:{name}:{int(closed)}" for study_id, name, closed in teams.store.catalog())


def studies_table(teams: TeamStudies, http_request: gr.Request | None) -> dict:
    """The New study sub-tab's table of studies: answers made, votes, raters, open or closed, what waits."""
    language = language_of(http_request)
    columns = ["study", "name", "set-ups", "prompts", "answers", "votes", "raters", "state", "waiting"]
    rows = [[s["study_id"], s["name"], ", ".join(s["setups"]), s["prompts"], f"{s['answers']} / {s['answers_total']}",
             s["votes"], s["raters"], fixed_text("closed" if s["closed"] else "open", language), s["waiting"]]
            for s in teams.summaries()]
    return {"headers": [fixed_text(c, language) for c in columns], "data": rows}
