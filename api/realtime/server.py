"""The WebSocket endpoint ``/v1/realtime``: one ``RealtimeSession`` per connection, over the app's one backend.

A connection is taken from a caller ``api.access`` lets in (else refused with a 401 before the handshake; accepted in
a subprotocol the client offered, as browsers require) while fewer than ``RealtimeLimits.max_sessions`` are open
(else it is told why and closed), then its messages go to its session in order. Sending is serialized per
connection (the response task and the read loop both send) and bounded in time, so a client that stops reading
can't hold a reply, or the engine, forever.
When the client leaves, the session closes: its response is cancelled and the engine's stream closed with it.
"""

from __future__ import annotations

import asyncio
import logging

import pydantic
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api.access import Access, deny, subprotocol
from api.realtime.protocol import ClientGone, Refusal
from api.realtime.session import RealtimeLimits, RealtimeSession
from backends.base import Backend

log = logging.getLogger(__name__)

PATH = "/v1/realtime"
POLICY_VIOLATION, MESSAGE_TOO_BIG, TRY_AGAIN_LATER = 1008, 1009, 1013


def realtime_route(backend: Backend, limits: RealtimeLimits = RealtimeLimits(), *,
                   access: Access = Access()) -> WebSocketRoute:
    """The route to add to the app's FastAPI (``api.app_kwargs``); ``access`` says who may connect."""
    open_sessions: set[RealtimeSession] = set()

    async def endpoint(websocket: WebSocket) -> None:
        refused = await access.refusal(websocket)
        if refused is not None:  # before the handshake: the client sees the HTTP 401
            await deny(websocket, refused)
            return
        await websocket.accept(subprotocol=subprotocol(websocket))
        if len(open_sessions) >= limits.max_sessions:
            await websocket.send_text(Refusal("session_limit", f"This server holds {limits.max_sessions} realtime "
                                              "sessions at once; try again later.", kind="server_error")
                                      .event().model_dump_json(exclude_unset=True))
            await websocket.close(TRY_AGAIN_LATER, "too many sessions")
            return
        lock = asyncio.Lock()

        async def send(event: pydantic.BaseModel) -> None:
            async with lock:
                try:
                    # warnings=False: our 16 kHz input rate is outside the SDK's type (protocol.py), on purpose
                    text = event.model_dump_json(exclude_unset=True, warnings=False)
                    await asyncio.wait_for(websocket.send_text(text), limits.send_timeout_s)
                except asyncio.TimeoutError as err:  # not reading: close, so the read loop and the session end
                    log.warning("realtime session %s: the client read nothing for %g s; closing", session.id,
                                limits.send_timeout_s)
                    await websocket.close(POLICY_VIOLATION, "not reading")
                    raise ClientGone("not reading") from err
                except (WebSocketDisconnect, RuntimeError, OSError) as err:  # gone
                    raise ClientGone(type(err).__name__) from err

        model = websocket.query_params.get("model") or backend.info.model
        session = RealtimeSession(backend, limits, send, model)
        open_sessions.add(session)
        try:
            await session.start()
            await _serve(websocket, session, limits)
        except (WebSocketDisconnect, ClientGone, RuntimeError) as err:  # gone, or not reading
            log.info("realtime session %s ended: %s", session.id, type(err).__name__)
        finally:
            open_sessions.discard(session)
            await session.close()
            if websocket.application_state == WebSocketState.CONNECTED and \
                    websocket.client_state == WebSocketState.CONNECTED:
                try:
                    await websocket.close()
                except RuntimeError:
                    pass

    return WebSocketRoute(PATH, endpoint, name="realtime")


async def _serve(websocket: WebSocket, session: RealtimeSession, limits: RealtimeLimits) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:  # a binary frame: the protocol is JSON text, but be lenient with UTF-8 bytes
            try:
                text = (message.get("bytes") or b"").decode("utf-8")
            except UnicodeDecodeError:
                text = "\x00"  # not JSON: refused as such below
        await session.receive(text)
        if session.refusals > limits.max_refusals:
            await websocket.close(POLICY_VIOLATION, "too many refused events")
            return
