"""Health endpoints with the deployment guide's JSON shapes (``um.health`` answers)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response

from usermgmt.http import json_bytes
from usermgmt.observability.health import HealthReport, HealthService
from usermgmt_flask.blueprints._common import JSON, route
from usermgmt_flask.context import get_um

__all__ = ["health_blueprint"]

_CHECKS: tuple[tuple[str, Callable[[HealthService], HealthReport]], ...] = (
    ("", HealthService.overall),
    ("/db", HealthService.database),
    ("/redis", HealthService.redis),
    ("/queues", HealthService.queues),
    ("/live", HealthService.live),
    ("/ready", HealthService.ready),
)


def _answer(report: HealthReport) -> Response:
    code, body = report
    return Response(json_bytes(body), status=code, mimetype=JSON)


def health_blueprint() -> Blueprint:
    """``/health``, ``/health/db``, ``/health/redis``, ``/health/queues``, ``/health/live``
    and ``/health/ready`` (a new blueprint on each call). 200 when healthy, 503 otherwise."""
    bp = Blueprint("health", __name__)

    def add(path: str, check: Callable[[HealthService], HealthReport]) -> None:
        def endpoint() -> Response:
            return _answer(check(get_um().health))

        endpoint.__name__ = "health" + path.replace("/", "_")
        route(bp, "GET", "/health" + path)(endpoint)

    for path, check in _CHECKS:
        add(path, check)
    return bp
