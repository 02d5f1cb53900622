"""Post-login redirect targets: an exact-match allowlist (SEC-OA-07).

The browser may ask where to land after an OAuth sign-in (``?redirect_url=``). Only a
target written in ``OAUTH_REDIRECT_URLS`` is honoured, compared as an exact string
(never a prefix, a host suffix or a parsed-and-normalised form: CVE-2021-32618,
CVE-2024-8883); a path-only target counts when ``APP_URL`` + path is allowlisted.
Anything else falls back to the first allowlisted URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit, urlunsplit

__all__ = ["append_query", "safe_redirect"]


def _clean(value: str) -> bool:
    """No control characters, spaces or backslashes anywhere."""
    return all(0x20 < ord(c) < 0x7F and c != "\\" for c in value)


def safe_redirect(candidate: object, allowlist: Sequence[str], app_url: str) -> str:
    """``candidate`` if it is allowlisted (exactly, or as a path under ``app_url``),
    otherwise the first allowlisted URL (the default)."""
    default = allowlist[0]
    if not isinstance(candidate, str) or not candidate or len(candidate) > 2048:
        return default
    if not _clean(candidate):
        return default
    if candidate in allowlist:
        return candidate
    if candidate.startswith("/") and not candidate.startswith("//"):
        absolute = app_url + candidate
        if absolute in allowlist:
            return absolute
    return default


def append_query(url: str, **params: str) -> str:
    """``url`` with ``params`` added to its query string (before any fragment)."""
    parts = urlsplit(url)
    query = urlencode(params) if not parts.query else parts.query + "&" + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
