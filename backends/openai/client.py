"""Reaching the server with the openai client, and what goes wrong there, told as the user's message."""

from __future__ import annotations

import asyncio
import os
import weakref

from backends.events import Error
from backends.openai.options import OpenAIOptions
from messages import Message


class ServerError(RuntimeError):
    """The server can't be used (unreachable at start, no model); ``msg`` says what to do."""

    def __init__(self, msg: Message):
        super().__init__(str(msg))
        self.msg = msg


def api_key(options: OpenAIOptions) -> str:
    """The options' key, else $OPENAI_API_KEY, else "EMPTY" (vLLM needs none unless started with --api-key)."""
    return options.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"


class LoopClients:
    """The AsyncOpenAI client of the running event loop (its connection pool belongs to one loop).

    Example::

        clients = LoopClients(OpenAIOptions(api_base="http://gpu-box:8000/v1"))
        stream = await clients.current().chat.completions.create(model="qwen", messages=[...], stream=True)
    """

    def __init__(self, options: OpenAIOptions):
        import openai

        # Only openai's own types go to its client: its http library is its business, and changes under us.
        timeout = openai.Timeout(options.timeout_s, connect=options.connect_timeout_s)
        # No retries: a retried chat stream would repeat a reply, and errors should show at once.
        self._settings = {"base_url": options.api_base, "api_key": api_key(options), "timeout": timeout,
                          "max_retries": 0}
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> AsyncOpenAI

    def current(self):
        import openai

        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            self._clients[loop] = openai.AsyncOpenAI(**self._settings)
        return self._clients[loop]


def first_model(options: OpenAIOptions) -> str:
    """The first model the server lists at GET /v1/models."""
    import openai

    api_base = options.api_base
    client = openai.OpenAI(base_url=api_base, api_key=api_key(options), timeout=options.connect_timeout_s,
                           max_retries=0)
    try:
        models = client.models.list().data
    except openai.APIConnectionError as err:
        raise ServerError(Message("server.unreachable_at_start", {"url": api_base, "cause": _cause(err)})) from err
    except openai.APIStatusError as err:
        raise ServerError(Message("server.models_refused", {"url": api_base, "status": err.status_code,
                                                            "cause": server_message(err)})) from err
    finally:
        client.close()
    if not models:
        raise ServerError(Message("server.no_model", {"url": api_base}))
    return models[0].id


def error_for(err: Exception, options: OpenAIOptions, *, reply_started: bool, has_text: bool) -> Error | None:
    """The user's message for what went wrong with the server; None for anything else."""
    import openai

    if isinstance(err, openai.APITimeoutError):
        return Error(Message("server.timed_out", {"seconds": f"{options.timeout_s:.0f}",
                                                  "kept": kept(has_text)}), "backend")
    if isinstance(err, openai.APIConnectionError):  # openai wraps its http library's errors, mid-stream too
        if not reply_started:
            return Error(Message("server.unreachable", {"url": options.api_base, "cause": _cause(err)}),
                         "backend")
        return Error(Message("server.broke", {"cause": _cause(err), "kept": kept(has_text)}), "generation")
    if isinstance(err, openai.APIStatusError):
        code = "server.refused" if err.status_code < 500 else "server.failed"
        return Error(Message(code, {"status": err.status_code, "cause": server_message(err)}), "backend")
    if isinstance(err, openai.APIError):  # an error event inside the stream
        return Error(Message("server.error_mid_reply", {"cause": server_message(err), "kept": kept(has_text)}),
                     "generation")
    return None


def server_message(err) -> str:
    """The server's own words: OpenAI-style {"error": {"message"}}, vLLM's flat {"message"}, FastAPI's {"detail"}."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            for key in ("message", "detail"):
                if inner.get(key):
                    return str(inner[key])
        if isinstance(inner, str):
            return inner
    return getattr(err, "message", None) or str(err)


def _cause(err: BaseException) -> str:
    """The innermost error's words: openai's own say only "Connection error."."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err) or err.__class__.__name__


def kept(has_text: bool) -> Message:
    """What is left of a reply that broke off: its text so far, or nothing."""
    return Message("reply.text_kept" if has_text else "reply.nothing")


def over_context(refusal: str) -> bool:
    """A server's "the prompt is too long" (vLLM, SGLang and OpenAI word it differently)."""
    return any(words in refusal for words in ("context length", "maximum model length", "context window",
                                              "prompt is too long", "too many tokens"))
