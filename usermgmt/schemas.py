"""Pydantic schemas: request bodies (allowlists, bounded) and response shapes.

Both adapters parse requests with these input models and serialise results with
the output models, so the HTTP contract is the same under FastAPI and Flask. The
core validates its own keyword arguments with the same models (:func:`parse`),
turning pydantic's errors into :class:`~usermgmt.errors.ValidationError`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, ClassVar, TypeVar
from uuid import UUID

import email_validator
import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from usermgmt import models
from usermgmt.errors import PasswordTooLong, ValidationError

MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 200
MAX_METADATA_BYTES = 16 * 1024
MAX_TOKEN_LENGTH = 8192
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


def normalize_email(email: str) -> str:
    """The lookup form of an address: trimmed and lowercased."""
    return email.strip().lower()


def _email(value: str) -> str:
    value = value.strip()
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    try:
        result = email_validator.validate_email(
            value, check_deliverability=False, allow_smtputf8=True
        )
    except email_validator.EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return result.normalized


def _name(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if not value:
        raise ValueError("must not be blank")
    return value


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("must be a JSON object") from None
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
    loaded: dict[str, Any] = json.loads(encoded)
    return loaded


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            "must be 1-64 lowercase letters, digits or '-', not starting or ending with '-'"
        )
    return value


Email = Annotated[str, Field(max_length=MAX_EMAIL_LENGTH), AfterValidator(_email)]
Name = Annotated[str, Field(max_length=MAX_NAME_LENGTH), AfterValidator(_name)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]
Slug = Annotated[str, Field(max_length=64), AfterValidator(_slug)]
Password = Annotated[str, Field(min_length=1, max_length=4096)]
Token = Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]
RoleRef = Annotated[str, Field(min_length=1, max_length=100)]
PermissionName = Annotated[str, Field(min_length=3, max_length=127)]


class Input(BaseModel):
    """Base of request bodies: unknown fields are refused (no mass assignment)."""

    model_config = ConfigDict(extra="forbid", str_max_length=MAX_TOKEN_LENGTH, frozen=True)


class RegisterIn(Input):
    email: Email
    password: Password
    name: Name | None = None


class LoginIn(Input):
    email: Annotated[str, Field(min_length=1, max_length=MAX_EMAIL_LENGTH)]
    password: Password


class RefreshIn(Input):
    refresh_token: Token


class TokenIn(Input):
    token: Token


class EmailIn(Input):
    email: Email


class ResetPasswordIn(Input):
    token: Token
    password: Password


class ChangePasswordIn(Input):
    current_password: Password
    new_password: Password


class PatchIn(Input):
    """A partial update: omitted fields stay; ``null`` is refused except where it clears.

    ``NULLABLE`` names the fields whose value may be cleared with ``null``.
    """

    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _no_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.NULLABLE:
            raise ValueError("cannot be null (omit the field to keep it)")
        return value


class ProfileUpdateIn(PatchIn):
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"name"})
    name: Name | None = None
    metadata: Metadata | None = None


class AdminUserUpdateIn(PatchIn):
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"name"})
    name: Name | None = None
    metadata: Metadata | None = None
    is_active: bool | None = None
    is_verified: bool | None = None
    is_superuser: bool | None = None
    must_reset_password: bool | None = None


class OrganizationCreateIn(Input):
    name: Name
    slug: Slug | None = None
    metadata: Metadata | None = None


class OrganizationUpdateIn(PatchIn):
    name: Name | None = None
    slug: Slug | None = None
    metadata: Metadata | None = None


class MemberRolesIn(Input):
    roles: Annotated[list[RoleRef], Field(min_length=1, max_length=20)]


class InvitationCreateIn(Input):
    email: Email
    roles: Annotated[list[RoleRef], Field(min_length=1, max_length=20)] = ["member"]


class RoleCreateIn(Input):
    name: Annotated[
        str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")
    ]
    description: Annotated[str, Field(max_length=500)] = ""
    permissions: Annotated[list[PermissionName], Field(max_length=200)] = []


class RoleUpdateIn(Input):
    name: Annotated[
        str | None, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]*$")
    ] = None
    description: Annotated[str | None, Field(max_length=500)] = None
    permissions: Annotated[list[PermissionName] | None, Field(max_length=200)] = None


class PageIn(Input):
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE
    cursor: Annotated[str | None, Field(max_length=200)] = None


class AuditQueryIn(PageIn):
    organization_id: UUID | None = None
    action: Annotated[str | None, Field(max_length=100)] = None
    actor_id: UUID | None = None
    target_type: Annotated[str | None, Field(max_length=64)] = None
    target_id: Annotated[str | None, Field(max_length=200)] = None
    since: datetime | None = None
    until: datetime | None = None


InputT = TypeVar("InputT", bound=BaseModel)


def parse(model: type[InputT], data: Any = None, /, **fields: Any) -> InputT:
    """Validate ``data`` (a mapping) or keyword fields into ``model``.

    Raises ValidationError listing each bad field; nothing else escapes.
    """
    payload = fields if data is None else data
    try:
        return model.model_validate(payload)
    except pydantic.ValidationError as exc:
        raise validation_error(exc) from None


_PASSWORD_FIELDS = frozenset({"password", "current_password", "new_password"})


def validation_error(exc: pydantic.ValidationError) -> ValidationError:
    """Translate pydantic's error into ours, without echoing input values (they may be secrets).

    An over-long password is reported as PasswordTooLong whatever its length.
    """
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        if error["type"] == "string_too_long" and loc and loc[-1] in _PASSWORD_FIELDS:
            return PasswordTooLong(
                "Password is too long.",
                errors=[{"loc": [str(p) for p in loc], "msg": "too long", "type": "too_long"}],
            )
    errors = [
        {
            "loc": [str(part) for part in error["loc"]],
            "msg": str(error["msg"]).removeprefix("Value error, "),
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]
    fields = ", ".join(".".join(e["loc"]) or "body" for e in errors)
    return ValidationError(f"Invalid input: {fields}", errors=errors)


# --- responses ----------------------------------------------------------------------


class Output(BaseModel):
    model_config = ConfigDict(frozen=True)


class UserOut(Output):
    id: str
    email: str
    name: str | None
    is_active: bool
    is_verified: bool
    is_superuser: bool
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    email_verified_at: datetime | None
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: models.User) -> UserOut:
        return cls(
            id=str(user.id),
            email=user.email,
            name=user.name,
            is_active=user.is_active,
            is_verified=user.is_verified,
            is_superuser=user.is_superuser,
            metadata=user.metadata,
            created_at=user.created_at,
            updated_at=user.updated_at,
            email_verified_at=user.email_verified_at,
            last_login_at=user.last_login_at,
        )


class UserBriefOut(Output):
    id: str
    email: str
    name: str | None

    @classmethod
    def of(cls, user: models.User) -> UserBriefOut:
        return cls(id=str(user.id), email=user.email, name=user.name)


class TokenPairOut(Output):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int

    @classmethod
    def of(cls, pair: models.TokenPair) -> TokenPairOut:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=pair.token_type,
            expires_in=pair.expires_in,
        )


class SessionOut(Output):
    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool

    @classmethod
    def of(cls, session: models.Session, current_id: Any = None) -> SessionOut:
        return cls(
            id=str(session.id),
            created_at=session.created_at,
            last_used_at=session.last_used_at,
            expires_at=session.expires_at,
            ip=session.ip,
            user_agent=session.user_agent,
            current=session.id == current_id,
        )


class OrganizationOut(Output):
    id: str
    name: str
    slug: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, org: models.Organization) -> OrganizationOut:
        return cls(
            id=str(org.id),
            name=org.name,
            slug=org.slug,
            metadata=org.metadata,
            created_at=org.created_at,
            updated_at=org.updated_at,
        )


class RoleOut(Output):
    id: str
    name: str
    description: str
    permissions: list[str]
    is_system: bool

    @classmethod
    def of(cls, role: models.Role) -> RoleOut:
        return cls(
            id=str(role.id),
            name=role.name,
            description=role.description,
            permissions=sorted(role.permissions),
            is_system=role.is_system,
        )


class MemberOut(Output):
    user: UserBriefOut
    roles: list[str]
    joined_at: datetime

    @classmethod
    def of(cls, view: models.MemberView) -> MemberOut:
        return cls(
            user=UserBriefOut.of(view.user),
            roles=sorted(role.name for role in view.roles),
            joined_at=view.membership.joined_at,
        )


class MembershipOut(Output):
    organization: OrganizationOut
    roles: list[str]
    joined_at: datetime

    @classmethod
    def of(cls, item: models.UserOrganization) -> MembershipOut:
        return cls(
            organization=OrganizationOut.of(item.organization),
            roles=sorted(role.name for role in item.roles),
            joined_at=item.membership.joined_at,
        )


class InvitationOut(Output):
    id: str
    organization_id: str
    email: str
    roles: list[str]
    status: str
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(
        cls, invitation: models.Invitation, role_names: list[str], now: datetime
    ) -> InvitationOut:
        return cls(
            id=str(invitation.id),
            organization_id=str(invitation.organization_id),
            email=invitation.email,
            roles=sorted(role_names),
            status=invitation.status(now).value,
            created_at=invitation.created_at,
            expires_at=invitation.expires_at,
        )


class PermissionOut(Output):
    name: str
    description: str
    is_system: bool

    @classmethod
    def of(cls, permission: models.Permission) -> PermissionOut:
        return cls(
            name=permission.name, description=permission.description, is_system=permission.is_system
        )


class EffectivePermissionsOut(Output):
    organization_id: str
    permissions: list[str]
    roles: list[str]

    @classmethod
    def of(cls, eff: models.EffectivePermissions) -> EffectivePermissionsOut:
        return cls(
            organization_id=str(eff.organization_id),
            permissions=sorted(eff.permissions),
            roles=sorted(eff.roles),
        )


class AuditEventOut(Output):
    id: str
    occurred_at: datetime
    action: str
    actor_user_id: str | None
    organization_id: str | None
    outcome: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    metadata: dict[str, Any]

    @classmethod
    def of(cls, event: models.AuditEvent) -> AuditEventOut:
        return cls(
            id=str(event.id),
            occurred_at=event.occurred_at,
            action=event.action,
            actor_user_id=None if event.actor_user_id is None else str(event.actor_user_id),
            organization_id=None if event.organization_id is None else str(event.organization_id),
            outcome=event.outcome,
            target_type=event.target_type,
            target_id=event.target_id,
            ip=event.ip,
            user_agent=event.user_agent,
            request_id=event.request_id,
            metadata=event.metadata,
        )
