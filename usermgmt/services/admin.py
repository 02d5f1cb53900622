"""Platform-superuser operations. Every use is audited (cross-tenant access is explicit)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from uuid import UUID

from usermgmt.errors import NotFound, PermissionDenied
from usermgmt.ids import new_id
from usermgmt.models import Page, RequestContext, User
from usermgmt.ports import UnitOfWork
from usermgmt.schemas import AdminUserUpdateIn, PageIn, RegisterIn, parse
from usermgmt.services.authorization import AuthorizationService
from usermgmt.services.base import Kernel, decode_cursor, encode_cursor, merge_changes
from usermgmt.services.users import UserService


class AdminService:
    def __init__(self, kernel: Kernel, users: UserService, authz: AuthorizationService) -> None:
        self._k = kernel
        self._users = users
        self._authz = authz

    def _require_superuser(self, uow: UnitOfWork, actor_id: UUID) -> User:
        actor = uow.users.get(actor_id)
        if actor is None or not actor.is_active or not actor.is_superuser:
            raise PermissionDenied("Superuser only.")
        return actor

    def list_users(
        self,
        actor_id: UUID,
        *,
        email_prefix: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        ctx: RequestContext | None = None,
    ) -> Page[User]:
        """Users ordered by id, optionally by case-insensitive email prefix. Raises PermissionDenied."""
        page = parse(PageIn, limit=limit, cursor=cursor)
        after = decode_cursor(page.cursor)
        prefix = None if not email_prefix else email_prefix.strip().lower()[:254]

        def body(uow: UnitOfWork) -> list[User]:
            self._require_superuser(uow, actor_id)
            self._k.audit(uow, "admin.users_listed", ctx, actor=actor_id, email_prefix=prefix)
            return uow.users.list(email_prefix=prefix, limit=page.limit + 1, after=after)

        users = self._k.write(body)
        more = len(users) > page.limit
        users = users[: page.limit]
        return Page(items=users, next_cursor=encode_cursor(users[-1].id) if more else None)

    def get_user(self, actor_id: UUID, user_id: UUID, ctx: RequestContext | None = None) -> User:
        """Any user. Raises PermissionDenied, NotFound."""

        def body(uow: UnitOfWork) -> User:
            self._require_superuser(uow, actor_id)
            user = uow.users.get(user_id)
            if user is None:
                raise NotFound("user")
            self._k.audit(
                uow, "admin.user_viewed", ctx, actor=actor_id, target_type="user", target_id=user_id
            )
            return user

        return self._k.write(body)

    def update_user(
        self,
        actor_id: UUID,
        user_id: UUID,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        ctx: RequestContext | None = None,
        **fields_: Any,
    ) -> User:
        """Change profile fields and flags (``is_active``, ``is_verified``, ``is_superuser``,
        ``must_reset_password``). Deactivating ends the user's sessions."""
        data = parse(AdminUserUpdateIn, merge_changes(changes, fields_))
        fields = data.model_dump(exclude_unset=True)
        k = self._k

        def body(uow: UnitOfWork) -> tuple[User, list[UUID]]:
            self._require_superuser(uow, actor_id)
            user = uow.users.get(user_id, for_update=True)
            if user is None:
                raise NotFound("user")
            now = k.now()
            updated = replace(user, **fields, updated_at=now)
            if fields.get("is_verified") and not user.is_verified:
                updated = replace(updated, email_verified_at=now)
            if fields.get("is_active") is False and user.is_active:
                updated = replace(updated, deactivated_at=now)
            revoked: list[UUID] = []
            if fields.get("is_active") is False or fields.get("must_reset_password"):
                revoked = uow.sessions.revoke_all_for_user(user_id, now, "admin")
            uow.users.update(updated)
            k.audit(
                uow,
                "admin.user_updated",
                ctx,
                actor=actor_id,
                target_type="user",
                target_id=user_id,
                fields=sorted(fields),
            )
            return updated, revoked

        updated, revoked = k.write(body)
        k.push_revocations(revoked)
        if "is_active" in fields:
            self._authz.invalidate_user(user_id)
        return updated

    def delete_user(self, actor_id: UUID, user_id: UUID, ctx: RequestContext | None = None) -> None:
        """Deactivate a user (rows and audit history stay). Raises LastOwner, NotFound."""
        self._k.read(lambda uow: self._require_superuser(uow, actor_id))
        self._users.deactivate(user_id, ctx, actor_id=actor_id)

    def create_superuser(
        self, email: str, password: str, name: str | None = None, ctx: RequestContext | None = None
    ) -> User:
        """Create a verified superuser (bootstrap; the password obeys the policy).

        Raises EmailTaken, PasswordPolicyError, ValidationError.
        """
        data = parse(RegisterIn, email=email, password=password, name=name)
        k = self._k
        k.policy.check(data.password, email=data.email)
        password_hash = k.hasher.hash(data.password)

        def body(uow: UnitOfWork) -> User:
            now = k.now()
            user = User(
                id=new_id(),
                email=data.email,
                name=data.name,
                password_hash=password_hash,
                is_verified=True,
                is_superuser=True,
                email_verified_at=now,
                created_at=now,
                updated_at=now,
            )
            uow.users.add(user)
            k.audit(
                uow,
                "admin.superuser_created",
                ctx,
                actor=None,
                target_type="user",
                target_id=user.id,
            )
            return user

        return k.write(body)
