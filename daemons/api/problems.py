"""RFC 9457 problem details (`application/problem+json`) for every error the API answers.

`Problem` is raised by routes and dependencies; the handlers below turn it, FastAPI's validation
errors (422) and Starlette's own HTTP errors (404, 405) into one shape: `type`, `title`, `status`,
`detail`. Rejection codes of the daemons (PROTOCOL §0) pass through unchanged.

API.md §0 keeps 422 for a body (or query) that fails validation; a path whose id breaks the id rule
of PROTOCOL §0 is malformed: 400, naming the rule. That holds for an id with a `/` in it too
(`a%2Fb`), which no route matches: 400 there as well, not the router's bare 404.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from daemons.protocol.messages import DEVICE_ID_RE, valid_device_id

MEDIA_TYPE = "application/problem+json"
ID_RULE = (f"not a valid id: 1 to 64 characters of A-Z a-z 0-9 _ . : -, the first a letter or digit "
           f"(PROTOCOL §0: {DEVICE_ID_RE.pattern})")
# Collections whose next path segment is an id of that rule (device id, rollout id, release version).
ID_COLLECTIONS = {"devices": "device_id", "rollouts": "rid", "releases": "version"}


class ProblemModel(BaseModel):
    """The documented error body."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""


class Problem(Exception):
    """An HTTP error with a detail an operator can act on."""

    def __init__(self, status: int, detail: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def title_of(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(status: int, detail: str = "", headers: dict[str, str] | None = None,
                     extra: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title_of(status), "status": status,
                            "detail": detail}
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


# Documented on every route, so a schema-driven client (and schemathesis) knows the error shape.
def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ProblemModel, "description": title_of(c),
                "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemModel"}}}}
            for c in codes}


def _path_problem(errors: list[Any]) -> str | None:
    """The detail of a 400 when the first validation error is a path parameter's, else None."""
    first = errors[0] if errors else {}
    loc = tuple(first.get("loc", ()))
    if loc[:1] != ("path",) or len(loc) < 2:
        return None
    if (first.get("ctx") or {}).get("pattern") == DEVICE_ID_RE.pattern:
        return f"{loc[1]}: {ID_RULE}"
    return f"{loc[1]}: {first.get('msg', 'invalid')}"


def _unrouted_id(request: Request, api_prefix: str) -> str | None:
    """For a 404 of the router: the 400 detail when the id segment after a collection of
    ID_COLLECTIONS breaks the rule (e.g. an encoded `/`, seen only in the raw path), else None."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    parts = raw.decode("latin-1").split("?", 1)[0].split("/")
    base = api_prefix.strip("/").split("/")
    if parts[1:len(base) + 1] != base or len(parts) < len(base) + 3:
        return None
    name = ID_COLLECTIONS.get(parts[len(base) + 1])
    segment = unquote(parts[len(base) + 2])
    if name is None or not segment or valid_device_id(segment):
        return None
    return f"{name}: {ID_RULE}"


def install(app: FastAPI, api_prefix: str = "/api/v1") -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc.status, exc.detail, exc.headers)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404 and (bad := _unrouted_id(request, api_prefix)) is not None:
            return problem_response(400, bad)
        return problem_response(exc.status_code, str(exc.detail or ""), getattr(exc, "headers", None))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if (bad := _path_problem(list(errors))) is not None:
            return problem_response(400, bad)
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
        # Only location and message: echoing the input could reflect large or odd bodies back.
        slim = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in errors[:20]]
        return problem_response(422, detail, extra={"errors": slim})

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
