"""RFC 9457 problem details (`application/problem+json`) for every error the API answers.

`Problem` is raised by routes and dependencies; the handlers below turn it, FastAPI's validation
errors (422) and Starlette's own HTTP errors (404, 405) into one shape: `type`, `title`, `status`,
`detail`. Rejection codes of the daemons (PROTOCOL §0) pass through unchanged.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"


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


def install(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc.status, exc.detail, exc.headers)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(exc.status_code, str(exc.detail or ""), getattr(exc, "headers", None))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
        # Only location and message: echoing the input could reflect large or odd bodies back.
        slim = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in errors[:20]]
        return problem_response(422, detail, extra={"errors": slim})

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
