"""The error tree of usermgmt.

Every error the core raises derives from :class:`UserMgmtError` and carries a
stable machine-readable ``code``. The core never speaks HTTP: each adapter owns
one table mapping these classes to a status code.

::

    UserMgmtError                         error
    ├── ValidationError                   validation_error
    │   └── PasswordPolicyError           password_policy
    │       ├── PasswordTooShort          password_too_short
    │       ├── PasswordTooLong           password_too_long
    │       ├── PasswordTooCommon         password_too_common
    │       └── PasswordBreached          password_breached
    ├── AuthenticationError               authentication_failed
    │   ├── InvalidCredentials            invalid_credentials
    │   ├── WrongPassword                 wrong_password       (re-authentication)
    │   └── InvalidToken                  invalid_token        (access / refresh token)
    │       ├── TokenExpired              token_expired
    │       ├── TokenRevoked              token_revoked
    │       └── TokenReused               token_reused
    ├── OneTimeTokenError                 token_invalid        (verify / reset / invite token)
    │   └── InvitationExpired             invitation_expired
    ├── OAuthError                        oauth_failed         (OAuth / OIDC sign-in, 400)
    │   ├── OAuthStateInvalid             oauth_state_invalid
    │   ├── OAuthIdTokenInvalid           oauth_id_token_invalid
    │   ├── OAuthProviderError            oauth_provider_error
    │   └── OAuthEmailMissing             oauth_email_missing
    ├── AuthorizationError                permission_denied
    │   ├── PermissionDenied              permission_denied
    │   ├── EmailNotVerified              email_not_verified
    │   └── InvitationEmailMismatch       invitation_email_mismatch
    ├── NotFound                          not_found
    ├── Conflict                          conflict
    │   ├── EmailTaken                    email_taken
    │   ├── SlugTaken                     slug_taken
    │   ├── RoleNameTaken                 role_name_taken
    │   ├── AlreadyMember                 already_member
    │   ├── LastOwner                     last_owner
    │   ├── SystemRole                    system_role
    │   ├── RoleInUse                     role_in_use
    │   ├── InvitationNotPending          invitation_not_pending
    │   ├── BlobExists                    blob_exists          (write-once storage)
    │   ├── OAuthAccountNotLinked         oauth_account_not_linked
    │   ├── OAuthAccountInUse             oauth_account_in_use
    │   └── LastLoginMethod               last_login_method
    ├── RateLimited                       rate_limited
    ├── BackendError                      backend_error
    │   ├── BackendUnavailable            backend_unavailable
    │   │   └── OAuthProviderUnavailable  oauth_provider_unavailable
    │   ├── TransactionConflict           transaction_conflict (retried by services)
    │   ├── EmailDeliveryError            email_delivery_failed
    │   └── BlobIntegrityError            blob_integrity_error (checksum / size mismatch)
    └── ConfigurationError                configuration_error
        └── MissingDependency             missing_dependency

Backends translate third-party exceptions at their boundary and chain them
(``raise BackendUnavailable(...) from exc``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class UserMgmtError(Exception):
    """Root of every error raised by usermgmt."""

    code: ClassVar[str] = "error"
    title: ClassVar[str] = "Error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra: dict[str, Any] = dict(extra)
        super().__init__(self.detail)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: ``code``, ``title``, ``detail`` and extras."""
        data: dict[str, Any] = {"code": self.code, "title": self.title, "detail": self.detail}
        for key, value in self.extra.items():
            data.setdefault(key, value)  # an extra never replaces the stable fields
        return data


# --- validation -----------------------------------------------------------------


class ValidationError(UserMgmtError):
    """Input that is malformed or breaks a rule; nothing was changed."""

    code = "validation_error"
    title = "Invalid input"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[Mapping[str, Any]] = (),
        **extra: Any,
    ) -> None:
        super().__init__(detail, **extra)
        self.errors: list[dict[str, Any]] = [dict(e) for e in errors]
        if self.errors:
            self.extra["errors"] = self.errors


class PasswordPolicyError(ValidationError):
    code = "password_policy"
    title = "Password rejected"


class PasswordTooShort(PasswordPolicyError):
    code = "password_too_short"
    title = "Password too short"


class PasswordTooLong(PasswordPolicyError):
    code = "password_too_long"
    title = "Password too long"


