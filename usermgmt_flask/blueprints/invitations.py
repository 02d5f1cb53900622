"""Invitations: ``/organizations/<org_id>/invitations`` (``member:invite``) and
``POST /invitations/accept`` (the invitee, signed in with the invited, verified address)."""

from __future__ import annotations

from flask import Blueprint, Response

from usermgmt.app import UserManagement
from usermgmt.http import PageQuery, page
from usermgmt.models import Invitation
from usermgmt.schemas import InvitationCreateIn, InvitationOut, MembershipOut, TokenIn
from usermgmt.services.base import parse_uuid
from usermgmt_flask.blueprints._common import json_body, no_content, ok, parse, query, route
from usermgmt_flask.context import current_user, get_um, request_context

__all__ = ["invitations_blueprint"]


def _out(um: UserManagement, invitation: Invitation) -> InvitationOut:
    return InvitationOut.of(invitation, um.invitations.role_names(invitation), um.clock.now())


def invitations_blueprint() -> Blueprint:
    """The invitation routes (a new blueprint on each call)."""
    bp = Blueprint("invitations", __name__)

    @route(bp, "POST", "/organizations/<org_id>/invitations")
    def create_invitation(org_id: str) -> Response:
        body = json_body()
        user = current_user()
        data = parse(InvitationCreateIn, body)
        um = get_um()
        invitation = um.invitations.create(
            user.id,
            parse_uuid(org_id, "organization"),
            data.email,
            list(data.roles),
            ctx=request_context(),
        )
        return ok(_out(um, invitation), 201)

    @route(bp, "GET", "/organizations/<org_id>/invitations")
    def list_invitations(org_id: str) -> Response:
        user = current_user()
        params = query(PageQuery)
        um = get_um()
        result = um.invitations.list(
            user.id, parse_uuid(org_id, "organization"), limit=params.limit, cursor=params.cursor
        )
        return ok(page(result, lambda invitation: _out(um, invitation)))

    @route(bp, "DELETE", "/organizations/<org_id>/invitations/<invitation_id>")
    def revoke_invitation(org_id: str, invitation_id: str) -> Response:
        user = current_user()
        get_um().invitations.revoke(
            user.id,
            parse_uuid(org_id, "organization"),
            parse_uuid(invitation_id, "invitation"),
            ctx=request_context(),
        )
        return no_content()

    @route(bp, "POST", "/invitations/accept")
    def accept_invitation() -> Response:
        body = json_body()
        user = current_user()
        data = parse(TokenIn, body)
        um = get_um()
        membership = um.invitations.accept(user.id, data.token, ctx=request_context())
        # Serialising needs the organization and role names: read the caller's membership.
        for joined in um.organizations.list_for_user(user.id):
            if joined.organization.id == membership.organization_id:
                return ok(MembershipOut.of(joined))
        raise AssertionError("the membership just created is missing")  # pragma: no cover

    return bp
