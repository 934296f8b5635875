"""Fixes for Gradio 6.31.0 (pinned in requirements.txt), applied when ``ui`` is imported.

Session blocks. Gradio answers a property update of an output (``gr.update``, even ``gr.skip()``) by building a
new instance of the component for the session. That instance gets a fresh block id, and the next
plain value sent to the output stores it again under that fresh id. So every update followed by
a value added a block to the session, kept until the session ends: three per Chat turn (the
textbox, the checkbox and the reply player), with the component's whole config. Giving the new
instance the id of the block it replaces keeps a session at the app's own blocks. tests/test_app.py
checks that.

Its MCP server (``app.py --mcp``), three fixes:
- A queued tool called without a progress token (the mcp client's default) got its outputs as one value, the
  tuple of them all: a tool with several outputs answered with that tuple's repr, and one with a ``gr.State``
  output failed with "pop index out of range" (the State's position was popped from a one-item list).
- A tool parameter that is a list of files took no file: the data: URIs and URLs in it reached the function as
  plain strings (the files' positions in the schema, ``files.items``, never matched ``files.0``).
- The app's tools are its ``ui.tools`` endpoints, named by their functions; the UI's events, marked
  ``NOT_A_TOOL``, stay out of the server (stock Gradio only leaves them out of the tool list, and lets them
  take the tools' names first).

They replace private methods, as ``ui/reply_player.py`` overrides one: all apply only on the Gradio
versions they were written for and checked with (``GRADIO_VERSIONS``), and on any other the app runs
without them and says so in the log.
"""

from __future__ import annotations

import logging

import gradio

GRADIO_VERSIONS = ("6.31.0",)
"""The Gradio versions whose private code the patches in ``ui`` were written for."""

log = logging.getLogger(__name__)


def written_for_this_gradio(patch: str, without_it: str) -> bool:
    """Whether the running Gradio is one ``patch`` was written for; if not, logs that it is left out and what
    that costs (``without_it``)."""
    if gradio.__version__ in GRADIO_VERSIONS:
        return True
    log.warning("Gradio %s: %s not applied (written for Gradio %s); %s.", gradio.__version__, patch,
                " or ".join(GRADIO_VERSIONS), without_it)
    return False


NOT_A_TOOL = "ui_event"
"""The ``_mcp_type`` of a function that Gradio's MCP server should not serve (stock Gradio lists only functions
without one or with "tool")."""


def apply() -> bool:
    """Apply the fixes; whether they all are in place."""
    return _keep_session_block_ids() & _fix_the_mcp_server()


def _keep_session_block_ids() -> bool:
    """Keep a session's copies of its outputs under their own block ids."""
    if not written_for_this_gradio("the fix for session blocks (ui/gradio_fixes.py)",
                                   "each session keeps a copy of an output for every property update"):
        return False
    from gradio.blocks import Block
    from gradio.state_holder import SessionState

    original = SessionState.__setitem__
    if getattr(original, "keeps_block_ids", False):
        return True

    def setitem_keeping_ids(self: SessionState, key: int, value) -> None:
        replaced = self.blocks_config.blocks.get(key)
        if isinstance(value, Block) and isinstance(replaced, Block) and not replaced.stateful and value._id != key:
            value._id = key  # the session's version of block ``key``, not a new block
        original(self, key, value)

    setitem_keeping_ids.keeps_block_ids = True
    SessionState.__setitem__ = setitem_keeping_ids
    return True


def _fix_the_mcp_server() -> bool:
    if not written_for_this_gradio("the fixes for the MCP server (ui/gradio_fixes.py)",
                                   "MCP tools with several outputs or a list of files fail, and the UI's events are "
                                   "MCP tools too"):
        return False
    from anyio.to_thread import run_sync
    from gradio.mcp import GradioMCPServer

    if getattr(GradioMCPServer, "fixed_for_the_app", False):
        return True
    stock_convert = GradioMCPServer.convert_strings_to_filedata

    async def every_output(self, job) -> list:
        result = await run_sync(job.result)  # the client returns a tuple for several outputs, else the one value
        return list(result) if isinstance(result, tuple) else [result]

    def files_in_lists_too(self, value, filedata_positions):
        found = [path for path in _string_paths(value) if any(_at(position, path) for position in filedata_positions)]
        return stock_convert(self, value, found)

    def tools_only(self) -> dict[str, str]:
        tools: dict[str, str] = {}
        for endpoint in self.api_info["named_endpoints"]:
            block_fn = self.get_block_fn_from_endpoint_name(endpoint)
            if block_fn is None or block_fn.fn is None or getattr(block_fn.fn, "_mcp_type", None) == NOT_A_TOOL:
                continue
            name = getattr(block_fn.fn, "__name__", None) or endpoint.lstrip("/")
            tools[self.valid_and_unique_tool_name(self.tool_prefix + name, set(tools))] = endpoint
        return tools

    GradioMCPServer._execute_tool_without_progress = every_output
    GradioMCPServer.convert_strings_to_filedata = files_in_lists_too
    GradioMCPServer.get_tool_to_endpoint = tools_only
    GradioMCPServer.fixed_for_the_app = True
    return True


def _string_paths(value, path: tuple = ()):
    """The path (keys and list indices) of every string in a tool's arguments."""
    if isinstance(value, str):
        yield list(path)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_paths(item, (*path, index))


def _at(position: list, path: list) -> bool:
    """Whether a file's position in the schema (``["files", "oneOf", 1, "items"]``) is that of a value (``["files",
    0]``): a union's branch is no step of the value, and ``items`` is any index of a list."""
    steps, branch = [], False
    for step in position:
        if branch:
            branch = False
        elif step in ("oneOf", "anyOf"):
            branch = True
        else:
            steps.append(step)
    return len(steps) == len(path) and all(s == p or (s == "items" and isinstance(p, int)) for s, p in zip(steps, path))
