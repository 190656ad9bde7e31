"""How the sink answers: JSON error bodies, and the one middleware that turns an unexpected
error into an answer (a 5xx, which Twilio retries)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sink.logs import request_id_var
from sink.web.keys import REQUEST_ID

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, code: str, message: str, *, retry_after: int | None = None, **extra: Any
) -> web.Response:
    """``{"error": code, "message": ...}``; ``retry_after`` adds the header Twilio honours."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body: dict[str, Any] = {"error": code, "message": message, **extra}
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids, and the one place unexpected errors become answers (5xx: retryable)."""
    rid = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex[:16]
    request[REQUEST_ID] = rid
    token = request_id_var.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except Exception:  # the error middleware: log it, answer 500 (Twilio retries)
        log.exception("unexpected error handling %s %s", request.method, request.path)
        response = error_response(
            500,
            "internal_error",
            "unexpected error; it is logged with this request id",
            request_id=rid,
        )
    finally:
        request_id_var.reset(token)
    response.headers["X-Request-Id"] = rid
    return response
