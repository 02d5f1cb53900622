"""Health endpoints with the deployment guide's JSON shapes (``um.health`` answers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from usermgmt.observability.health import HealthReport, HealthService
from usermgmt_fastapi.dependencies import UM
from usermgmt_fastapi.routers._common import access

__all__ = ["health_router"]

_HEALTHY = {"description": "Healthy"}
_UNHEALTHY = {"description": "Unhealthy (same shape, `status: unhealthy`)"}


def _answer(report: HealthReport) -> JSONResponse:
    code, body = report
    return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})


def health_router() -> APIRouter:
    """``/health``, ``/health/db``, ``/health/redis``, ``/health/queues``, ``/health/live``
    and ``/health/ready`` (a new router on each call). 200 when healthy, 503 otherwise."""
    router = APIRouter(prefix="/health", tags=["health"])

    def add(path: str, summary: str, check: Callable[[HealthService], HealthReport]) -> None:
        def endpoint(um: UM) -> JSONResponse:
            return _answer(check(um.health))

        responses: dict[int | str, dict[str, Any]] = {200: _HEALTHY}
        if path != "/live":
            responses[503] = _UNHEALTHY
        router.add_api_route(
            path,
            endpoint,
            methods=["GET"],
            summary=summary,
            response_class=JSONResponse,
            responses=responses,
            openapi_extra=access("anyone"),
            name=f"health{path.replace('/', '_')}",
        )

    add("", "Database and Redis", HealthService.overall)
    add("/db", "Database round trip", HealthService.database)
    add("/redis", "Redis round trip", HealthService.redis)
    add("/queues", "Email and audit-archive queues", HealthService.queues)
    add("/live", "The process answers (liveness)", HealthService.live)
    add("/ready", "The database is reachable (readiness)", HealthService.ready)
    return router
