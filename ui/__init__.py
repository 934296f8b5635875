"""Gradio Blocks built from the backend contract; no model class is imported here.

Import rules: ``ui`` takes from ``backends`` only the contract (``base``, ``events``, ``request``), plus the
top-level ``media`` package. A tab's folder (``chat/``, ``live/``, ``evaluate/``) imports itself and the shared
modules here (``voice``, ``hashing``, ``streaming``, ``reply``…), never another tab; only this module composes them.
"""

from __future__ import annotations

import gradio as gr

from backends.base import Backend, BackendInfo
from messages import Message
from ui import caption, gradio_fixes
from ui.chat import tab as chat_tab
from ui.chat.feedback import FeedbackLog
from ui.evaluate import tab as evaluate_tab
from ui.evaluate import team_tab
from ui.evaluate.team import Creators, TeamStudies
from ui.i18n import random_weights_warning, t
from ui.live import tab as live_tab
from ui.messages import translator
from ui.tools import add_tools

gradio_fixes.apply()

TITLE = "Qwen3-Omni"
UPLOAD_CACHE = (3600, 24 * 3600)
"""Every hour Gradio deletes uploads and outputs older than a day (an idle chat session lasts 6 hours)."""


def header(info: BackendInfo) -> None:
    """The title and what serves it: model, backend, device, speech, users at once.

    One Markdown per fact: the browser translates one text per Markdown, and each fact has a label
    to translate beside its value.
    """
    gr.Markdown(f"## {TITLE}", elem_id="header")
    with gr.Row(elem_id="header-facts"):
        for fact in header_facts(info):
            gr.Markdown(fact, container=False, min_width=120, padding=False)


def header_facts(info: BackendInfo) -> list[str]:
    facts = [
        t("**Model**") + f" `{info.model}` ({info.kind})",
        t("**Backend**") + f" {info.backend}",
        t("**Device**") + f" {info.device}",
        t("**Speech** speaks") + f" ({', '.join(info.speakers)})" if info.can_speak else t("**Speech** text only"),
        t("**Users at once**") + f" {info.max_concurrency}",
    ]
    if info.speech_note:
        facts.insert(4, str(t(info.speech_note)))
    return facts


def warm_up_status(backend: Backend, demo: gr.Blocks) -> None:
    """A line under the header while the engine compiles; it goes away once the engine is ready."""

    def current(request: gr.Request):  # in the page's language, from the message's code
        message = backend.warming_up
        text = translator(request)(Message("warm_up.header", {"what": message})) if message else ""
        return gr.Markdown(text, visible=bool(message)), gr.Timer(active=bool(message))

    status = gr.Markdown(visible=False, elem_id="warm-up")
    timer = gr.Timer(1.0, active=False)
    # Checked when a page opens, then every second while warming (queue=False: never behind a reply).
    demo.load(current, outputs=[status, timer], queue=False, api_visibility="private")
    timer.tick(current, outputs=[status, timer], queue=False, api_visibility="private")


def build_demo(backend: Backend, feedback_file: str | None = None, compare_with: Backend | None = None,
               data_dir: str | None = None, creators: Creators = Creators()) -> gr.Blocks:
    """The full app: header, then one tab per task. ``feedback_file``: where 👍/👎 and comments go (off if None);
    ``compare_with``: a second engine that Chat's Compare can answer with; ``data_dir``: where team studies are kept
    (off if None); ``creators``: who may create and export them (by default no one)."""
    engines = {"app": backend, **({"compare": compare_with} if compare_with else {})}
    teams = TeamStudies(data_dir, engines, creators) if data_dir else None
    with gr.Blocks(title=TITLE, delete_cache=UPLOAD_CACHE) as demo:
        tools = add_tools(backend, compare_with, teams=teams)  # first: the tools take their names before the UI's
        header(backend.info)
        if backend.info.random_weights:
            gr.Markdown(t(random_weights_warning("Qwen/Qwen3-Omni-30B-A3B-Instruct")), elem_id="random-weights")
        warm_up_status(backend, demo)
        with gr.Tab(t("Chat"), id="chat"):
            chat_parts = chat_tab.build(backend, FeedbackLog(feedback_file) if feedback_file else None, compare_with)
        with gr.Tab(t("Live"), id="live"):
            live_tab.build(backend)
        with gr.Tab(t("Caption"), id="caption"):
            caption.build(backend)
        with gr.Tab(t("Evaluate"), id="evaluate"):
            results = evaluate_tab.build(backend, compare_with)
        with gr.Tab(t("Team study"), id="team"):
            if teams is None:
                gr.Markdown(t(team_tab.OFF_NOTE))
            else:
                team = team_tab.build(teams, backend.info.speakers, backend.info.random_weights)
                demo.load(team.opened, team.inputs, team.outputs, queue=False, api_visibility="private")
                demo.load(team.wake, queue=False, api_visibility="private")
        demo.load(evaluate_tab.table_headers, outputs=results, queue=False, api_visibility="private")
        if chat_parts.examples is not None:
            demo.load(chat_tab.example_labels, outputs=chat_parts.examples, queue=False, api_visibility="private")
    tools.finish(demo)
    return demo


def build_captioner_demo(backend: Backend) -> gr.Blocks:
    """The Captioner app's page: the same Caption tab, alone."""
    with gr.Blocks(title=f"{TITLE} Captioner", delete_cache=UPLOAD_CACHE) as demo:
        tools = add_tools(backend, captions_only=True)
        header(backend.info)
        if backend.info.random_weights:
            gr.Markdown(t(random_weights_warning("Qwen/Qwen3-Omni-30B-A3B-Captioner")), elem_id="random-weights")
        warm_up_status(backend, demo)
        caption.build(backend)
    tools.finish(demo)
    return demo


def queue_settings(info: BackendInfo) -> dict:
    """Queue sized on purpose: the engine runs ``max_concurrency`` requests at once and we let
    a bounded number wait, so a crowd gets a clear "queue full" instead of an endless wait."""
    return {"default_concurrency_limit": info.max_concurrency, "max_size": 16 * info.max_concurrency}
