"""The Evaluate tab: a prompt set in, every answer and its speech out, two set-ups side by side, rated, exported.

Layout first, then the handlers, then the wiring. The run lives in a per-session ``EvalRun`` (``gr.State``).
A run is one ``/evaluate`` event on its own concurrency id; each answer is a separate engine request, so
between answers the engine serves people chatting at the same time (see ``ui.evaluate.runner``).
"""

from __future__ import annotations

import asyncio
import html
import tempfile
from pathlib import Path

import gradio as gr

from backends.base import Backend
from messages import Message
from ui import examples
from ui.evaluate.importing import ResultsError, import_run
from ui.evaluate.results import RATINGS_A, RATINGS_AB, EvalRow, EvalRun, write_exports
from ui.evaluate.runner import answer_row
from ui.evaluate.setup import RANGES, Setup, SetupError, check_setup, unavailable
from ui.evaluate.sheet import SheetError
from ui.evaluate.start import start
from ui.i18n import fixed_text, t
from ui.messages import language_of, to_english, translator
from ui.scratch import session_folder

EVALUATE_QUEUE = "evaluate"
"""Runs wait in their own queue: one at a time per engine slot, never ahead of a chat turn."""
SESSION_TTL_S = 24 * 3600
TABLE_COLUMNS = ["id", "prompt", "media", "answer A", "answer B", "timings A", "timings B", "rating", "status"]
INTRO = ("Run a prompt set through the model and judge the answers: a **.csv** or **.jsonl** sheet (columns `id`, "
         "`prompt`, `media`, and optionally `system_prompt`, `reference`) with its media files or a .zip of them. "
         "Answers fill the table as they finish; pick a row to listen and rate it.")
RESUME_NOTE = ("▶ Run after ⏹ Stop or an import answers only the rows left, with the run's own set-ups, and finds a "
               "row's missing files among those added since; a different sheet starts a new run.")
IMPORT_QUEUE = "evaluate-import"
IMPORTS_AT_ONCE = 2
"""Imports read and check a file of up to 128 MB each: a few at a time, not one per request thread."""


def setup_controls(side: str, engines: list[tuple[str, str]], speakers: tuple[str, ...], random_weights: bool):
    """One set-up's controls, in the order ``Setup`` takes them. B starts on another voice (and the second
    engine, when there is one), so the two columns differ from the start."""
    other = side == "B"
    engine = gr.Dropdown(engines, value=engines[min(int(other), len(engines) - 1)][1], label=t(f"Engine {side}"),
                         interactive=len(engines) > 1)
    voices = [v for v in speakers if v != "ethan"] if other else (["ethan"] if "ethan" in speakers else [])
    speaker = gr.Dropdown(list(speakers) or [""], value=(voices or list(speakers) or [""])[0],
                          label=t(f"Speaker {side}"), visible=bool(speakers))
    system_prompt = gr.Textbox("", label=t("System prompt"), lines=2, placeholder=t("(none)"))
    default = Setup(max_new_tokens=64) if random_weights else Setup()

    def slider(name: str, label: str) -> gr.Slider:
        bounds = RANGES[name]
        return gr.Slider(bounds.low, bounds.high, getattr(default, name), step=bounds.step, label=t(label),
                         elem_id=f"eval-{name}-{side.lower()}")

    with gr.Row():
        temperature = slider("temperature", "Temperature (0 = greedy)")
        top_p = slider("top_p", "Top-p")
        top_k = slider("top_k", "Top-k")
    with gr.Row():
        max_tokens = slider("max_new_tokens", "Max new tokens")
        seed = gr.Number(0, label=t(f"Seed {side}"), precision=0, info=t("-1 = random"), minimum=-1,
                         maximum=RANGES["seed"].high, elem_id=f"eval-seed-{side.lower()}")
        speech = gr.Checkbox(bool(speakers), label=t("Speak the reply"), interactive=bool(speakers))
    return [engine, speaker, system_prompt, temperature, top_p, top_k, max_tokens, seed, speech]


def make_setup(engine, speaker, system_prompt, temperature, top_p, top_k, max_tokens, seed, speech,
               side: str = "A") -> Setup:
    """The set-up the controls show; ``SetupError`` for a value they don't offer (a tool call can send any)."""
    random_seed = seed is None or (isinstance(seed, (int, float)) and seed < 0)
    return check_setup({"engine": engine or "app", "speaker": speaker or None, "system_prompt": system_prompt or "",
                        "temperature": temperature, "top_p": top_p, "top_k": top_k, "max_new_tokens": max_tokens,
                        "seed": None if random_seed else seed, "speech": bool(speech)}, f"setup_{side.lower()}")


