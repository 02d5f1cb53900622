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
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, FastAPI

from usermgmt.app import UserManagement
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
    organizations_router,
    permissions_router,
    users_router,
)

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
    "mount",
    "organizations_router",
    "permissions_router",
    "request_context",
    "require_permission",
    "status_for",
    "users_router",
]


def all_routers() -> list[APIRouter]:
    """A fresh instance of every router, in inclusion order."""
    return [
        auth_router(),
        users_router(),
        organizations_router(),
        invitations_router(),
        permissions_router(),
        audit_router(),
        health_router(),
    ]


def install(
    app: FastAPI,
    um: UserManagement,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_limit_exempt: Iterable[str] = ("/health",),
) -> None:
    """Attach ``um`` to ``app`` and install the error handlers and the middleware
    (request id, security headers, global rate limit, body size limit), without routes."""
    setattr(app.state, STATE_KEY, um)
    install_error_handlers(app)
    app.add_middleware(
        UserMgmtMiddleware,
        um=um,
        max_body_bytes=max_body_bytes,
        exempt_prefixes=tuple(rate_limit_exempt),
    )


def mount(
    app: FastAPI,
    um: UserManagement,
    prefix: str = "",
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Serve the whole usermgmt HTTP API on ``app`` under ``prefix``: :func:`install`
    plus every router. Call it once, before the application starts."""
    prefix = prefix.rstrip("/")
    install(app, um, max_body_bytes=max_body_bytes, rate_limit_exempt=(f"{prefix}/health",))
    for router in all_routers():
        app.include_router(router, prefix=prefix)
