"""The routers, one factory per area; :func:`usermgmt_fastapi.mount` includes them all."""

from usermgmt_fastapi.routers.audit import audit_router
from usermgmt_fastapi.routers.auth import auth_router
from usermgmt_fastapi.routers.health import health_router
from usermgmt_fastapi.routers.invitations import invitations_router
from usermgmt_fastapi.routers.metrics import metrics_router
from usermgmt_fastapi.routers.oauth import oauth_router
from usermgmt_fastapi.routers.organizations import organizations_router, permissions_router
from usermgmt_fastapi.routers.users import users_router

__all__ = [
    "audit_router",
    "auth_router",
    "health_router",
    "invitations_router",
    "metrics_router",
    "oauth_router",
    "organizations_router",
    "permissions_router",
    "users_router",
]
