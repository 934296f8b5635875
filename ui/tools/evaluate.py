"""The Evaluate tools: a run that an agent names by its id, through the Evaluate tab's own handlers (``/evaluate``,
``/evaluate_rate``, ``/evaluate_export``, ``/evaluate_import``)."""

# No `from __future__ import annotations`: gr.api reads a tool's outputs from its return annotation as it
# stands (a string would be one output).

import json

import gradio as gr

from backends.base import Backend
from messages import Message
from ui.evaluate.results import RATINGS_A, RATINGS_AB, EvalRun
from ui.evaluate.tab import EVALUATE_QUEUE, SESSION_TTL_S, TABLE_COLUMNS
from ui.messages import translator
from ui.tools.common import File, Store, ToolSet, choices, file_out, path_of, rows
from turns.voice import default_speaker

RUNS = 32
"""Evaluation runs kept at once; beyond it the least recently used one goes."""


def register(tools: ToolSet, backend: Backend, compare_with: Backend | None = None) -> None:
    info = backend.info
    runs: Store[EvalRun] = Store(EvalRun.close, SESSION_TTL_S, RUNS, "tools.no_run")
    voice_a = default_speaker(info.speakers)
    voice_b = next((v for v in info.speakers if v != voice_a), voice_a)
    longest = 64 if info.random_weights else 1024

    def results(view) -> str:
        """The run's table (the tab's columns, one record per row) as JSON."""
        _run, table, _bar, _status, _rows = view
        return json.dumps(rows(TABLE_COLUMNS, table["data"]), ensure_ascii=False)

    async def evaluate(files: list[File] | None = None, run_id: str = "", speaker_a: str = voice_a,
                       system_prompt_a: str = "", temperature_a: float = 0.7, top_p_a: float = 0.8, top_k_a: int = 20,
                       max_tokens_a: int = longest, seed_a: int = 0, speak_a: bool = False, engine_a: str = "app",
                       compare_b: bool = False, speaker_b: str = voice_b, system_prompt_b: str = "",
                       temperature_b: float = 0.7, top_p_b: float = 0.8, top_k_b: int = 20,
                       max_tokens_b: int = longest, seed_b: int = 0, speak_b: bool = False, engine_b: str = "app",
                       http_request: gr.Request = None) -> tuple[str, str, str]:
        """Run a prompt set through the model and collect every answer: a .csv or .jsonl sheet (columns id, prompt,
        media, and optionally system_prompt, reference) with the media files it names, or a .zip of them. Set-up A
        answers each row; with compare_b, set-up B answers it too, side by side. With the run_id of a stopped or
        imported run, only the rows not answered yet are answered.

        Args:
            files: the sheet and its media (or a .zip of them), each a URL or a data: URI; with run_id: media it lacks
            run_id: the id an earlier evaluate or evaluate_import returned, to finish that run; empty: a new run
            speaker_a: A's voice
            system_prompt_a: A's system prompt (a row's own system_prompt wins)
            temperature_a: A's sampling temperature; 0 is greedy
            top_p_a: A's nucleus sampling
            top_k_a: A's top-k sampling
            max_tokens_a: A's longest answer, in tokens
            seed_a: A's seed (-1: random)
            speak_a: A also answers in speech (in the export's zip)
            engine_a: the engine A answers with: app, or compare (the app's second engine, if it has one)
            compare_b: answer with set-up B too
            speaker_b: B's voice
            system_prompt_b: B's system prompt
            temperature_b: B's sampling temperature
            top_p_b: B's nucleus sampling
            top_k_b: B's top-k sampling
            max_tokens_b: B's longest answer, in tokens
            seed_b: B's seed (-1: random)
            speak_b: B also answers in speech
            engine_b: the engine B answers with
        Returns:
            results: JSON, a record per row: id, prompt, media, answer A, answer B, timings A, timings B, rating, status
            run_id: the run's id, for evaluate_rate, evaluate_export or finishing it with evaluate
            status: how the run ended
        """
        say = translator(http_request)
        paths = [path_of(file, say) for file in files or []]
        key = run_id.strip() or runs.add(EvalRun())
        run = runs.take(key, say)
        view = None
        try:
            if run_id.strip() and not run.pending():  # the tab would start a new run in it: its answers would go
                raise gr.Error(say(Message("tools.run_complete", {"id": key})))
            handler = tools.ui("evaluate")
            async for view in handler(paths, run, engine_a, speaker_a, system_prompt_a, temperature_a, top_p_a,
                                      top_k_a, max_tokens_a, seed_a, speak_a, compare_b, engine_b, speaker_b,
                                      system_prompt_b, temperature_b, top_p_b, top_k_b, max_tokens_b, seed_b, speak_b,
                                      http_request):
                pass
        except BaseException:
            if not run_id.strip():
                runs.drop(key)  # a new run that didn't start: its id never reaches anyone
            raise
        finally:
            runs.give_back(key)
        return results(view), key, view[3]

    def evaluate_rate(run_id: str, row_id: str, rating: str = "", comment: str = "",
                      http_request: gr.Request = None) -> str:
        """Rate one row of an evaluation run, and/or comment on it; kept in the run and its exports.

        Args:
            run_id: the id evaluate returned
            row_id: the row's id (the sheet's id column)
            rating: two set-ups: A better, B better, tie or both wrong; set-up A alone: good or wrong; empty: none
            comment: a comment on the row (empty: none)
        Returns:
            row: the row as JSON, with its rating and comment
        """
        say = translator(http_request)
        run = runs.take(run_id, say)
        try:
            allowed = RATINGS_AB if run.two_sides else RATINGS_A
            if rating and rating not in allowed:
                raise gr.Error(say(Message("tools.rating_choices", {"ratings": ", ".join(allowed)})))
            if not any(row.prompt.id == row_id for row in run.rows):
                raise gr.Error(say(Message("tools.no_row", {"row": row_id})))
            _run, table = tools.ui("evaluate_rate")(run, row_id, rating, comment, http_request)
        finally:
            runs.give_back(run_id)
        return json.dumps(next(r for r in rows(TABLE_COLUMNS, table["data"]) if r["id"] == row_id)
                          | {"comment": comment}, ensure_ascii=False)

    def evaluate_export(run_id: str, http_request: gr.Request = None) -> tuple[File, File, File]:
        """Export an evaluation run: every row's prompt, media names and hashes, both answers with their timings, the
        rating and comment, and each set-up's settings.

        Args:
            run_id: the id evaluate returned
        Returns:
            csv: the URL of results.csv
            jsonl: the URL of results.jsonl
            zip: the URL of results.zip (both, plus every spoken answer), which evaluate_import takes back
        """
        run = runs.take(run_id, translator(http_request))
        try:
            return tuple(file_out(path) for path in tools.ui("evaluate_export")(run, http_request))
        finally:
            runs.give_back(run_id)

    def evaluate_import(file: File, http_request: gr.Request = None) -> tuple[str, str, str]:
        """Open an evaluation run exported by evaluate_export or the Evaluate tab (its results.zip or results.jsonl), to
        rate it further, export it again, or answer the rows it lacks with evaluate.

        Args:
            file: the export, as an http(s) URL or a data: URI
        Returns:
            results: JSON, one record per row (as evaluate returns them)
            run_id: the run's id
            status: how many rows it holds and how many are left to answer
        """
        view = tools.ui("evaluate_import")(path_of(file, translator(http_request)), EvalRun(), http_request)
        return results(view), runs.add(view[0]), view[3]

    speakers = choices(info.speakers)
    engines = choices(["app", "compare"] if compare_with else ["app"])
    evaluate.__annotations__.update(speaker_a=speakers, speaker_b=speakers, engine_a=engines, engine_b=engines)
    evaluate_rate.__annotations__["rating"] = choices(["", *RATINGS_AB, *RATINGS_A])
    tools.add(evaluate, concurrency_id=EVALUATE_QUEUE, concurrency_limit=info.max_concurrency)
    tools.add(evaluate_rate, concurrency_limit=None)
    tools.add(evaluate_export, concurrency_limit=None)
    tools.add(evaluate_import, concurrency_limit=None)
