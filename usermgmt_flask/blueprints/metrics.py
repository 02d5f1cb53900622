"""``GET /metrics``: Prometheus metrics (see :mod:`usermgmt.observability.metrics`).

Not rate-limited, no token: keep it off the public internet. 503
``missing_dependency`` without prometheus-client.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from usermgmt.observability.metrics import scrape
from usermgmt_flask.blueprints._common import route
from usermgmt_flask.context import get_um, request_id
from usermgmt_flask.errors import instance, render

__all__ = ["metrics_blueprint"]


def metrics_blueprint() -> Blueprint:
    """``GET /metrics`` (a new blueprint on each call)."""
    bp = Blueprint("metrics", __name__)

    @route(bp, "GET", "/metrics")
    def metrics() -> Response:
        answer = scrape(
            get_um(), request.headers.get("Accept"), instance=instance(), request_id=request_id()
        )
        if not isinstance(answer, tuple):
            return render(answer)
        body, content_type = answer
        return Response(body, status=200, content_type=content_type)

    return bp
