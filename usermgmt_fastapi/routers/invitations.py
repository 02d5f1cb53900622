"""Invitations: ``/organizations/{org_id}/invitations`` (``member:invite``) and
``POST /invitations/accept`` (the invitee, signed in with the invited, verified address)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from usermgmt.app import UserManagement
from usermgmt.models import Invitation
from usermgmt.schemas import InvitationCreateIn, InvitationOut, MembershipOut, TokenIn
from usermgmt.services.base import parse_uuid
from usermgmt_fastapi.dependencies import UM, Ctx, CurrentUser
from usermgmt_fastapi.routers._common import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ItemsOut,
    access,
    no_store,
    page,
    problems,
)

__all__ = ["invitations_router"]

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="From the previous page")]


def _out(um: UserManagement, invitation: Invitation) -> InvitationOut:
    return InvitationOut.of(invitation, um.invitations.role_names(invitation), um.clock.now())


def invitations_router() -> APIRouter:
    """The invitation routes (a new router on each call)."""
    router = APIRouter(
        tags=["invitations"],
        dependencies=[Depends(no_store)],
        responses=problems(401, 422, 429, 503),
    )

    @router.post(
        "/organizations/{org_id}/invitations",
        status_code=201,
        response_model=InvitationOut,
        summary="Invite an email address with roles (the invitation email is queued)",
        responses=problems(400, 403, 404, 409, 413, 422),
        openapi_extra=access("member:invite"),
    )
    def create_invitation(
        org_id: str, data: InvitationCreateIn, user: CurrentUser, um: UM, ctx: Ctx
    ) -> InvitationOut:
        invitation = um.invitations.create(
            user.id,
            parse_uuid(org_id, "organization"),
            data.email,
            list(data.roles),
            ctx=ctx,
        )
        return _out(um, invitation)

    @router.get(
        "/organizations/{org_id}/invitations",
        response_model=ItemsOut[InvitationOut],
        summary="The organization's invitations",
        responses=problems(403, 404, 422),
        openapi_extra=access("member:invite"),
    )
    def list_invitations(
        org_id: str,
        user: CurrentUser,
        um: UM,
        limit: Limit = DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
    ) -> ItemsOut[InvitationOut]:
        result = um.invitations.list(
            user.id, parse_uuid(org_id, "organization"), limit=limit, cursor=cursor
        )
        return page(result, lambda invitation: _out(um, invitation))

    @router.delete(
        "/organizations/{org_id}/invitations/{invitation_id}",
        status_code=204,
        response_class=Response,
        summary="Revoke a pending invitation",
        responses=problems(403, 404, 409),
        openapi_extra=access("member:invite"),
    )
    def revoke_invitation(
        org_id: str, invitation_id: str, user: CurrentUser, um: UM, ctx: Ctx
    ) -> None:
        um.invitations.revoke(
            user.id,
            parse_uuid(org_id, "organization"),
            parse_uuid(invitation_id, "invitation"),
            ctx=ctx,
        )

    @router.post(
        "/invitations/accept",
        response_model=MembershipOut,
        summary="Join the organization with the token from the invitation email",
        responses=problems(400, 403, 409, 413, 422),
        openapi_extra=access("user"),
    )
    def accept_invitation(data: TokenIn, user: CurrentUser, um: UM, ctx: Ctx) -> MembershipOut:
        membership = um.invitations.accept(user.id, data.token, ctx=ctx)
        # Serialising needs the organization and role names: read the caller's membership.
        for joined in um.organizations.list_for_user(user.id):
            if joined.organization.id == membership.organization_id:
                return MembershipOut.of(joined)
        raise AssertionError("the membership just created is missing")  # pragma: no cover

    return router
