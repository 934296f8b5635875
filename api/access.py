"""Who may use the API (``/v1/realtime`` and the HTTP routes alike).

- **Neither a login nor a key** (the default): open, like the page.
- **API keys** (``app.py --serve-api-key KEY`` or ``$QWEN_OMNI_API_KEY``): a request carries one as
  ``Authorization: Bearer KEY``, what every OpenAI client sends. A browser's WebSocket can set no header, so the
  realtime socket also takes it as the subprotocol ``openai-insecure-api-key.KEY``, as OpenAI's browser clients send
  it (the socket then answers with one of the offered subprotocols, as browsers require).
- **A login** (``--auth``): a request carrying the Gradio session cookie of a logged-in user is taken too, so the
  page's own scripts (and anyone logged in) can use the API; so is a key, for programs. Gradio 6.31 keeps its logins
  in ``App.tokens`` (token → user), set at ``POST /login`` as the cookies ``access-token-<cookie_id>`` (Secure, for
  https) and ``access-token-unsecure-<cookie_id>`` (for plain http); we read them the way Gradio's ``/user`` does.
  A cookie is taken only from the app's own page (``_same_origin``): a browser sends cookies with the requests other
  sites' pages make too, and Gradio's CORS allows any origin on a public host.

- **A key but no login**: the page is open to anyone, and so is its own Live tab's socket: a browser's socket from a
  page of this app (``_from_a_page_of_this_app``) is taken without the key. Those headers are a browser's word, which
  any other program can copy; but such a program could use the open page's own API just as well. A key keeps other
  programs out only where a login closes the page too.

Whether the page has a login is also read from the Gradio app itself at each request (``App.auth``), so the API can't
be left open by a caller who forgot to say so. Keys and login tokens are compared in constant time, every one of them.
Anyone else is refused: HTTP 401 with OpenAI's error JSON, and on the socket the same 401 before the handshake.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from api.errors import ErrorResponse

log = logging.getLogger(__name__)

KEY_PROTOCOL = "openai-insecure-api-key."
"""The subprotocol prefix OpenAI's browser clients put a key in (``Sec-WebSocket-Protocol``)."""


@dataclass(frozen=True)
class Access:
    """Example: ``Access(api_keys=("s3cret",), login_required=True).refusal(request)`` is None for a caller with
    the key or a logged-in cookie, else the 401 to answer."""

    api_keys: tuple[str, ...] = ()
    login_required: bool = False
    """The page has a login (``--auth``); also found at request time from the Gradio app."""

    async def refusal(self, connection: HTTPConnection) -> ErrorResponse | None:
        """None when ``connection`` may use the API, else why not (a 401)."""
        app = connection.scope.get("app")
        login = self.login_required or getattr(app, "auth", None) is not None \
            or getattr(app, "auth_dependency", None) is not None
        if not self.api_keys and not login:
            return None
        if not login and isinstance(connection, WebSocket) and _from_a_page_of_this_app(connection):
            return None  # the open page's Live tab (a browser socket can't send the key without showing it)
        if self.api_keys and self._has_key(connection):
            return None
        if login and await _logged_in(connection, app):
            return None
        ways = (["an API key (Authorization: Bearer <key>)"] if self.api_keys else []) + \
               (["the login cookie of the app's page (log in at /login first)"] if login else [])
        return ErrorResponse(401, f"This API needs {' or '.join(ways)}.", code="invalid_api_key",
                             headers={"WWW-Authenticate": "Bearer"})

    def _has_key(self, connection: HTTPConnection) -> bool:
        offered = []
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            offered.append(token.strip())
        if isinstance(connection, WebSocket):
            offered += [p[len(KEY_PROTOCOL):] for p in _subprotocols(connection) if p.startswith(KEY_PROTOCOL)]
        return any([_matches(key, self.api_keys) for key in offered])  # a list: every key is compared


def subprotocol(websocket: WebSocket) -> str | None:
    """The subprotocol to accept the socket with: a browser fails a handshake that offered some and got none back.
    OpenAI's ``realtime`` if offered, else any other but a key, else the key's own (it is the client's already)."""
    offered = _subprotocols(websocket)
    plain = [p for p in offered if not p.startswith(KEY_PROTOCOL)]
    if "realtime" in plain:
        return "realtime"
    return plain[0] if plain else (offered[0] if offered else None)


async def deny(websocket: WebSocket, refusal: ErrorResponse) -> None:
    """Refuse a socket before its handshake: the 401 itself where the server can send one (uvicorn can), else a
    close, which the client sees as HTTP 403."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(refusal.response())
    else:
        await websocket.close(1008, refusal.message[:120])


def _subprotocols(websocket: WebSocket) -> list[str]:
    header = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def _matches(candidate: str, secrets: tuple[str, ...] | list[str]) -> bool:
    """Whether ``candidate`` is one of ``secrets``, in time that depends on neither (each one is compared)."""
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(candidate.encode(), secret.encode())
    return found


async def _logged_in(connection: HTTPConnection, app) -> bool:
    """The request carries the cookie of a user logged in at the Gradio page (module docstring), from its origin."""
    if not _same_origin(connection):
        return False
    dependency = getattr(app, "auth_dependency", None)
    if dependency is not None:  # a login by the host's own function (gr.mount_gradio_app(auth_dependency=...))
        try:
            user = dependency(connection)
            return bool(await user if inspect.isawaitable(user) else user)
        except Exception:
            log.exception("the app's auth_dependency failed; the API request is refused")
            return False
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not isinstance(tokens, dict) or not cookie_id:
        return False  # not a Gradio app as we know it: refuse rather than guess
    cookies = [connection.cookies.get(f"access-token-{cookie_id}"),
               connection.cookies.get(f"access-token-unsecure-{cookie_id}")]
    return any([_matches(cookie, list(tokens)) for cookie in cookies if cookie])


def _from_a_page_of_this_app(connection: HTTPConnection) -> bool:
    """A browser says this request comes from a page of this app (``_same_origin``, but a request that names no
    origin at all, as programs send them, doesn't count)."""
    if connection.headers.get("sec-fetch-site") is None and connection.headers.get("origin") is None:
        return False
    return _same_origin(connection)


def _same_origin(connection: HTTPConnection) -> bool:
    """Whether a browser made this request from the app's own page. Browsers say so in ``Sec-Fetch-Site``, which no
    page can forge; older ones only in ``Origin``, compared with ``Host`` (never ``X-Forwarded-Host``: a page may
    set that one, and Gradio's CORS lets it). A request with neither is no browser's: nothing sends cookies for it."""
    site = connection.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")  # "none": typed in the address bar or sent by the user's own tool
    origin = connection.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == connection.headers.get("host")
