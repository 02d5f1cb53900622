"""``GET /metrics``: Prometheus metrics (see :mod:`usermgmt.observability.metrics`).

No token and, under :func:`usermgmt_fastapi.mount`, no global rate limit (like
``/health``: a scrape must not be refused when the limiter's backend is down): keep
it off the public internet. 503 ``missing_dependency`` without prometheus-client.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from usermgmt.observability.metrics import scrape
from usermgmt_fastapi.dependencies import UM
from usermgmt_fastapi.errors import render, request_id_of
from usermgmt_fastapi.routers._common import access, problems

__all__ = ["metrics_router"]

_EXPOSITION: Final = {"schema": {"type": "string"}}


def _responses() -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "The Prometheus text exposition (OpenMetrics when asked for)",
            "content": {
                "text/plain": _EXPOSITION,
                "application/openmetrics-text": _EXPOSITION,
            },
        },
    }
    documented = problems(429, 503)
    documented[429]["description"] = (
        "Too many requests: only when the application's global rate limit covers "
        "/metrics (mount exempts it)"
    )
    documented[503]["description"] = "prometheus-client is not installed (`missing_dependency`)"
    responses.update(documented)
    return responses


def metrics_router() -> APIRouter:
    """``GET /metrics`` (a new router on each call; mountable on its own, e.g. on an
    internal application: ``internal.include_router(metrics_router())`` with
    :func:`usermgmt_fastapi.install` on that application)."""
    router = APIRouter(tags=["metrics"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses=_responses(),
        openapi_extra=access("anyone"),
        name="metrics",
    )
    def metrics(request: Request, um: UM) -> Response:
        answer = scrape(
            um,
            request.headers.get("accept"),
            instance=request.url.path,
            request_id=request_id_of(request),
        )
        if not isinstance(answer, tuple):
            return render(answer)
        body, content_type = answer
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    return router