class PasswordTooCommon(PasswordPolicyError):
    code = "password_too_common"
    title = "Password too common"


class PasswordBreached(PasswordPolicyError):
    code = "password_breached"
    title = "Password found in a breach"


# --- authentication -------------------------------------------------------------


class AuthenticationError(UserMgmtError):
    code = "authentication_failed"
    title = "Authentication failed"


class InvalidCredentials(AuthenticationError):
    """Login failed. Deliberately says nothing about why (no enumeration)."""

    code = "invalid_credentials"
    title = "Invalid credentials"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or "The email or password is incorrect.", **extra)


class WrongPassword(AuthenticationError):
    """The current password given for a re-authenticated operation is wrong."""

    code = "wrong_password"
    title = "Current password is incorrect"


class InvalidToken(AuthenticationError):
    code = "invalid_token"
    title = "Invalid token"


class TokenExpired(InvalidToken):
    code = "token_expired"
    title = "Token expired"


class TokenRevoked(InvalidToken):
    code = "token_revoked"
    title = "Token revoked"


class TokenReused(InvalidToken):
    code = "token_reused"
    title = "Refresh token reused"


# --- one-time tokens --------------------------------------------------------------


class OneTimeTokenError(UserMgmtError):
    """A verification, reset or invitation token is unknown, used, expired or of another purpose."""

    code = "token_invalid"
    title = "Invalid or expired token"


class InvitationExpired(OneTimeTokenError):
    code = "invitation_expired"
    title = "Invitation expired"


# --- OAuth / OpenID Connect login -------------------------------------------------


class OAuthError(UserMgmtError):
    """An OAuth / OpenID Connect sign-in failed on our side of the protocol (400)."""

    code = "oauth_failed"
    title = "Sign-in with the provider failed"


class OAuthStateInvalid(OAuthError):
    """The callback's ``state`` is missing, unknown, used, expired or not this browser's."""

    code = "oauth_state_invalid"
    title = "Invalid or expired sign-in attempt"


class OAuthIdTokenInvalid(OAuthError):
    """The provider's ID token failed verification (signature, iss, aud, exp, nonce)."""

    code = "oauth_id_token_invalid"
    title = "Invalid ID token"


class OAuthProviderError(OAuthError):
    """The provider answered with an error (access denied, invalid grant, ...)."""

    code = "oauth_provider_error"
    title = "The provider refused the sign-in"


class OAuthEmailMissing(OAuthError):
    """The provider gave no email address, which a new account needs."""

    code = "oauth_email_missing"
    title = "The provider gave no email address"


# --- authorization ----------------------------------------------------------------


class AuthorizationError(UserMgmtError):
    code = "permission_denied"
    title = "Permission denied"


class PermissionDenied(AuthorizationError):
    code = "permission_denied"
    title = "Permission denied"


class EmailNotVerified(AuthorizationError):
    code = "email_not_verified"
    title = "Email address not verified"


class InvitationEmailMismatch(AuthorizationError):
    code = "invitation_email_mismatch"
    title = "Invitation is for another email address"


# --- not found / conflicts ----------------------------------------------------------


class NotFound(UserMgmtError):
    """The resource does not exist, or the caller may not know that it exists."""

    code = "not_found"
    title = "Not found"

    def __init__(self, resource: str = "resource", detail: str | None = None) -> None:
        super().__init__(detail or f"{resource.capitalize()} not found.")
        self.resource = resource


class Conflict(UserMgmtError):
    code = "conflict"
    title = "Conflict"


class EmailTaken(Conflict):
    code = "email_taken"
    title = "Email already registered"


class SlugTaken(Conflict):
    code = "slug_taken"
    title = "Slug already taken"


class RoleNameTaken(Conflict):
    code = "role_name_taken"
    title = "Role name already taken"


class AlreadyMember(Conflict):
    code = "already_member"
    title = "Already a member"


class LastOwner(Conflict):
    code = "last_owner"
    title = "An organization must keep at least one owner"


class SystemRole(Conflict):
    code = "system_role"
    title = "System roles cannot be changed"


class RoleInUse(Conflict):
    code = "role_in_use"
    title = "Role is still assigned"


class InvitationNotPending(Conflict):
    code = "invitation_not_pending"
    title = "Invitation is no longer pending"