def build(backend: Backend, compare_with: Backend | None = None) -> gr.Dataframe:
    """The tab's layout and events; returns its results table, whose headers the page's load translates
    (``table_headers``)."""
    info = backend.info
    engines = {"app": backend, **({"compare": compare_with} if compare_with else {})}
    engine_choices = [(f"{name_of(b)}", key) for key, b in engines.items()]
    session = gr.State(EvalRun(), time_to_live=SESSION_TTL_S, delete_callback=EvalRun.close)

    gr.Markdown(t(INTRO))
    gr.Markdown(t(RESUME_NOTE))
    with gr.Row():
        sheet_files = gr.File(label=t("Prompt sheet and its media (files or a .zip)"), file_count="multiple",
                              file_types=[".csv", ".jsonl", ".zip", "image", "audio", "video"], type="filepath",
                              elem_id="eval-files", scale=3)
        with gr.Column(scale=1):
            example_button = gr.Button(t("Load the example set"), size="sm", visible=examples.available())
            import_button = gr.UploadButton(t("⬆ Import results"), file_types=[".zip", ".jsonl"], size="sm")
    with gr.Row():
        with gr.Column(variant="panel"):
            gr.Markdown(t("**Set-up A**"))
            controls_a = setup_controls("A", engine_choices, info.speakers, info.random_weights)
        with gr.Column(variant="panel"):
            use_b = gr.Checkbox(True, label=t("Set-up B (compare two set-ups)"), elem_id="eval-use-b")
            controls_b = setup_controls("B", engine_choices, info.speakers, info.random_weights)
    with gr.Row():
        run_button = gr.Button(t("▶ Run"), variant="primary", elem_id="eval-run")
        stop_button = gr.Button(t("⏹ Stop"), variant="stop")
        new_button = gr.Button(t("🗑 New run"))
    progress = gr.HTML("", elem_id="eval-progress")
    status = gr.Markdown("", elem_id="eval-status")
    table = gr.Dataframe(headers=TABLE_COLUMNS, label=t("Results"), wrap=True, interactive=False,
                         elem_id="eval-table", max_height=420,
                         column_widths=["8%", "14%", "9%", "19%", "19%", "9%", "9%", "5%", "8%"])
    with gr.Group():
        row_choice = gr.Dropdown([], label=t("Row"), elem_id="eval-row", allow_custom_value=False)
        row_prompt = gr.Markdown("", elem_id="eval-row-prompt")
        row_media = gr.File(label=t("Media"), file_count="multiple", interactive=False, visible=False)
        with gr.Row():
            with gr.Column():
                answer_a = gr.Markdown("", elem_id="eval-answer-a")
                audio_a = gr.Audio(label=t("Speech A"), type="filepath", interactive=False, visible=False)
            with gr.Column():
                answer_b = gr.Markdown("", elem_id="eval-answer-b")
                audio_b = gr.Audio(label=t("Speech B"), type="filepath", interactive=False, visible=False)
        with gr.Row():
            rating = gr.Radio([(t(r), r) for r in RATINGS_AB], label=t("Rating"), elem_id="eval-rating")
            comment = gr.Textbox("", label=t("Comment"), lines=1, elem_id="eval-comment")
    with gr.Row():
        export_button = gr.Button(t("⬇ Export"), elem_id="eval-export")
    exported = gr.File(label=t("Results (CSV, JSONL, zip with the speech)"), file_count="multiple",
                       interactive=False, elem_id="eval-exported")

    async def evaluate(files: list[str] | None, run: EvalRun, engine_a, speaker_a, system_a, temperature_a,
                       top_p_a, top_k_a, max_tokens_a, seed_a, speech_a, use_b: bool, engine_b, speaker_b,
                       system_b, temperature_b, top_p_b, top_k_b, max_tokens_b, seed_b, speech_b,
                       http_request: gr.Request):
        """Run every row not done yet: the rest of a stopped or imported run, or a new run from the sheet
        (``ui.evaluate.start`` says which)."""
        say = translator(http_request)
        try:
            setup_a = make_setup(engine_a, speaker_a, system_a, temperature_a, top_p_a, top_k_a, max_tokens_a,
                                 seed_a, speech_a, "A")
            setup_b = make_setup(engine_b, speaker_b, system_b, temperature_b, top_p_b, top_k_b, max_tokens_b,
                                 seed_b, speech_b, "B") if use_b else None
            notes = await asyncio.to_thread(start, run, list(files or []), setup_a, setup_b, engines)
        except (SheetError, SetupError) as err:
            raise gr.Error(say(err.msg)) from err
        for side, setup in (("A", run.setup_a), ("B", run.setup_b)):
            if setup is not None:
                chosen = engines.get(setup.engine) or backend
                run.engines[side] = {"model": chosen.info.model, "backend": chosen.info.backend}

        def status(message: Message) -> str:  # the run's notes stay in view while its rows are answered
            return " ".join(say(note) for note in [*notes, message])

        yield _view(run, http_request, status(Message("evaluate.running")))
        for row in run.pending():
            if row.prompt.problem:
                continue
            yield _view(run, http_request, status(Message("evaluate.answering", {"row": row.prompt.id})))
            await answer_row(run, row, engines)
            yield _view(run, http_request, status(Message("evaluate.row_done", {"row": row.prompt.id})))
        yield _view(run, http_request, status(Message("evaluate.all_done")))

    def stopped(run: EvalRun, http_request: gr.Request):
        say = translator(http_request)
        return _view(run, http_request, say(Message("evaluate.stopped", {"count": len(run.pending())})))

    def new_run(run: EvalRun, http_request: gr.Request):
        run.close()
        fresh = EvalRun()
        return fresh, _table(fresh, http_request), "", translator(http_request)(Message("ui.ready")), \
            gr.Dropdown(choices=[], value=None)

    def show_row(run: EvalRun, row_id: str | None, http_request: gr.Request):
        say = translator(http_request)
        row = next((r for r in run.rows if r.prompt.id == row_id), None)
        if row is None:
            return "", gr.File(visible=False), "", gr.Audio(visible=False), "", gr.Audio(visible=False), \
                gr.Radio(value=None), ""
        p = row.prompt
        prompt = f"**{html.escape(p.id)}** · {html.escape(p.text) or '—'}"
        if p.reference:
            prompt += "\n\n" + say(Message("evaluate.reference")) + f" {html.escape(p.reference)}"
        if p.problem:
            prompt += f"\n\n⚠️ {html.escape(say(p.issue or p.problem))}"
        ratings = RATINGS_AB if run.two_sides else RATINGS_A
        return (prompt, gr.File(value=list(p.paths) or None, visible=bool(p.paths)),
                _answer_text("A", row.a, say), gr.Audio(value=row.a.audio if row.a else None,
                                                        visible=bool(row.a and row.a.audio)),
                _answer_text("B", row.b, say) if run.two_sides else "",
                gr.Audio(value=row.b.audio if row.b else None, visible=bool(row.b and row.b.audio)),
                gr.Radio(choices=[(fixed_text(r, language_of(http_request)), r) for r in ratings],
                         value=row.rating or None), row.comment)

    def rate(run: EvalRun, row_id: str | None, rating_value: str | None, comment_value: str,
             http_request: gr.Request):
        """Kept as you go: every change of the rating or the comment is in the run (and its exports) at once."""
        row = next((r for r in run.rows if r.prompt.id == row_id), None)
        if row is not None:
            row.rating, row.comment = rating_value or "", comment_value or ""
        return run, _table(run, http_request)

    def export(run: EvalRun, http_request: gr.Request):
        if not run.rows:
            raise gr.Error(translator(http_request)(Message("evaluate.nothing_to_export")))
        return write_exports(run, Path(tempfile.mkdtemp(dir=_folder(run), prefix="export-")))

    def import_(file: str | None, run: EvalRun, http_request: gr.Request):
        say = translator(http_request)
        if not file:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            imported = import_run(file, Path(session_folder("omni-eval-")))  # a refused one leaves no folder
        except ResultsError as err:
            raise gr.Error(say(Message("evaluate.cant_import", {"cause": err.msg}))) from err
        run.close()
        notes = [Message("evaluate.imported", {"count": len(imported.rows), "left": len(imported.pending())}),
                 *imported.notes]
        for side, setup in (("A", imported.setup_a), ("B", imported.setup_b)):
            if setup is not None and (problem := unavailable(setup, side, engines)):
                notes.append(Message("evaluate.cant_run_here", {"reason": problem}))
        return imported, *_view(imported, http_request, " ".join(say(note) for note in notes))[1:]

    # Wiring: the run streams its rows; Stop cancels it at once and keeps what is done.
    view = [session, table, progress, status, row_choice]
    run_event = run_button.click(evaluate, [sheet_files, session, *controls_a, use_b, *controls_b], view,
                                 api_name="evaluate", concurrency_id=EVALUATE_QUEUE,
                                 concurrency_limit=info.max_concurrency)
    stop_button.click(stopped, session, view, cancels=[run_event], api_name="evaluate_stop", queue=False)
    new_button.click(new_run, session, view, cancels=[run_event], api_visibility="private", queue=False)
    example_button.click(examples.evaluation_files, None, sheet_files, api_visibility="private", queue=False)
    row_outputs = [row_prompt, row_media, answer_a, audio_a, answer_b, audio_b, rating, comment]
    row_choice.change(show_row, [session, row_choice], row_outputs, api_visibility="private", queue=False)
    table.select(_selected_id, session, row_choice, api_visibility="private", queue=False)
    rating.input(rate, [session, row_choice, rating, comment], [session, table], api_name="evaluate_rate",
                 queue=False)
    # A comment is saved as typed, and again when the box is left (Gradio may send typing late, or not at all
    # when a script fills the box); the row picked at that moment is the one it belongs to.
    gr.on([comment.input, comment.blur, comment.submit], rate, [session, row_choice, rating, comment],
          [session, table], api_visibility="private", queue=False)
    export_button.click(export, session, exported, api_name="evaluate_export", queue=False)
    import_button.upload(import_, [import_button, session], view, api_name="evaluate_import",
                         concurrency_id=IMPORT_QUEUE, concurrency_limit=IMPORTS_AT_ONCE)
    return table


