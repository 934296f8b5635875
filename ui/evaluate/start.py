"""What ▶ Run does with the run a session has: go on with it, or start anew from the sheet given.

- **Go on** when the run has rows left to answer (after ⏹ Stop, or an import) and the files hold no sheet or the
  same sheet (the same rows): the rows left are answered with the run's own set-ups (the status says so when the
  ones shown differ), and rows whose files were missing look for them among the files given now.
- **Start anew** otherwise: from the one sheet among the files, with the set-ups shown. The previous run is
  replaced only once the new sheet has been read; a sheet that can't be read leaves it as it was.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Mapping

from backends.base import Backend
from media.archives import remove_folder
from messages import Message
from ui.evaluate.results import EvalRow, EvalRun
from ui.evaluate.setup import Setup, SetupError, unavailable
from ui.evaluate.sheet import is_sheet, media_index, parse_sheet, read_prompts, resolve
from ui.scratch import session_folder


def start(run: EvalRun, files: list[str], setup_a: Setup, setup_b: Setup | None,
          engines: Mapping[str, Backend]) -> list[Message]:
    """``run`` made ready to answer its rows (in place); returns what the status should say about it. Raises
    ``SheetError`` (the sheet or a zip can't be read) or ``SetupError`` (a set-up this server can't answer
    with); either way ``run`` is as it was."""
    sheets = [f for f in files if is_sheet(f)]
    if _can_go_on(run, files) and (not sheets or (len(sheets) == 1 and _same_sheet(sheets[0], run))):
        return _go_on(run, files, setup_a, setup_b, engines)
    for side, setup in (("A", setup_a), ("B", setup_b)):
        if setup is not None and (problem := unavailable(setup, side, engines)):
            raise SetupError(problem)
    folder = session_folder("omni-eval-")
    try:
        prompts = read_prompts(files, Path(folder) / "media")
    except BaseException:
        remove_folder(folder)
        raise
    notes = []
    if left := len(run.pending()):
        notes.append(Message("evaluate.replaced", {"count": left}))
    run.close()
    run.rows, run.setup_a, run.setup_b, run.folder = [EvalRow(p) for p in prompts], setup_a, setup_b, folder
    run.engines, run.notes = {}, []
    if repeated := [str(p.row) for p in prompts if p.repeats_id]:
        notes.append(Message("evaluate.renamed_ids", {"rows": ", ".join(repeated[:10])
                                                      + (" …" if len(repeated) > 10 else "")}))
    return notes


def _can_go_on(run: EvalRun, files: list[str]) -> bool:
    """Rows left to answer, or rows that wait for a file and files given that may be it."""
    return bool(run.pending()) or (any(row.prompt.waits_for_media for row in run.rows)
                                   and any(not is_sheet(f) for f in files))


def _same_sheet(sheet: str, run: EvalRun) -> bool:
    def key(prompt):
        return prompt.id, prompt.text, prompt.media, prompt.system_prompt, prompt.reference

    return [key(p) for p in parse_sheet(sheet)] == [key(row.prompt) for row in run.rows]


def _go_on(run: EvalRun, files: list[str], setup_a: Setup, setup_b: Setup | None,
           engines: Mapping[str, Backend]) -> list[Message]:
    for side, setup in (("A", run.setup_a), ("B", run.setup_b)):
        attr = side.lower()
        if setup is not None and any(getattr(row, attr) is None for row in _unanswered(run)):
            if problem := unavailable(setup, side, engines):
                raise SetupError(Message("evaluate.cant_resume", {"reason": problem}))
    waiting = [row for row in _unanswered(run) if row.prompt.media
               and (row.prompt.waits_for_media or (not row.prompt.paths and not row.prompt.problem))]
    if waiting:
        if run.folder is None:
            run.folder = session_folder("omni-eval-")
        media = media_index([f for f in files if not is_sheet(f)], Path(run.folder) / "media")
        for row in waiting:
            row.prompt = resolve(row.prompt, media)
    changed = _changes(run, setup_a, setup_b)
    count = len(run.pending())
    return [Message("evaluate.resuming_own_setups", {"count": count, "fields": ", ".join(changed)}) if changed
            else Message("evaluate.resuming", {"count": count})]


def _unanswered(run: EvalRun) -> list[EvalRow]:
    return [row for row in run.rows if row.a is None or (run.two_sides and row.b is None)]


def _changes(run: EvalRun, setup_a: Setup, setup_b: Setup | None) -> list[str]:
    """The settings shown that differ from the run's own, as ``A.temperature``, ``B`` (on or off)…"""
    changed = [f"A.{f.name}" for f in fields(Setup) if getattr(setup_a, f.name) != getattr(run.setup_a, f.name)]
    if (setup_b is None) != (run.setup_b is None):
        changed.append("B")
    elif setup_b is not None:
        changed += [f"B.{f.name}" for f in fields(Setup) if getattr(setup_b, f.name) != getattr(run.setup_b, f.name)]
    return changed