class OAuthAccountNotLinked(Conflict):
    """An account with the provider's email exists but is not linked to this identity:
    sign in to it and link the provider (never linked on email alone, SEC-OA-05/06)."""

    code = "oauth_account_not_linked"
    title = "Account exists but is not linked"


class OAuthAccountInUse(Conflict):
    """This provider identity is linked to another user already."""

    code = "oauth_account_in_use"
    title = "Provider account linked to another user"


class LastLoginMethod(Conflict):
    """Unlinking would leave the user no way to sign in (no password, no other provider)."""

    code = "last_login_method"
    title = "Last way to sign in"


# --- throttling, backends, configuration ------------------------------------------


class BlobExists(Conflict):
    """Write-once blob storage already holds different bytes under this key (never overwritten)."""

    code = "blob_exists"
    title = "Object exists"


class RateLimited(UserMgmtError):
    code = "rate_limited"
    title = "Too many requests"

    def __init__(
        self,
        detail: str | None = None,
        *,
        retry_after: float = 1.0,
        limit: int | None = None,
        remaining: int = 0,
        reset_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.retry_after = max(0.0, retry_after)
        self.limit = limit
        self.remaining = remaining
        self.reset_after = self.retry_after if reset_after is None else max(0.0, reset_after)


class BackendError(UserMgmtError):
    code = "backend_error"
    title = "Service unavailable"


class BackendUnavailable(BackendError):
    code = "backend_unavailable"
    title = "Service unavailable"


class TransactionConflict(BackendError):
    """A serialization failure or deadlock; services retry these a bounded number of times."""

    code = "transaction_conflict"
    title = "Service busy"


class OAuthProviderUnavailable(BackendUnavailable):
    """The OAuth / OpenID Connect provider could not be reached or answered with a
    server error (503: password sign-in is unaffected)."""

    code = "oauth_provider_unavailable"
    title = "Sign-in provider unavailable"


class EmailDeliveryError(BackendError):
    """The email provider refused or failed; ``transient`` says whether a retry may help."""

    code = "email_delivery_failed"
    title = "Email delivery failed"

    def __init__(self, detail: str | None = None, *, transient: bool = True) -> None:
        super().__init__(detail)
        self.transient = transient


class BlobIntegrityError(BackendError):
    """A blob's checksum or size is not what was sent or expected (upload or verification)."""

    code = "blob_integrity_error"
    title = "Storage integrity error"


class ConfigurationError(UserMgmtError):
    code = "configuration_error"
    title = "Invalid configuration"


class MissingDependency(ConfigurationError):
    """An optional dependency is not installed; the message names the extra."""

    code = "missing_dependency"
    title = "Missing optional dependency"

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f'{package} is not installed: install it with pip install "usermgmt[{extra}]"'
        )
        self.package = package
        self.extra_name = extra


__all__ = [
    "AlreadyMember",
    "AuthenticationError",
    "AuthorizationError",
    "BackendError",
    "BackendUnavailable",
    "BlobExists",
    "BlobIntegrityError",
    "ConfigurationError",
    "Conflict",
    "EmailDeliveryError",
    "EmailNotVerified",
    "EmailTaken",
    "InvalidCredentials",
    "InvalidToken",
    "InvitationEmailMismatch",
    "InvitationExpired",
    "InvitationNotPending",
    "LastLoginMethod",
    "LastOwner",
    "MissingDependency",
    "NotFound",
    "OAuthAccountInUse",
    "OAuthAccountNotLinked",
    "OAuthEmailMissing",
    "OAuthError",
    "OAuthIdTokenInvalid",
    "OAuthProviderError",
    "OAuthProviderUnavailable",
    "OAuthStateInvalid",
    "OneTimeTokenError",
    "PasswordBreached",
    "PasswordPolicyError",
    "PasswordTooCommon",
    "PasswordTooLong",
    "PasswordTooShort",
    "PermissionDenied",
    "RateLimited",
    "RoleInUse",
    "RoleNameTaken",
    "SlugTaken",
    "SystemRole",
    "TokenExpired",
    "TokenReused",
    "TokenRevoked",
    "TransactionConflict",
    "UserMgmtError",
    "ValidationError",
    "WrongPassword",
]