def name_of(backend: Backend) -> str:
    return f"{backend.info.model} ({backend.info.backend})"


def _folder(run: EvalRun) -> str:
    if run.folder is None:
        run.folder = session_folder("omni-eval-")
    return run.folder


def _selected_id(run: EvalRun, event: gr.SelectData):
    index = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
    return run.rows[index].prompt.id if 0 <= index < len(run.rows) else gr.skip()


def _view(run: EvalRun, http_request: gr.Request | None, note: str):
    done = sum(row.done(run.two_sides) for row in run.rows)
    bar = (f'<progress max="{len(run.rows)}" value="{done}" style="width:100%"></progress>'
           f"<div>{done} / {len(run.rows)}</div>") if run.rows else ""
    ids = [row.prompt.id for row in run.rows]
    return run, _table(run, http_request), bar, note, gr.Dropdown(choices=ids)


def table_headers(http_request: gr.Request):
    """The results table's column names in the user's language (on the page's load: a table's headers don't
    take gr.I18n)."""
    return _table(EvalRun(), http_request)  # a page that opens has no run yet


def _table(run: EvalRun, http_request: gr.Request | None) -> dict:
    say = translator(http_request)
    rows = [[row.prompt.id, row.prompt.text, "; ".join(row.prompt.media),
             row.a.text if row.a else "", row.b.text if row.b else "",
             _timings(row.a, say), _timings(row.b, say), row.rating, _row_status(run, row, say)] for row in run.rows]
    headers = [fixed_text(c, language_of(http_request)) for c in TABLE_COLUMNS]
    return {"headers": headers, "data": rows}


