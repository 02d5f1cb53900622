"""Invitations: created by members holding ``member:invite``, accepted once by the invitee.

Acceptance requires a signed-in user whose *verified* address equals the invited
one. It is a compare-and-set on the invitation row plus a unique membership, so
one link yields at most one membership however many requests race, and a revoked
or expired invitation never yields one.
"""

from __future__ import annotations

import builtins
from datetime import timedelta
from uuid import UUID

from usermgmt.errors import (
    AlreadyMember,
    EmailNotVerified,
    InvitationEmailMismatch,
    InvitationExpired,
    InvitationNotPending,
    NotFound,
    OneTimeTokenError,
)
from usermgmt.ids import new_id
from usermgmt.models import Invitation, InvitationStatus, Membership, Page, RequestContext, User
from usermgmt.permissions import MEMBER
from usermgmt.ports import UnitOfWork
from usermgmt.schemas import InvitationCreateIn, PageIn, TokenIn, normalize_email, parse
from usermgmt.security.opaque import hash_token, is_well_formed, new_token
from usermgmt.services.authorization import AuthorizationService
from usermgmt.services.base import Kernel, decode_cursor, encode_cursor
from usermgmt.services.members import require_in
from usermgmt.services.roles import check_grantable, resolve_roles


class InvitationService:
    def __init__(self, kernel: Kernel, authz: AuthorizationService) -> None:
        self._k = kernel
        self._authz = authz

    def create(
        self,
        actor_id: UUID,
        organization_id: UUID,
        email: str,
        roles: builtins.list[str] | None = None,
        ctx: RequestContext | None = None,
    ) -> Invitation:
        """Invite an address with roles (default ``member``) and queue the email.

        A pending invitation for the same address is replaced. Raises AlreadyMember,
        PermissionDenied (roles beyond your own), ValidationError.
        """
        data = parse(InvitationCreateIn, email=email, roles=roles or [MEMBER])
        self._authz.require(actor_id, organization_id, "member:invite", ctx)
        k = self._k
        token = new_token()
        address = normalize_email(data.email)

        def body(uow: UnitOfWork) -> tuple[Invitation, User | None]:
            org = uow.organizations.get(organization_id, for_update=True)
            if org is None:
                raise NotFound("organization")
            actor = require_in(self._authz, uow, actor_id, organization_id, "member:invite")
            role_objs = resolve_roles(uow, organization_id, data.roles)
            check_grantable(self._authz, actor, role_objs)
            existing = uow.users.get_by_email(address)
            if existing is not None and uow.memberships.get(organization_id, existing.id):
                raise AlreadyMember("That person is already a member.")
            now = k.now()
            self._revoke_pending_for(uow, organization_id, address, now)
            invitation = Invitation(
                id=new_id(),
                organization_id=organization_id,
                email=address,
                role_ids=frozenset(r.id for r in role_objs),
                token_hash=hash_token(token),
                invited_by=actor_id,
                created_at=now,
                expires_at=now + timedelta(seconds=k.settings.invitation_ttl_seconds),
            )
            uow.invitations.add(invitation)
            k.audit(
                uow,
                "invitation.created",
                ctx,
                actor=actor_id,
                org=organization_id,
                target_type="invitation",
                target_id=invitation.id,
                email=address,
                roles=sorted(r.name for r in role_objs),
            )
            return invitation, uow.users.get(actor_id)

        invitation, inviter = k.write(body)
        org = k.read(lambda uow: uow.organizations.get(organization_id))
        if org is not None and k.quota(
            "invite:email", f"{organization_id}:{address}", k.limits.invite_per_email
        ):
            k.notifier.invitation(invitation, org, inviter, token)
        return invitation

    def _revoke_pending_for(self, uow: UnitOfWork, org_id: UUID, email: str, now: object) -> None:
        after: UUID | None = None
        while True:
            batch = uow.invitations.list_for_organization(org_id, limit=200, after=after)
            for inv in batch:
                if inv.email == email and inv.status(self._k.now()) is InvitationStatus.PENDING:
                    uow.invitations.revoke(inv.id, self._k.now())
            if len(batch) < 200:
                return
            after = batch[-1].id

    def list(
        self,
        actor_id: UUID,
        organization_id: UUID,
        *,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Invitation]:
        """Invitations ordered by id; requires ``member:invite``."""
        page = parse(PageIn, limit=limit, cursor=cursor)
        after = decode_cursor(page.cursor)
        self._authz.require(actor_id, organization_id, "member:invite")
        items = self._k.read(
            lambda uow: uow.invitations.list_for_organization(
                organization_id, limit=page.limit + 1, after=after
            )
        )
        more = len(items) > page.limit
        items = items[: page.limit]
        return Page(items, encode_cursor(items[-1].id) if more else None)

    def role_names(self, invitation: Invitation) -> builtins.list[str]:
        """Names of the invitation's roles that still exist."""
        return sorted(
            r.name
            for r in self._k.read(
                lambda uow: uow.roles.get_many(invitation.organization_id, invitation.role_ids)
            )
        )

    def revoke(
        self,
        actor_id: UUID,
        organization_id: UUID,
        invitation_id: UUID,
        ctx: RequestContext | None = None,
    ) -> None:
        """Revoke a pending invitation; requires ``member:invite``. Raises InvitationNotPending, NotFound."""
        self._authz.require(actor_id, organization_id, "member:invite", ctx)
        k = self._k

        def body(uow: UnitOfWork) -> None:
            invitation = uow.invitations.get(organization_id, invitation_id)
            if invitation is None:
                raise NotFound("invitation")
            if uow.invitations.revoke(invitation_id, k.now()) is None:
                raise InvitationNotPending("The invitation was already accepted or revoked.")
            k.audit(
                uow,
                "invitation.revoked",
                ctx,
                actor=actor_id,
                org=organization_id,
                target_type="invitation",
                target_id=invitation_id,
            )

        k.write(body)

    def accept(self, user_id: UUID, token: str, ctx: RequestContext | None = None) -> Membership:
        """Join the organization. Raises OneTimeTokenError, InvitationExpired,
        EmailNotVerified, InvitationEmailMismatch, AlreadyMember."""
        data = parse(TokenIn, token=token)
        k = self._k
        if not is_well_formed(data.token):
            raise OneTimeTokenError()
        token_hash = hash_token(data.token)

        def body(uow: UnitOfWork) -> Membership:
            invitation = uow.invitations.get_by_token_hash(token_hash)
            if invitation is None:
                raise OneTimeTokenError()
            user = uow.users.get(user_id)
            if user is None or not user.is_active:
                raise NotFound("user")
            if not user.is_verified:
                raise EmailNotVerified("Verify your email address to accept invitations.")
            if normalize_email(user.email) != invitation.email:
                raise InvitationEmailMismatch("This invitation was sent to another address.")
            if uow.organizations.get(invitation.organization_id, for_update=True) is None:
                raise OneTimeTokenError()
            now = k.now()
            accepted = uow.invitations.accept(invitation.id, user_id, now)
            if accepted is None:
                current = uow.invitations.get(invitation.organization_id, invitation.id)
                if current is not None and current.status(now) is InvitationStatus.EXPIRED:
                    raise InvitationExpired()
                raise OneTimeTokenError()
            if uow.memberships.get(invitation.organization_id, user_id) is not None:
                raise AlreadyMember("You are already a member.")
            role_ids = frozenset(
                r.id for r in uow.roles.get_many(invitation.organization_id, invitation.role_ids)
            )
            if not role_ids:
                member = uow.roles.get_by_name(invitation.organization_id, MEMBER)
                role_ids = frozenset() if member is None else frozenset({member.id})
            membership = Membership(
                id=new_id(),
                organization_id=invitation.organization_id,
                user_id=user_id,
                role_ids=role_ids,
                joined_at=now,
                updated_at=now,
            )
            uow.memberships.add(membership)
            k.audit(
                uow,
                "invitation.accepted",
                ctx,
                actor=user_id,
                org=invitation.organization_id,
                target_type="invitation",
                target_id=invitation.id,
            )
            k.audit(
                uow,
                "member.added",
                ctx,
                actor=user_id,
                org=invitation.organization_id,
                target_type="user",
                target_id=user_id,
                invitation_id=str(invitation.id),
            )
            return membership

        membership = k.write(body)
        self._authz.invalidate(membership.organization_id)
        return membership
