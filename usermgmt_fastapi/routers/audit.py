"""``GET /organizations/{org_id}/audit-logs``: the organization's audit trail, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from usermgmt.schemas import AuditEventOut
from usermgmt.services.base import parse_uuid
from usermgmt_fastapi.dependencies import UM, CurrentUser
from usermgmt_fastapi.routers._common import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ItemsOut,
    access,
    no_store,
    page,
    problems,
)

__all__ = ["audit_router"]


def audit_router() -> APIRouter:
    """The audit-log route (a new router on each call)."""
    router = APIRouter(
        tags=["audit"],
        dependencies=[Depends(no_store)],
        responses=problems(401, 422, 429, 503),
    )

    @router.get(
        "/organizations/{org_id}/audit-logs",
        response_model=ItemsOut[AuditEventOut],
        summary="Audit events of the organization, newest first",
        responses=problems(403, 404, 422),
        openapi_extra=access("audit:read"),
    )
    def list_audit_logs(
        org_id: str,
        user: CurrentUser,
        um: UM,
        action: Annotated[
            str | None, Query(max_length=100, description="e.g. member.removed")
        ] = None,
        actor_id: Annotated[str | None, Query(max_length=64, description="A user id")] = None,
        since: Annotated[
            str | None, Query(max_length=64, description="ISO 8601 with a timezone")
        ] = None,
        until: Annotated[
            str | None, Query(max_length=64, description="ISO 8601 with a timezone")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> ItemsOut[AuditEventOut]:
        # The core validates the filters (UUID, timezone-aware times) and the cursor.
        result = um.audit.list(
            user.id,
            parse_uuid(org_id, "organization"),
            action=action,
            actor_filter=actor_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
        return page(result, AuditEventOut.of)

    return router
