"""A request-body limit that holds however the body is sent.

Checking ``Content-Length`` alone let a chunked request (which has none) through: it was read,
parsed and validated whatever its size, then failed at the broker with a 500. This ASGI middleware counts the body's
bytes as they arrive and stops the request with 413 as soon as they pass the limit, before the
rest is read; a declared length over the limit is refused before any of it is read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether declared or chunked."""

    def __init__(self, app: App, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": f"body of {int(declared)} bytes exceeds {self.limit}"}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # FastAPI lets an HTTPException raised while it reads the body through as it is.
                    raise HTTPException(413, f"body exceeds {self.limit} bytes (stopped after {seen})")
            return message

        await self.app(scope, counted, send)
