"""FastAPI adapter for usermgmt: the HTTP API of the spec as routers, plus dependencies
for the application's own routes.

::

    from fastapi import Depends, FastAPI
    import usermgmt_fastapi
    from usermgmt import UserManagement

    app = FastAPI()
    um = UserManagement.from_env()
    usermgmt_fastapi.mount(app, um)          # every router, error handler and middleware

    @app.get(
        "/orgs/{org_id}/projects",
        dependencies=[Depends(usermgmt_fastapi.require_permission("project:read"))],
    )
    def projects(org_id: str, user=Depends(usermgmt_fastapi.current_user)): ...

Apps that want only some routers call :func:`install` (state, error handlers and
middleware) and include the router factories they need.

``mount`` also serves Prometheus metrics at ``/metrics`` (:func:`metrics_router`; see
:mod:`usermgmt.observability.metrics`), out of the OpenAPI document and, like
``/health``, out of the global rate limit; ``metrics=False`` leaves both the route and
the HTTP measurements out. Logging is the application's to configure
(``usermgmt.configure_logging(um.settings)``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fastapi import APIRouter, FastAPI

from usermgmt.app import UserManagement
from usermgmt.errors import MissingDependency
from usermgmt_fastapi.dependencies import (
    STATE_KEY,
    UM,
    Claims,
    Ctx,
    CurrentUser,
    current_claims,
    current_user,
    get_um,
    request_context,
    require_permission,
)
from usermgmt_fastapi.errors import STATUS_BY_ERROR, install_error_handlers, status_for
from usermgmt_fastapi.middleware import DEFAULT_MAX_BODY_BYTES, UserMgmtMiddleware
from usermgmt_fastapi.routers import (
    audit_router,
    auth_router,
    health_router,
    invitations_router,
    metrics_router,
    oauth_router,
    organizations_router,
    permissions_router,
    users_router,
)
from usermgmt_fastapi.routing import gated_routers

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "STATUS_BY_ERROR",
    "UM",
    "Claims",
    "Ctx",
    "CurrentUser",
    "UserMgmtMiddleware",
    "all_routers",
    "audit_router",
    "auth_router",
    "current_claims",
    "current_user",
    "get_um",
    "health_router",
    "install",
    "install_error_handlers",
    "invitations_router",
    "metrics_router",
    "mount",
    "oauth_router",
    "organizations_router",
    "permissions_router",
    "request_context",
    "require_permission",
    "status_for",
    "users_router",
]


logger = logging.getLogger("usermgmt.http")


def all_routers(*, metrics: bool = True) -> list[APIRouter]:
    """A fresh instance of every router, in inclusion order (``/metrics`` last)."""
    routers = [
        auth_router(),
        oauth_router(),
        users_router(),
        organizations_router(),
        invitations_router(),
        permissions_router(),
        audit_router(),
        health_router(),
    ]
    if metrics:
        routers.append(metrics_router())
    return routers


def _enable_metrics(um: UserManagement) -> None:
    try:
        um.metrics  # noqa: B018 - starts the instruments now, not at the first scrape
    except MissingDependency:
        logger.warning(
            'prometheus-client is not installed: /metrics answers 503 (pip install "usermgmt[metrics]")'
        )


def install(
    app: FastAPI,
    um: UserManagement,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_limit_exempt: Iterable[str] = ("/health", "/metrics"),
    metrics: bool = True,
) -> None:
    """Attach ``um`` to ``app`` and install the error handlers and the middleware
    (request id, security headers, global rate limit, body size limit, logging context
    and, unless ``metrics=False``, HTTP metrics), without routes."""
    setattr(app.state, STATE_KEY, um)
    install_error_handlers(app)
    app.add_middleware(
        UserMgmtMiddleware,
        um=um,
        max_body_bytes=max_body_bytes,
        exempt_prefixes=tuple(rate_limit_exempt),
        metrics=metrics,
    )
    if metrics:
        _enable_metrics(um)


def mount(
    app: FastAPI,
    um: UserManagement,
    prefix: str = "",
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    metrics: bool = True,
) -> None:
    """Serve the whole usermgmt HTTP API on ``app`` under ``prefix``: :func:`install`
    plus every router (``/metrics`` too unless ``metrics=False``). Call it once, before
    the application starts."""
    prefix = prefix.rstrip("/")
    install(
        app,
        um,
        max_body_bytes=max_body_bytes,
        rate_limit_exempt=(f"{prefix}/health", f"{prefix}/metrics"),
        metrics=metrics,
    )
    # behind one gate: the application's own routes do not pay for trying these
    app.include_router(gated_routers(all_routers(metrics=metrics), prefix), prefix=prefix)
