"""The HTTP routes: ``GET /v1/models`` and ``POST /v1/chat/completions``, each one screen (vLLM's api_router).

A route checks who calls (``api.access``), takes a reply's slot (503 warming up, 429 full: before the body is read,
so a flood of big bodies costs nothing), reads the body within ``ChatLimits.max_body_bytes`` (413 past it, before
more is read), parses it into the request type (400 naming the field), hands it to ``OpenAIServingChat`` and picks the
answer by its type: an error's JSON, a whole completion's JSON, or server-sent events. A client that leaves ends its
reply either way: the SSE body is closed when the response ends (Starlette cancels a stream whose client is gone),
and a whole reply's task is cancelled when its client goes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable

import pydantic
from openai.types.chat import ChatCompletion
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api.access import Access
from api.chat.protocol import ChatCompletionRequest
from api.chat.serving import OpenAIServingChat, StreamedReply
from api.errors import ErrorResponse


def chat_routes(serving: OpenAIServingChat, access: Access = Access()) -> list[Route]:
    """The routes to add to the app's FastAPI (``api.app_kwargs``)."""

    async def show_models(request: Request) -> Response:
        refused = await access.refusal(request)
        return refused.response() if refused else JSONResponse(serving.show_models())

    async def create_chat_completion(request: Request) -> Response:
        refused = await access.refusal(request)
        if refused:
            return refused.response()
        slot = serving.take_slot()
        if isinstance(slot, ErrorResponse):
            return slot.response()
        result = None
        try:
            result = await _reply(request, serving, slot)
        finally:
            if not isinstance(result, StreamedReply):  # a stream frees its slot when it closes
                slot()
        if isinstance(result, ErrorResponse):
            return result.response()
        if isinstance(result, StreamedReply):
            return ClosingStreamingResponse(result, media_type="text/event-stream",
                                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse(result.model_dump(exclude_none=True))

    return [Route("/v1/models", show_models, methods=["GET"], name="models"),
            Route("/v1/chat/completions", create_chat_completion, methods=["POST"], name="chat_completions")]


async def _reply(request: Request, serving: OpenAIServingChat, slot: Callable[[], None]
                 ) -> ErrorResponse | ChatCompletion | StreamedReply:
    """The body read and parsed, and the reply made in ``slot`` (which the serving frees as the reply ends)."""
    body = await _read_json(request, serving.limits.max_body_bytes)
    if isinstance(body, ErrorResponse):
        return body
    try:
        parsed = ChatCompletionRequest.model_validate(body)
    except pydantic.ValidationError as err:
        return _invalid(err)
    if parsed.stream:
        return await serving.create_chat_completion(parsed, slot)
    return await _unless_disconnected(request, serving.create_chat_completion(parsed, slot))


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body when the response ends however it ends: Starlette cancels the sending of a stream whose client
    left and drops the body unclosed, which would leave the engine's stream open until the garbage collector came."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


async def _read_json(request: Request, limit: int) -> object | ErrorResponse:
    too_big = ErrorResponse(413, f"A request may be {limit // 2**20} MiB at most (files inline as base64).",
                            code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return too_big
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return ErrorResponse(400, f"The body is not JSON: {err}", code="invalid_json")


def _invalid(err: pydantic.ValidationError) -> ErrorResponse:
    """The most specific problem, named the way a caller wrote it (``messages[0].content[1].image_url.url``)."""
    errors = err.errors()
    deepest = max(errors, key=lambda e: len(_where(e["loc"])))
    where = _where(deepest["loc"])
    message = deepest["msg"].removeprefix("Value error, ")
    if sum(len(_where(e["loc"])) == len(where) for e in errors) > 1:  # each branch of a union refused it
        message = "Input should be " + " or ".join(sorted({e["msg"].removeprefix("Input should be ") for e in errors
                                                           if len(_where(e["loc"])) == len(where)}))
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where).lstrip(".")
    return ErrorResponse(400, f"{path}: {message}" if path else message, param=path or None, code="invalid_value")


def _where(loc: tuple) -> tuple:
    """A pydantic location without its union steps: the branch tried (``str``, ``list[...]``), and a content part's
    tag, which pydantic names before the part's own field of the same name (``[1].image_url.image_url``)."""
    kept: list = []
    for index, step in enumerate(loc):
        if isinstance(step, str) and ("[" in step or step in ("str", "int", "float", "bool", "dict")):
            continue
        if kept and isinstance(kept[-1], int) and index + 1 < len(loc) and step == loc[index + 1]:
            continue
        kept.append(step)
    return tuple(kept)


async def _unless_disconnected(request: Request, work):
    """``work``'s result, unless the client leaves first: then it is cancelled (its engine stream closed with it)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()  # a request: the task ends (its engine stream closed) once it runs again, awaited here
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return ErrorResponse(499, "The client left.", code="client_closed")
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
