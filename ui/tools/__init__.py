"""The app's MCP tools (``app.py --mcp``): plain, typed API endpoints for agents, beside the UI's events.

The UI's events take a ``gr.State`` session, a multimodal box and return page updates; none of that means anything
to an MCP client (and Gradio 6.31 served them badly: ``ui.gradio_fixes``). Each tool here is a function with typed
parameters and a docstring that Gradio's MCP server turns into the tool's name, description and schema; it does
what the tab does, through the same code. What an agent goes on with across calls (a conversation, an evaluation
run) it names by the id the tool returned. The tools are also API endpoints, ``/mcp_<tool>``; the UI's own
endpoints (``/chat``, ...) stay as they are for gradio_client.

Made inside the page's Blocks before its tabs (``add_tools``), then ``ToolSet.finish`` once the page is built.
"""

from __future__ import annotations

from backends.base import Backend
from ui.evaluate.team import TeamStudies
from ui.tools import caption, chat, evaluate, team
from ui.tools.common import ToolSet


def add_tools(backend: Backend, compare_with: Backend | None = None, *, captions_only: bool = False,
              teams: TeamStudies | None = None) -> ToolSet:
    """The tools of the app's page (Chat, Caption, Evaluate, and the team studies' when the app keeps them), or of
    the Captioner's (Caption)."""
    tools = ToolSet()
    if not captions_only:
        chat.register(tools, backend, compare_with)
    caption.register(tools, backend)
    if not captions_only:
        evaluate.register(tools, backend, compare_with)
    if teams is not None:
        team.register(tools, teams)
    return tools


__all__ = ["ToolSet", "add_tools"]
