"""What the tools share: how files come in and go out, what they keep between calls, the UI's handlers they call.

No tool of its own here; ``ui.tools.chat``, ``ui.tools.caption`` and ``ui.tools.evaluate`` define them.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Literal, TypedDict, TypeVar

import gradio as gr
from gradio.data_classes import FileData

from messages import Message
from ui.gradio_fixes import NOT_A_TOOL
from ui.messages import Say

T = TypeVar("T")


class FileMeta(TypedDict):
    _type: Literal["gradio.FileData"]


class File(TypedDict):
    """A file, as Gradio's API carries it. In this shape Gradio's MCP server sees a file parameter: it shows the
    agent a string (an http(s) URL or a data: URI), fetches or decodes it into Gradio's upload folder, and the
    tool gets the file there. A returned File reaches the agent as the URL Gradio serves it at."""

    path: str
    meta: FileMeta


def path_of(file: File | dict | None, say: Say) -> str:
    """The local path of a file Gradio took in for this call. Gradio checks a file that comes marked as one (it
    must be an upload of this app); anything else (a plain string, a dict without the mark) is refused, or a
    caller could name any file of the server."""
    if not isinstance(file, dict) or (file.get("meta") or {}).get("_type") != "gradio.FileData" or not file.get("path"):
        raise gr.Error(say(Message("tools.not_a_file")))
    return str(file["path"])


def file_out(path: str | None) -> File | str:
    """A file to return (Gradio moves it into its cache and serves it); "" for none."""
    if not path:
        return ""
    return FileData(path=str(path), orig_name=Path(path).name).model_dump()  # type: ignore[return-value]


def choices(values, fallback=str):
    """The type of a parameter that takes one of ``values`` (an enum in the tool's schema); ``fallback`` if none."""
    values = tuple(dict.fromkeys(v for v in values if v is not None))
    return Literal[values] if values else fallback  # type: ignore[valid-type]


@dataclass
class _Kept(Generic[T]):
    item: T
    used: float
    busy: bool = False


class Store(Generic[T]):
    """What agents go on with across tool calls (a conversation, an evaluation run), by a random id: an MCP tool
    call has no session. An item unused for ``ttl_s`` is closed, and beyond ``limit`` items the least recently
    used one goes; an item answering one call can't take another at the same time. Tools that are plain functions
    run on Gradio's worker threads, the others on its event loop: a lock keeps the ids consistent."""

    def __init__(self, close: Callable[[T], None], ttl_s: float, limit: int, unknown: str):
        self._items: OrderedDict[str, _Kept[T]] = OrderedDict()
        self._close, self._ttl_s, self._limit, self._unknown = close, ttl_s, limit, unknown
        self._lock = threading.Lock()

    def add(self, item: T) -> str:
        key = secrets.token_urlsafe(12)
        with self._lock:
            gone = self._old()
            self._items[key] = _Kept(item, time.monotonic())
            idle = [k for k, kept in self._items.items() if not kept.busy]
            gone += [self._items.pop(old).item for old in idle[: max(0, len(self._items) - self._limit)]]
        self._close_all(gone)
        return key

    def take(self, key: str, say: Say) -> T:
        """The item, now busy until ``give_back``; a gr.Error if it is unknown (or expired) or busy."""
        key = key.strip()
        with self._lock:
            gone = self._old()
            kept = self._items.get(key)
            held = kept is not None and kept.busy  # by another call
            if kept is not None and not held:
                kept.busy, kept.used = True, time.monotonic()
                self._items.move_to_end(key)
        self._close_all(gone)
        if kept is None:
            raise gr.Error(say(Message(self._unknown, {"id": key})))
        if held:
            raise gr.Error(say(Message("tools.busy", {"id": key})))
        return kept.item

    def give_back(self, key: str) -> None:
        with self._lock:
            if (kept := self._items.get(key.strip())) is not None:
                kept.busy, kept.used = False, time.monotonic()

    def drop(self, key: str) -> None:
        with self._lock:
            kept = self._items.pop(key.strip(), None)
        self._close_all([kept.item] if kept is not None else [])

    def _old(self) -> list[T]:
        """Takes the items unused for ``ttl_s`` out (under the lock); the caller closes them."""
        now = time.monotonic()
        return [self._items.pop(k).item for k, kept in list(self._items.items())
                if not kept.busy and now - kept.used > self._ttl_s]

    def _close_all(self, items: list[T]) -> None:
        for item in items:
            self._close(item)


class UIHandlers:
    """The UI's own handlers, by their events' API names, for tools that do what an event does. The tools are
    made before the tabs (so they take their names first), and look the handlers up once the page is built."""

    def __init__(self):
        self.demo: gr.Blocks | None = None

    def __call__(self, api_name: str) -> Callable:
        assert self.demo is not None, "the page is not built yet"
        for block_fn in self.demo.fns.values():
            if block_fn.api_name == api_name:
                return block_fn.fn
        raise LookupError(f"the page has no /{api_name} event")


class ToolSet:
    """A page's tools: each a typed function, served as the endpoint ``/mcp_<its name>`` (named, described and
    typed by the function: Gradio's MCP server serves it as the tool ``<its name>``, gradio_client calls it too)."""

    def __init__(self):
        self.functions: list[Callable] = []
        self.ui = UIHandlers()

    def add(self, fn: Callable, **event) -> None:
        """``event``: the queue's settings (every tool is queued: Gradio's MCP server reports a queued tool's
        errors as they are, an unqueued one's as their repr)."""
        gr.mcp.tool()(fn)
        gr.api(fn, api_name=f"mcp_{fn.__name__}", **event)
        self.functions.append(fn)

    def finish(self, demo: gr.Blocks) -> None:
        """Once the page is built: the tools find the UI's handlers, and the UI's events stay out of MCP (their
        session state, page updates and multimodal boxes mean nothing to an agent; ``ui.gradio_fixes``)."""
        self.ui.demo = demo
        for block_fn in demo.fns.values():
            fn = getattr(block_fn.fn, "__func__", block_fn.fn)  # a bound method's attributes are its function's
            if fn is not None and block_fn.api_visibility != "private" and getattr(fn, "_mcp_type", None) != "tool":
                fn._mcp_type = NOT_A_TOOL


def rows(columns: list[str], data: list[list]) -> list[dict]:
    """A table's rows as records (what a tool returns as JSON)."""
    return [dict(zip(columns, row)) for row in data]
