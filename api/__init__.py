"""The app's API for other programs, served beside the page on the app's own server and port.

- ``realtime/``: the OpenAI Realtime protocol over a WebSocket at ``/v1/realtime`` (talk to the model live).

Import rules (``tests/test_imports.py``): ``api`` takes from ``backends`` only the contract (``base``, ``events``,
``request``), plus ``media``, ``messages`` and ``turns``; it never imports ``ui``, and ``ui`` never imports it. Both
serve the same engine, each in its own way.

``app_kwargs`` is what ``Blocks.launch(app_kwargs=...)`` takes: our routes go into the FastAPI app Gradio builds
(``FastAPI(routes=...)``), ahead of Gradio's own, so a Space or a studio that exposes the page exposes them too.
"""

from __future__ import annotations

from api.realtime import RealtimeLimits, realtime_route
from backends.base import Backend


def app_kwargs(backend: Backend, *, login_required: bool = False,
               limits: RealtimeLimits = RealtimeLimits()) -> dict:
    """``launch(app_kwargs=...)`` for the API over ``backend``. ``login_required``: the page has a login, which the
    API can't check yet, so it refuses every connection rather than serve anyone (a later step takes the login)."""
    return {"routes": [realtime_route(backend, limits, login_required=login_required)]}


__all__ = ["RealtimeLimits", "app_kwargs", "realtime_route"]
