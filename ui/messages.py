"""Messages made at run time (chat notes, errors, the status line) in the user's language.

``gr.I18n`` translates only texts fixed when the page is built, in the browser. Messages made
while a turn runs are chosen here, on the server, from the request's ``Accept-Language``
(the browser's language; Gradio's own language switch in Settings never reaches the server).
Whatever an engine, a media check, a file import or the UI itself says this way is a
``messages.Message`` (a code and its values; the UI's codes are ``ui.*``, ``chat.*``,
``evaluate.*``… in ``messages.table``). ``say`` renders it from the table by its code, so
rewording a sentence keeps its translation. A plain ``str`` is someone else's words (an
engine's, an imported file's) and is shown as it is, in every language.
"""

from __future__ import annotations

from typing import Callable, Literal, Union

import gradio as gr

from messages import Message

Language = Literal["en", "zh"]
Sayable = Union[str, Message, object]
"""A ``Message``, what carries one as ``msg`` (``Error``, ``Notice``, ``MediaError``…), or words shown verbatim."""
Say = Callable[[Sayable], str]


def render(what: Sayable, language: Language) -> str:
    """``what`` in ``language``: a message by its code; a ``str`` as it is, in every language."""
    if isinstance(what, str):
        return what
    message = what if isinstance(what, Message) else what.msg
    return message.text(language)


def language_of(request: gr.Request | None) -> Language:
    """The first language of the request's Accept-Language that the app speaks (English by default)."""
    header = request.headers.get("accept-language", "") if request is not None else ""
    ranked = []
    for position, entry in enumerate(header.split(",")):
        tag, _, params = entry.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        if weight > 0:  # q=0: "not this one"
            ranked.append((-weight, position, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en") or tag == "*":
            return "en"
    return "en"


def translator(request: gr.Request | None) -> Say:
    """``say(what)``: ``what`` in the language of the user who sent ``request``."""
    language = language_of(request)
    return lambda what: render(what, language)


def to_english(what: Sayable) -> str:
    """``what`` in English, the app's own language (logs, exports, API clients without a browser)."""
    return render(what, "en")