def _row_status(run: EvalRun, row: EvalRow, say) -> str:
    if row.prompt.problem:
        return "⚠️ " + say(Message("evaluate.row_problem", {"row": row.prompt.row,
                                                            "problem": row.prompt.issue or row.prompt.problem}))
    errors = [f"{side}: {say(answer.error_message or answer.error)}"
              for side, answer in (("A", row.a), ("B", row.b)) if answer and answer.error]
    if errors:
        return "⚠️ " + "; ".join(errors)
    cut = [side for side, answer in (("A", row.a), ("B", row.b)) if answer and answer.finish_reason == "length"]
    if not row.done(run.two_sides):
        return "…"
    return "✓" + (" (✂️ " + say(Message("evaluate.cut", {"sides": ", ".join(cut)})) + ")" if cut else "")


def _timings(answer, say=to_english) -> str:
    if answer is None:
        return ""
    parts = []
    if answer.first_token_s is not None:
        parts.append(say(Message("metrics.first_token", {"seconds": f"{answer.first_token_s:.2f}"})))
    if answer.first_audio_s is not None:
        parts.append(say(Message("metrics.first_audio", {"seconds": f"{answer.first_audio_s:.2f}"})))
    if answer.tokens_per_s is not None:
        parts.append(say(Message("metrics.tokens_per_s", {"speed": f"{answer.tokens_per_s:.0f}"})))
    return " · ".join(parts)


def _answer_text(side: str, answer, say) -> str:
    if answer is None:
        return f"**{side}** " + say(Message("evaluate.not_answered"))
    text = html.escape(answer.text) or say(Message("reply.empty"))
    error = f"\n\n⚠️ {html.escape(say(answer.error_message or answer.error))}" if answer.error else ""
    return f"**{side}** {text}" + error
