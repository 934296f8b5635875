"""The app's API for other programs, served beside the page on the app's own server and port.

- ``realtime/``: the OpenAI Realtime protocol over a WebSocket at ``/v1/realtime`` (talk to the model live).
- ``chat/``: OpenAI's Chat Completions at ``/v1/chat/completions`` (streamed or whole, text and speech) and
  ``/v1/models``.
- ``access.py``: who may use them (open, an API key, or the page's login); ``errors.py``: OpenAI's error JSON.

Import rules (``tests/test_imports.py``): ``api`` takes from ``backends`` only the contract (``base``, ``events``,
``request``), plus ``media``, ``messages`` and ``turns``; it never imports ``ui``, and ``ui`` never imports it. Both
serve the same engine, each in its own way.

``app_kwargs`` is what ``Blocks.launch(app_kwargs=...)`` takes: our routes go into the FastAPI app Gradio builds
(``FastAPI(routes=...)``), ahead of Gradio's own, so a Space or a studio that exposes the page exposes them too.
"""

from __future__ import annotations

from api.access import Access
from api.chat import ChatLimits, OpenAIServingChat, chat_routes
from api.realtime import RealtimeLimits, realtime_route
from backends.base import Backend


def app_kwargs(backend: Backend, *, login_required: bool = False, api_keys: tuple[str, ...] = (),
               limits: RealtimeLimits = RealtimeLimits(), chat_limits: ChatLimits = ChatLimits()) -> dict:
    """``launch(app_kwargs=...)`` for the API over ``backend``.

    Who may call (``api.access``): ``login_required`` (the page has a login: a logged-in user's cookie is taken) and
    ``api_keys`` (a caller sending one as a bearer token is taken); with neither, anyone, like the page.
    """
    access = Access(api_keys=tuple(api_keys), login_required=login_required)
    return {"routes": [realtime_route(backend, limits, access=access),
                       *chat_routes(OpenAIServingChat(backend, chat_limits), access)]}


__all__ = ["Access", "ChatLimits", "RealtimeLimits", "app_kwargs", "chat_routes", "realtime_route"]
