"""Request bodies in, clear refusals out.

* :class:`JSONRoute` reads bodies as UTF-8 JSON: another Content-Type is a 415, bytes that are not UTF-8 a 400
  naming the byte. FastAPI then parses the JSON and validates it against the route's pydantic model.
* :func:`search_limits` is the dependency that adds the limits set by :class:`ServerConfig` (``max_k``,
  ``max_query_chars``: 422; ``max_queries``: 413), raising the same ``RequestValidationError`` as the model.
* :func:`validation_error_handler` is the one place validation errors become answers: ``{"detail": "..."}``
  with one phrase per pydantic error, ``field '<name>': <pydantic's message> (got <value>)``, or ``unknown
  field '<name>' (fields: ...)``; JSON that does not parse (or no body) is a 400.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from densekit.serving.config import ServerConfig
from densekit.serving.schemas import ErrorBody, SearchRequest

MAX_ERRORS = 5  # phrases in one answer
WHOLE_BODY_TYPES = {"model_type", "model_attributes_type", "dict_type"}  # the body is not a JSON object


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<x>+json``, with any parameters (as FastAPI decides it)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class JSONRequest(Request):
    """A request whose body is read as strict UTF-8 before JSON parsing (``json.loads`` on bytes would guess)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise HTTPException(400, f"request body is not valid UTF-8 (byte {exc.start}); "
                                         "send UTF-8 JSON") from None
            try:
                self._json = json.loads(text)  # a JSONDecodeError becomes FastAPI's "json_invalid" validation error
            except RecursionError:
                raise HTTPException(400, "request body is not valid JSON: nested too deeply") from None
            except json.JSONDecodeError:
                raise
            except ValueError as exc:  # e.g. an integer of more than 4300 digits
                raise HTTPException(400, f"request body is not valid JSON: {exc}") from None
        return self._json


class JSONRoute(APIRoute):
    """A route whose body (if it takes one) must be sent as UTF-8 JSON with a JSON Content-Type.

    A missing Content-Type is refused too (FastAPI's strict content type: a browser can send a body without
    one, or as text/plain, cross-site and without a CORS preflight).
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def json_handler(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if not is_json(content_type):
                got = f"'{content_type}'" if content_type else "none"
                raise HTTPException(415, f"send the request body as JSON with 'Content-Type: application/json' "
                                         f"(Content-Type was {got})")
            return await handler(JSONRequest(request.scope, request.receive))

        return json_handler


def search_limits(config: ServerConfig) -> Callable[[SearchRequest], SearchRequest]:
    """A dependency giving the route a :class:`SearchRequest` that is also within ``config``'s limits."""

    def within_limits(body: SearchRequest) -> SearchRequest:
        texts = body.located_texts()
        if len(texts) > config.max_queries:
            raise HTTPException(413, f"{len(texts)} queries in one request; this server takes at most "
                                     f"{config.max_queries} (split the request)")
        errors = [field_error(where, "string_too_long", f"String should have at most {config.max_query_chars} "
                              "characters (this server's --max-query-chars)", text,
                              {"max_length": config.max_query_chars})
                  for where, text in texts if len(text) > config.max_query_chars]
        if body.k > config.max_k:
            errors.append(field_error(("k",), "less_than_equal", f"Input should be less than or equal to "
                                      f"{config.max_k} (this server's --max-k)", body.k, {"le": config.max_k}))
        if errors:
            raise RequestValidationError(errors)
        return body

    return within_limits


def field_error(where: tuple[str | int, ...], kind: str, message: str, value: Any,
                ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pydantic-shaped error about a body field, for checks made outside the model."""
    return {"type": kind, "loc": ("body", *where), "msg": message, "input": value, "ctx": ctx or {}}


def body_fields(request: Request) -> list[str] | None:
    """The fields of the body model of the route ``request`` went to (None when it has none)."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body_field, "field_info", None), "annotation", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


def describe(errors: Sequence[dict[str, Any]], body: Any = None,
             fields: list[str] | None = None) -> tuple[int, str]:
    """The status and message for validation ``errors`` (pydantic's error dicts, ``loc`` starting at "body")."""
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if error["type"] == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            if isinstance(body, str) and len(loc) > 1 and isinstance(loc[1], int):
                bad = json.JSONDecodeError(reason, body, loc[1])
                reason = f"{reason} at line {bad.lineno} column {bad.colno}"
            return 400, f"request body is not valid JSON: {reason}"
        if error["type"] == "missing" and loc == ("body",):
            return 400, "request body is not valid JSON: it is empty"
    phrases = [phrase(error, fields) for error in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        phrases.append(f"and {len(errors) - MAX_ERRORS} more")
    return 422, "; ".join(phrases)


def phrase(error: dict[str, Any], fields: list[str] | None = None) -> str:
    """One pydantic error as ``field '<dotted.location>': <message> (got <value>)``."""
    loc = tuple(error.get("loc", ()))
    name = ".".join(str(part) for part in (loc[1:] if loc[:1] == ("body",) else loc))
    listing = f" (fields: {', '.join(fields)})" if fields else ""
    if error["type"] == "extra_forbidden":
        return f"unknown field '{name}'{listing}"
    if not name:  # about the body as a whole
        if error["type"] in WHOLE_BODY_TYPES:
            return f"request body must be a JSON object{listing}"
        return error["msg"]
    if error["type"] == "missing":
        return f"field '{name}': {error['msg']}"
    return f"field '{name}': {error['msg']} (got {json.dumps(error.get('input'), default=repr)[:80]})"


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The app's one handler for ``RequestValidationError`` (FastAPI's, the limits', the routes' own)."""
    status, message = describe(exc.errors(), exc.body, body_fields(request))
    return JSONResponse(ErrorBody(detail=message).model_dump(), status_code=status)
