"""Opaque single-use tokens: verification, reset, invitation and refresh (SEC-TK-01/02).

Tokens are 256 random bits from :mod:`secrets`; only their SHA-256 is stored (a standard
hash is enough for a 256-bit secret, ASVS 6.5.2). Untrusted input is shape-checked with
:func:`is_well_formed` before it is hashed, so garbage never reaches the store.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Final

__all__ = [
    "MAX_TOKEN_LENGTH",
    "MIN_TOKEN_LENGTH",
    "hash_if_well_formed",
    "hash_token",
    "is_well_formed",
    "new_token",
    "tokens_equal",
]

#: ``new_token()`` returns 43 characters; the window leaves room for other generators.
MIN_TOKEN_LENGTH: Final = 16
MAX_TOKEN_LENGTH: Final = 256
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,256}")  # MIN/MAX_TOKEN_LENGTH


def new_token() -> str:
    """A fresh token: 32 bytes from the CSPRNG, urlsafe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def is_well_formed(token: object) -> bool:
    """True if ``token`` is a string of 16-256 urlsafe-base64 characters."""
    return isinstance(token, str) and _TOKEN_RE.fullmatch(token) is not None


def hash_token(token: str) -> str:
    """The hex SHA-256 of ``token``: the only form that is stored.

    Raises ``ValueError`` if the token is not well formed (see :func:`is_well_formed`);
    for untrusted input prefer :func:`hash_if_well_formed`.
    """
    if not is_well_formed(token):
        raise ValueError("malformed token")
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def hash_if_well_formed(token: object) -> str | None:
    """:func:`hash_token` of ``token``, or None if it is not well formed (never raises)."""
    if not isinstance(token, str) or not is_well_formed(token):
        return None
    return hash_token(token)


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens or token hashes (ASVS 11.2.4)."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
