"""One error body per surface.

``/v1/*`` (OpenAI-compatible): ``{"error": {"message", "type", "param", "code"}}``.
Everything else (``/api/*``, ``/livez``, ...): ``{"error": {"code", "message", "details"}}``.

Contract errors carry their HTTP status; request validation is a 400 (``/api``) or OpenAI's
``invalid_request_error`` (``/v1``); anything unexpected is a 500 with no internals leaked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from routekeeper.contract.errors import InvalidRequest, RoutekeeperError
from routekeeper.contract.strict_json import json_kind
from routekeeper.http.body import decode_json_body

log = logging.getLogger(__name__)

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    502: "upstream_error",
    503: "unavailable",
    504: "upstream_timeout",
}


def is_openai_path(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def api_error_body(
    code: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def openai_error_body(
    message: str, *, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    if is_openai_path(request.url.path):
        type_ = _OPENAI_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        body = openai_error_body(message, type_=type_, code=code, param=param)
    else:
        body = api_error_body(code, message, details)
    return JSONResponse(body, status_code=status, headers=headers)


def param_path(loc: list[Any]) -> str | None:
    """A location as OpenAI names a param: ``messages[0].content``."""
    if not loc:
        return None
    path = ""
    for i, part in enumerate(loc):
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
    return path


def _validation_message(
    exc: RequestValidationError,
) -> tuple[str, str | None, list[dict[str, Any]]]:
    problems = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]  # where it came from, not a field name (a field may be called "body")
        problems.append({"param": param_path(loc), "message": str(err.get("msg", ""))})
    first = problems[0] if problems else {"param": None, "message": "invalid request"}
    where = f"{first['param']}: " if first["param"] else ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}{first['message']}{more}", first["param"], problems


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RoutekeeperError)
    async def _contract_error(request: Request, exc: RoutekeeperError) -> JSONResponse:
        return contract_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(_is_body_error(err) for err in exc.errors()):
            # The body itself could not be read: say why in words, not as a byte offset.
            unreadable = await _body_problem(request)
            if unreadable is not None:
                return contract_error_response(request, unreadable)
        message, param, problems = _validation_message(exc)
        return error_response(
            request, 400, "invalid_request", message, details={"problems": problems}, param=param
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == BODY_PARSE_FAILED:
            unreadable = await _body_problem(request)
            if unreadable is not None:
                return contract_error_response(request, unreadable)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"no route for {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(
            request, exc.status_code, code, message, headers=dict(exc.headers or {})
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "internal error; see the server log")


# FastAPI's detail when the body is not JSON it can decode (bad UTF-8, too deep, ...).
BODY_PARSE_FAILED = "There was an error parsing the body"


def contract_error_response(
    request: Request, exc: RoutekeeperError, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The envelope for a contract error, with ``param`` when it names a field, its own
    headers (``retry-after``) and ``headers``."""
    if exc.status >= 500:
        log.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
    return error_response(
        request,
        exc.status,
        exc.code,
        exc.message,
        details=exc.details,
        param=exc.param,
        headers={**exc.headers(), **(headers or {})},
    )


def _is_body_error(err: Mapping[str, Any]) -> bool:
    """The body as a whole could not be read (not one field of it)."""
    return err.get("type") == "json_invalid" or tuple(err.get("loc", ())) == ("body",)


async def _body_problem(request: Request) -> InvalidRequest | None:
    try:
        value = decode_json_body(await request.body(), request.headers)
    except InvalidRequest as exc:
        return exc
    if not isinstance(value, dict):
        return InvalidRequest(f"the request body must be a JSON object, got {json_kind(value)}")
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type.lower():
        return InvalidRequest(
            f"the request body is JSON but its content-type is {content_type or 'missing'}; "
            "send content-type: application/json"
        )
    return None


def ensure_json_safe(value: Any) -> None:
    """Refuse (400) what Python's JSON parser accepts but no JSON consumer can take back:
    NaN or Infinity, and lone UTF-16 surrogates (``"\\ud800"``)."""
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except ValueError as exc:  # UnicodeEncodeError is a ValueError
        reason = "a lone surrogate" if isinstance(exc, UnicodeEncodeError) else "NaN or Infinity"
        raise InvalidRequest(
            f"the request body contains {reason}, which JSON does not allow"
        ) from None
