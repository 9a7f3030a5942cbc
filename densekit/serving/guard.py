"""ASGI middleware in front of every route: the API key, the body-size limit, and per-route metrics.

It works on the raw ASGI messages, before FastAPI reads anything: a request without the key, or with a body over
``max_body_bytes`` (by Content-Length, or while a chunked body streams in), or a body not in within
``read_timeout``, is refused without being parsed.
"""

from __future__ import annotations

import asyncio
import hmac
import time

from fastapi.responses import JSONResponse

from densekit.serving.config import ServerConfig
from densekit.serving.metrics import Metrics
from densekit.serving.schemas import ErrorBody

OPEN_ROUTES = ("/health",)  # answered without the API key (load balancers probe it)
ROUTES = {"/search", "/health", "/metrics", "/admin/swap", "/docs", "/openapi.json", "/redoc"}  # metric labels


def refusal(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(detail=message).model_dump(), status_code=status, headers=headers)


class GuardMiddleware:
    """API key, body-size limit and per-route metrics for every HTTP request."""

    def __init__(self, app, config: ServerConfig, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics, config = self.metrics, self.config
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = [500]

        async def send_and_record(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        start = time.perf_counter()
        metrics.in_flight.inc()
        try:
            refused = self._refusal(scope, config)
            if refused is None and scope["method"] in ("POST", "PUT", "PATCH"):
                body, refused = await self._body(receive, config)
                if refused is None:
                    receive = _replay(body, receive)
            if refused is not None:
                await refused(scope, receive, send_and_record)
            else:
                await self.app(scope, receive, send_and_record)
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(route, str(status[0])).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - start)

    @staticmethod
    async def _body(receive, config: ServerConfig) -> tuple[bytes, JSONResponse | None]:
        """The whole body, or a refusal: over ``max_body_bytes`` (413), or not in within ``read_timeout`` (408: a
        body dripped in slowly holds a connection and a task)."""
        try:
            async with asyncio.timeout(config.read_timeout):
                body, too_big = await _read_body(receive, config.max_body_bytes)
        except TimeoutError:
            return b"", refusal(408, f"request body not received within {config.read_timeout:g} s",
                                {"Connection": "close"})
        if too_big:
            return b"", refusal(413, f"request body is larger than the {config.max_body_bytes}-byte limit")
        return body, None

    @staticmethod
    def _refusal(scope, config: ServerConfig) -> JSONResponse | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if config.api_key and scope["path"] not in OPEN_ROUTES:
            given = headers.get("x-api-key")
            auth = headers.get("authorization", "")
            if given is None and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if given is None:
                return refusal(401, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                               {"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(given.encode("utf-8", "replace"), config.api_key.encode("utf-8")):
                return refusal(403, "wrong API key")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return refusal(400, f"bad Content-Length header {length!r}")
            if int(length) > config.max_body_bytes:
                return refusal(413, f"request body of {length} bytes is larger than the "
                                    f"{config.max_body_bytes}-byte limit")
        return None


async def _read_body(receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
