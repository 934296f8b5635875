"""OpenAI's error JSON, ``{"error": {"message", "type", "param", "code"}}``, as every HTTP route of the API answers it.

OpenAI's clients read ``error.message`` into the exception they raise (``openai.BadRequestError`` and its kin, chosen
by the status code), so the message is what a caller sees: it says what was wrong and what would be right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.responses import JSONResponse

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}
"""The ``type`` OpenAI gives each status (anything else is a ``server_error``)."""


@dataclass(frozen=True)
class ErrorResponse:
    """A refusal or failure, returned as a value by the serving layer and turned into JSON by the router.

    Example: ``ErrorResponse(400, "messages[0].content: empty", param="messages[0].content").response()``
    """

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)
