"""Users: registration, email verification, passwords, profile, sessions, deactivation."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from uuid import UUID

from usermgmt.errors import (
    EmailTaken,
    LastOwner,
    NotFound,
    OneTimeTokenError,
    RateLimited,
    WrongPassword,
)
from usermgmt.ids import new_id
from usermgmt.models import (
    OneTimeToken,
    RequestContext,
    Session,
    TokenPurpose,
    User,
)
from usermgmt.permissions import OWNER
from usermgmt.ports import UnitOfWork
from usermgmt.schemas import (
    ChangePasswordIn,
    EmailIn,
    ProfileUpdateIn,
    RegisterIn,
    ResetPasswordIn,
    TokenIn,
    normalize_email,
    parse,
)
from usermgmt.security.opaque import hash_token, is_well_formed, new_token
from usermgmt.services.auth import lockout_key
from usermgmt.services.authorization import AuthorizationService
from usermgmt.services.base import Kernel, merge_changes

logger = logging.getLogger("usermgmt.users")


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    """What :meth:`UserService.register` did.

    ``user`` is None when the address was already registered and enumeration
    prevention is on: the caller must answer exactly as for a new account.
    """

    user: User | None
    #: False under ``PREVENT_ENUMERATION``: callers must not show ``user`` to the client.
    disclosable: bool = False

    @property
    def created(self) -> bool:
        return self.user is not None

    @property
    def disclosed_user(self) -> User | None:
        """The new account when it may be shown to the client (HTTP 201), else None (202)."""
        return self.user if self.disclosable else None


def sole_owner_organizations(uow: UnitOfWork, user_id: UUID) -> list[UUID]:
    """Organizations where the user is the only owner (locks each organization row)."""
    blocked: list[UUID] = []
    for membership in uow.memberships.list_for_user(user_id):
        org_id = membership.organization_id
        owner = uow.roles.get_by_name(org_id, OWNER)
        if owner is None or owner.id not in membership.role_ids:
            continue
        uow.organizations.get(org_id, for_update=True)
        if uow.memberships.count_with_role(org_id, owner.id) <= 1:
            blocked.append(org_id)
    return blocked


class UserService:
    def __init__(self, kernel: Kernel, authz: AuthorizationService) -> None:
        self._k = kernel
        self._authz = authz

    # --- registration and verification ----------------------------------------------------

    def register(
        self,
        email: str,
        password: str,
        name: str | None = None,
        ctx: RequestContext | None = None,
    ) -> RegistrationResult:
        """Create an unverified account and queue its verification email.

        With ``PREVENT_ENUMERATION`` (default) an existing address gives the same
        result as a new one (``user=None``) and its owner gets a notice instead;
        otherwise EmailTaken. Raises ValidationError, PasswordPolicyError, RateLimited.
        """
        data = parse(RegisterIn, email=email, password=password, name=name)
        k = self._k
        k.policy.check(data.password, email=data.email)
        k.throttle("register:ip", ctx.ip if ctx else None, k.limits.register_per_ip)
        password_hash = k.hasher.hash(data.password)
        token = new_token()

        def body(uow: UnitOfWork) -> User:
            now = k.now()
            user = User(
                id=new_id(),
                email=data.email,
                name=data.name,
                password_hash=password_hash,
                created_at=now,
                updated_at=now,
            )
            uow.users.add(user)
            self._add_token(uow, user, TokenPurpose.EMAIL_VERIFICATION, token)
            k.audit(
                uow, "user.registered", ctx, actor=user.id, target_type="user", target_id=user.id
            )
            return user

        try:
            user = k.write(body)
        except EmailTaken:
            if not k.settings.prevent_enumeration:
                raise
            if k.quota("notice:email", normalize_email(data.email), k.limits.notice_per_email):
                k.notifier.existing_account(data.email)
            return RegistrationResult(user=None)
        k.notifier.verification(user, token)
        return RegistrationResult(user=user, disclosable=not k.settings.prevent_enumeration)

    def verify_email(self, token: str, ctx: RequestContext | None = None) -> User:
        """Mark the address verified. Raises OneTimeTokenError (unknown, used, expired)."""
        data = parse(TokenIn, token=token)
        k = self._k
        if not is_well_formed(data.token):
            raise OneTimeTokenError()

        def body(uow: UnitOfWork) -> User:
            now = k.now()
            consumed = uow.tokens.consume(
                TokenPurpose.EMAIL_VERIFICATION, hash_token(data.token), now
            )
            if consumed is None:
                raise OneTimeTokenError()
            user = uow.users.get(consumed.user_id, for_update=True)
            if user is None or normalize_email(user.email) != normalize_email(consumed.email):
                raise OneTimeTokenError()
            if not user.is_verified:
                user = replace(user, is_verified=True, email_verified_at=now, updated_at=now)
                uow.users.update(user)
                k.audit(
                    uow,
                    "user.email_verified",
                    ctx,
                    actor=user.id,
                    target_type="user",
                    target_id=user.id,
                )
            return user

        return k.write(body)

    def resend_verification(self, user_id: UUID, ctx: RequestContext | None = None) -> None:
        """Queue a new verification email (older links die); silent no-op if verified or throttled."""
        k = self._k
        k.throttle("resend:ip", ctx.ip if ctx else None, k.limits.resend_per_ip)
        user = self.get(user_id)
        if user.is_verified or not user.is_active:
            return
        if not k.quota(
            "verify:email", normalize_email(user.email), k.limits.verify_resend_per_email
        ):
            return
        token = self._replace_token(
            user, TokenPurpose.EMAIL_VERIFICATION, "user.verification_sent", ctx
        )
        k.notifier.verification(user, token)

    # --- passwords -------------------------------------------------------------------------

    def request_password_reset(self, email: str, ctx: RequestContext | None = None) -> None:
        """Queue a reset link if the address belongs to an active account; always returns None.

        Changes nothing on the account. Per-address mails are throttled silently.
        """
        data = parse(EmailIn, email=email)
        k = self._k
        k.throttle("forgot:ip", ctx.ip if ctx else None, k.limits.forgot_per_ip)
        address = normalize_email(data.email)
        if not k.quota("forgot:email", address, k.limits.forgot_per_email):
            return
        user = k.read(lambda uow: uow.users.get_by_email(address))
        if user is None or not user.is_active:
            return
        token = self._replace_token(
            user, TokenPurpose.PASSWORD_RESET, "user.password_reset_requested", ctx
        )
        k.notifier.password_reset(user, token)

    def reset_password(self, token: str, password: str, ctx: RequestContext | None = None) -> None:
        """Set a new password with a reset token; every session and reset token dies.

        Returns no tokens (the user signs in afterwards). Raises OneTimeTokenError,
        PasswordPolicyError, ValidationError.
        """
        data = parse(ResetPasswordIn, token=token, password=password)
        k = self._k
        if not is_well_formed(data.token):
            raise OneTimeTokenError()
        token_hash = hash_token(data.token)
        pending = k.read(lambda uow: uow.tokens.find(TokenPurpose.PASSWORD_RESET, token_hash))
        if pending is None or pending.used_at is not None or pending.expires_at <= k.now():
            raise OneTimeTokenError()
        k.policy.check(data.password, email=pending.email)
        password_hash = k.hasher.hash(data.password)

        def body(uow: UnitOfWork) -> tuple[User, list[UUID]]:
            now = k.now()
            consumed = uow.tokens.consume(TokenPurpose.PASSWORD_RESET, token_hash, now)
            if consumed is None:
                raise OneTimeTokenError()
            user = uow.users.get(consumed.user_id, for_update=True)
            if user is None or not user.is_active:
                raise OneTimeTokenError()
            user = replace(
                user, password_hash=password_hash, must_reset_password=False, updated_at=now
            )
            uow.users.update(user)
            uow.tokens.invalidate_for_user(user.id, TokenPurpose.PASSWORD_RESET, now)
            revoked = uow.sessions.revoke_all_for_user(user.id, now, "password_reset")
            k.audit(
                uow,
                "user.password_reset",
                ctx,
                actor=user.id,
                target_type="user",
                target_id=user.id,
                sessions_revoked=len(revoked),
            )
            return user, revoked

        user, revoked = k.write(body)
        k.push_revocations(revoked)
        k.attempts.reset(lockout_key(user.email))
        k.notifier.password_changed(user, k.now(), how="reset")

    def change_password(
        self,
        user_id: UUID,
        current_password: str,
        new_password: str,
        *,
        keep_session_id: UUID | None = None,
        ctx: RequestContext | None = None,
    ) -> None:
        """Change the password after checking the current one; other sessions are revoked.

        Raises WrongPassword (hash unchanged), PasswordPolicyError, RateLimited
        (the current-password check shares the login lockout), NotFound.
        """
        data = parse(ChangePasswordIn, current_password=current_password, new_password=new_password)
        k = self._k
        user = self.get(user_id)
        key = lockout_key(user.email)
        decision = k.attempts.acquire(key)
        if not decision.allowed:
            raise RateLimited(
                "Too many attempts; try again later.", retry_after=decision.retry_after
            )
        if user.password_hash is None:
            k.hasher.dummy_verify(data.current_password)
            ok = False
        else:
            ok = k.hasher.verify(data.current_password, user.password_hash)
        if not ok:
            k.attempts.record_failure(key)
            k.write(
                lambda uow: k.audit(
                    uow,
                    "user.password_change_failed",
                    ctx,
                    actor=user.id,
                    target_type="user",
                    target_id=user.id,
                )
            )
            raise WrongPassword()
        k.attempts.record_success(key)
        k.policy.check(data.new_password, email=user.email)
        password_hash = k.hasher.hash(data.new_password)

        def body(uow: UnitOfWork) -> tuple[User, list[UUID]]:
            now = k.now()
            current = uow.users.get(user.id, for_update=True)
            if current is None or not current.is_active:
                raise NotFound("user")
            current = replace(
                current, password_hash=password_hash, must_reset_password=False, updated_at=now
            )
            uow.users.update(current)
            uow.tokens.invalidate_for_user(current.id, TokenPurpose.PASSWORD_RESET, now)
            revoked = uow.sessions.revoke_all_for_user(
                current.id, now, "password_changed", except_id=keep_session_id
            )
            k.audit(
                uow,
                "user.password_changed",
                ctx,
                actor=current.id,
                target_type="user",
                target_id=current.id,
                sessions_revoked=len(revoked),
            )
            return current, revoked

        changed, revoked = k.write(body)
        k.push_revocations(revoked)
        k.notifier.password_changed(changed, k.now(), how="changed")

    # --- profile and sessions ------------------------------------------------------------------

    def get(self, user_id: UUID) -> User:
        """The user; raises NotFound."""
        user = self._k.read(lambda uow: uow.users.get(user_id))
        if user is None:
            raise NotFound("user")
        return user

    def get_by_email(self, email: str) -> User | None:
        """The user with that address (case-insensitive), if any."""
        return self._k.read(lambda uow: uow.users.get_by_email(normalize_email(email)))

    def update_profile(
        self,
        user_id: UUID,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        ctx: RequestContext | None = None,
        **fields: Any,
    ) -> User:
        """Change ``name`` and/or ``metadata``, given as a mapping (a request body) and/or
        keywords. An allowlist: any other field raises ValidationError and changes nothing."""
        data = parse(ProfileUpdateIn, merge_changes(changes, fields))
        k = self._k
        fields = data.model_dump(exclude_unset=True)

        def body(uow: UnitOfWork) -> User:
            user = uow.users.get(user_id, for_update=True)
            if user is None:
                raise NotFound("user")
            if not fields:
                return user
            updated = replace(user, **fields, updated_at=k.now())
            uow.users.update(updated)
            k.audit(
                uow,
                "user.updated",
                ctx,
                actor=user_id,
                target_type="user",
                target_id=user_id,
                fields=sorted(fields),
            )
            return updated

        return k.write(body)

    def list_sessions(self, user_id: UUID) -> list[Session]:
        """Active sessions of the user, newest first."""
        return self._k.read(lambda uow: uow.sessions.list_active_for_user(user_id, self._k.now()))

    def revoke_session(
        self, user_id: UUID, session_id: UUID, ctx: RequestContext | None = None
    ) -> None:
        """End one of the user's own sessions; NotFound for anyone else's."""
        k = self._k
        revoked: list[UUID] = []

        def body(uow: UnitOfWork) -> None:
            session = uow.sessions.get(session_id)
            if session is None or session.user_id != user_id:
                raise NotFound("session")
            if uow.sessions.revoke(session_id, k.now(), "revoked_by_user"):
                revoked.append(session_id)
            k.audit(
                uow,
                "session.revoked",
                ctx,
                actor=user_id,
                target_type="session",
                target_id=session_id,
            )

        k.write(body)
        k.push_revocations(revoked)

    def deactivate(
        self, user_id: UUID, ctx: RequestContext | None = None, *, actor_id: UUID | None = None
    ) -> None:
        """Deactivate the account and end all its sessions.

        Raises LastOwner if the user is the only owner of an organization.
        """
        k = self._k

        def body(uow: UnitOfWork) -> list[UUID]:
            user = uow.users.get(user_id, for_update=True)
            if user is None:
                raise NotFound("user")
            blocked = sole_owner_organizations(uow, user_id)
            if blocked:
                raise LastOwner(
                    "Transfer ownership or delete the organizations you solely own first.",
                    organizations=[str(o) for o in blocked],
                )
            now = k.now()
            if user.is_active:
                uow.users.update(replace(user, is_active=False, deactivated_at=now, updated_at=now))
            revoked = uow.sessions.revoke_all_for_user(user_id, now, "deactivated")
            k.audit(
                uow,
                "user.deactivated",
                ctx,
                actor=actor_id or user_id,
                target_type="user",
                target_id=user_id,
            )
            return revoked

        k.push_revocations(k.write(body))
        self._authz.invalidate_user(user_id)

    # --- helpers ------------------------------------------------------------------------------

    def _replace_token(
        self, user: User, purpose: TokenPurpose, action: str, ctx: RequestContext | None
    ) -> str:
        """A new single-use token for the user; every outstanding one of that purpose dies."""
        k, token = self._k, new_token()

        def body(uow: UnitOfWork) -> None:
            uow.tokens.invalidate_for_user(user.id, purpose, k.now())
            self._add_token(uow, user, purpose, token)
            k.audit(uow, action, ctx, actor=user.id, target_type="user", target_id=user.id)

        k.write(body)
        return token

    def _add_token(self, uow: UnitOfWork, user: User, purpose: TokenPurpose, token: str) -> None:
        ttl = (
            self._k.settings.email_verification_ttl_seconds
            if purpose is TokenPurpose.EMAIL_VERIFICATION
            else self._k.settings.password_reset_ttl_seconds
        )
        now = self._k.now()
        uow.tokens.add(
            OneTimeToken(
                id=new_id(),
                user_id=user.id,
                purpose=purpose,
                token_hash=hash_token(token),
                email=user.email,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl),
            )
        )
