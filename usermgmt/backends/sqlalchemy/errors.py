"""Translation of database errors into usermgmt errors, at the backend boundary.

* A violated unique constraint becomes the domain error of that constraint (found by
  its name on PostgreSQL, by its columns or index name in SQLite's message), any other
  integrity error a plain :class:`~usermgmt.errors.Conflict`.
* Serialization failures, deadlocks and lock timeouts (SQLSTATE 40001, 40P01, 55P03;
  SQLite's "database is locked") become :class:`~usermgmt.errors.TransactionConflict`,
  which the services retry a bounded number of times.
* Lost connections, refused connections, an exhausted pool and other operational
  errors become :class:`~usermgmt.errors.BackendUnavailable`.

Everything is chained (``raise ... from exc``) so the driver's error stays in tracebacks.
"""

from __future__ import annotations

from typing import NoReturn

from sqlalchemy import exc as sa_exc

from usermgmt.errors import (
    AlreadyMember,
    BackendUnavailable,
    Conflict,
    EmailTaken,
    RoleNameTaken,
    SlugTaken,
    TransactionConflict,
    UserMgmtError,
)

__all__ = ["CONSTRAINT_ERRORS", "raise_translated", "sqlstate_of", "translate"]

#: Constraint (or unique index) name → the domain error its violation means.
CONSTRAINT_ERRORS: dict[str, type[Conflict]] = {
    "uq_users_lower_email": EmailTaken,
    "uq_organizations_slug": SlugTaken,
    "uq_roles_organization_id_name": RoleNameTaken,
    "uq_organization_memberships_organization_id_user_id": AlreadyMember,
}

#: SQLite names the columns of a violated unique constraint instead of its name.
_SQLITE_COLUMNS: dict[str, str] = {
    "organizations.slug": "uq_organizations_slug",
    "roles.organization_id, roles.name": "uq_roles_organization_id_name",
    "organization_memberships.organization_id, organization_memberships.user_id": (
        "uq_organization_memberships_organization_id_user_id"
    ),
    "oauth_accounts.provider, oauth_accounts.subject": "uq_oauth_accounts_provider_subject",
}

_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})

_MESSAGES: dict[str, str] = {
    "uq_oauth_accounts_provider_subject": "this OAuth account is linked already",
    "uq_invitations_token_hash": "invitation token hash exists",
    "uq_one_time_tokens_token_hash": "one-time token exists",
}


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error (psycopg 3 ``sqlstate``, psycopg 2 ``pgcode``)."""
    orig = getattr(error, "orig", error)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def _constraint_name(error: sa_exc.IntegrityError) -> str | None:
    diag = getattr(error.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if isinstance(name, str):
        return name
    message = str(error.orig)
    if "UNIQUE constraint failed:" in message:  # SQLite
        detail = message.split("UNIQUE constraint failed:", 1)[1].strip()
        if detail.startswith("index '"):
            return detail[len("index '") :].split("'", 1)[0]
        return _SQLITE_COLUMNS.get(detail, detail)
    return None


def _integrity(error: sa_exc.IntegrityError) -> UserMgmtError:
    name = _constraint_name(error)
    if name is not None and name in CONSTRAINT_ERRORS:
        return CONSTRAINT_ERRORS[name]()
    if name is not None and name in _MESSAGES:
        return Conflict(_MESSAGES[name])
    if sqlstate_of(error) == "23503" or "FOREIGN KEY constraint failed" in str(error.orig):
        return Conflict("a referenced record does not exist (or was deleted meanwhile)")
    if sqlstate_of(error) == "23505" or "UNIQUE constraint failed" in str(error.orig):
        return Conflict("the record exists already")
    return Conflict("the change breaks a database constraint")


def _is_sqlite_lock(error: sa_exc.DBAPIError) -> bool:
    message = str(error.orig).lower()
    return "database is locked" in message or "database table is locked" in message


def translate(error: BaseException) -> BaseException:
    """The usermgmt error for a SQLAlchemy or driver error; other errors unchanged.

    Callers ``raise translate(exc) from exc``.
    """
    if isinstance(error, UserMgmtError):
        return error
    if isinstance(error, sa_exc.IntegrityError):
        return _integrity(error)
    if isinstance(error, sa_exc.DBAPIError):
        if sqlstate_of(error) in _RETRYABLE_SQLSTATES or _is_sqlite_lock(error):
            return TransactionConflict("the transaction conflicted with another; retry it")
        if (
            error.connection_invalidated
            or isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
            or (sqlstate_of(error) or "").startswith("08")  # connection exceptions
        ):
            return BackendUnavailable("The database is unavailable.")
        return error
    if isinstance(error, sa_exc.TimeoutError):  # the pool stayed exhausted
        return BackendUnavailable("The database is busy: no connection became free in time.")
    if isinstance(error, sa_exc.DisconnectionError):
        return BackendUnavailable("The database is unavailable.")
    return error


def raise_translated(error: BaseException) -> NoReturn:
    """Raise the usermgmt error for ``error`` chained to it, or ``error`` itself when it
    has no translation. Call it from the ``except`` block that caught ``error``."""
    translated = translate(error)
    if translated is error:
        raise error
    raise translated from error
