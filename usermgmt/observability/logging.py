"""Structured logs: one JSON object per line, with the request id and the user id, and
never a password, token or secret (SEC-LG-03/04).

usermgmt only *emits* records (on loggers named ``usermgmt.*``); importing it never
configures logging, which is the application's business. An application that wants
usermgmt's format calls :func:`configure_logging` once at start::

    import usermgmt

    um = usermgmt.UserManagement.from_env()
    usermgmt.configure_logging(um.settings)      # LOG_LEVEL, LOG_FORMAT (json | console)

Every line then looks like::

    {"timestamp": "2026-01-16T12:00:00.000Z", "level": "info", "logger": "usermgmt.access",
     "message": "GET /users/{user_id} 200", "request_id": "…", "user_id": "…",
     "method": "GET", "route": "/users/{user_id}", "status": 200, "duration_ms": 3.1}

* ``level`` uses the deployment guide's names: ``debug``, ``info``, ``warn``, ``error``
  (and ``critical``); ``timestamp`` is UTC with milliseconds.
* ``request_id`` and ``user_id`` come from :mod:`usermgmt.observability.context`,
  which the web adapters fill in (a record's own ``extra={"request_id": …}`` wins);
  other ``extra`` fields follow. Exceptions are in ``exception`` (one string).
* **Redaction** (:class:`RedactingFilter`, and the formatters themselves): the value of
  any field whose name looks secret (password, token, secret, authorization, cookie,
  api key, hash, ...) becomes ``"[REDACTED]"``, and in the message, the exception text
  and every string field, JWTs, 43-character urlsafe tokens (usermgmt's opaque tokens),
  64-character hex digests (token hashes), password hashes, ``Bearer …`` credentials
  and ``token=…``/``code=…``-style query parameters (server access logs) are masked.
* **No forged lines**: the JSON encoding escapes CR and LF, so a name containing
  ``\\n{"level": "error"}`` stays inside one record; the console format escapes them too.

``configure_logging`` also routes the uvicorn and gunicorn loggers through the same
handler (pass ``capture=()`` to leave them alone).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Final, Literal

from usermgmt.observability.context import current_request_id, current_user_id

if TYPE_CHECKING:
    from usermgmt.config import Settings

__all__ = [
    "REDACTED",
    "SERVER_LOGGERS",
    "ConsoleFormatter",
    "ContextFilter",
    "JsonFormatter",
    "RedactingFilter",
    "configure_logging",
    "is_sensitive_key",
    "redact_text",
    "redact_value",
]

REDACTED: Final = "[REDACTED]"

#: Field names whose values are never logged.
_SENSITIVE_KEY: Final = re.compile(
    r"pass(word|wd|phrase)?|pwd|secret|token|authori[sz]ation|cookie|api[-_]?key|"
    r"private[-_]?key|credential|signature|(^|_)hash($|_)|dsn|smtp_url",
    re.IGNORECASE,
)

#: What a secret looks like inside free text.
_SECRET_PATTERNS: Final = (
    # JWTs (access and refresh tokens): header.payload.signature, base64url
    re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    # password hashes (argon2, bcrypt)
    re.compile(r"\$argon2(?:id|i|d)\$[A-Za-z0-9+/=$,.-]+"),
    re.compile(r"\$2[abxy]\$\d{2}\$[./A-Za-z0-9]{53}"),
    # credentials after a scheme
    re.compile(r"(?i)(?<=bearer )[^\s\"',;]+"),
    re.compile(r"(?i)(?<=basic )[A-Za-z0-9+/=]{8,}"),
    # usermgmt's opaque tokens (secrets.token_urlsafe(32): 43 characters)
    re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
    # SHA-256 hex digests (token hashes)
    re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])"),
    # passwords inside connection URLs: scheme://user:password@host
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
)
_QUERY_PAIR: Final = re.compile(
    r"(?i)((?:^|[?&;\s])[a-z_]*(?:token|password|secret|api_?key|code)=)([^&\s\"']+)"
)

#: LogRecord attributes that are not ``extra`` fields.
_RECORD_ATTRIBUTES: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "request_id",
    "user_id",
}

_LEVELS: Final = {"WARNING": "warn"}
_LEVEL_NUMBERS: Final = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

_HANDLER_MARK: Final = "_usermgmt_handler"

#: Loggers of the servers the examples run under, routed through our handler.
SERVER_LOGGERS: Final = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "gunicorn",
    "gunicorn.error",
    "gunicorn.access",
)


# --- redaction -----------------------------------------------------------------------------


def is_sensitive_key(key: str) -> bool:
    """Whether a field named ``key`` may hold a secret (its value is never logged)."""
    return _SENSITIVE_KEY.search(key) is not None


def redact_text(text: str) -> str:
    """``text`` with everything that looks like a token, hash or credential masked."""
    text = _QUERY_PAIR.sub(lambda m: m.group(1) + REDACTED, text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def redact_value(value: Any, key: str | None = None, *, _depth: int = 0) -> Any:
    """A JSON-ready copy of ``value``: secret-named fields masked, strings scrubbed
    (:func:`redact_text`), containers walked (to a depth of 8), other objects as text."""
    if key is not None and is_sensitive_key(key) and value is not None:
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if _depth >= 8:
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact_value(v, str(k), _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, _depth=_depth + 1) for v in value]
    return redact_text(str(value))


def _message(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string must not lose the record
        message = f"{record.msg!s} {record.args!r}"
    return redact_text(message)


class RedactingFilter(logging.Filter):
    """Scrubs a record in place before any handler formats it: the message is rendered
    and masked (its ``args`` dropped), secret-named ``extra`` fields masked, string
    fields scrubbed. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _message(record)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key in _RECORD_ATTRIBUTES:
                continue
            record.__dict__[key] = redact_value(value, key)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``user_id`` (from the request context) to every record
    that does not carry its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        if getattr(record, "user_id", None) is None:
            record.user_id = current_user_id()
        return True


# --- formatters ----------------------------------------------------------------------------


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _level(record: logging.LogRecord) -> str:
    return _LEVELS.get(record.levelname, record.levelname).lower()


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: redact_value(value, key)
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


def _context_value(record: logging.LogRecord, name: str) -> str | None:
    value = getattr(record, name, None)
    if value is None:
        value = current_request_id() if name == "request_id" else current_user_id()
    return None if value is None else str(value)


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    text = record.exc_text
    if not text and record.exc_info:
        text = formatter.formatException(record.exc_info)
    return redact_text(text) if text else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring); everything
    it writes is redacted, even without :class:`RedactingFilter`."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": _level(record),
            "logger": record.name,
            "message": _message(record),
            "request_id": _context_value(record, "request_id"),
            "user_id": _context_value(record, "user_id"),
        }
        for key, value in _extras(record).items():
            document.setdefault(key, value)
        exception = _exception(self, record)
        if exception:
            document["exception"] = exception
        if record.stack_info:
            document["stack"] = redact_text(record.stack_info)
        return json.dumps(document, ensure_ascii=False, default=str, separators=(", ", ": "))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


class ConsoleFormatter(logging.Formatter):
    """A readable line per record for development:
    ``2026-01-16T12:00:00.000Z INFO usermgmt.access [req=… user=…] message key=value``.
    CR and LF are escaped (so a record stays one line) and everything is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name]
        rid, uid = _context_value(record, "request_id"), _context_value(record, "user_id")
        if rid or uid:
            parts.append(f"[req={rid or '-'} user={uid or '-'}]")
        parts.append(_escape(_message(record)))
        for key, value in _extras(record).items():
            rendered = value if isinstance(value, str) else json.dumps(value, default=str)
            parts.append(f"{key}={_escape(rendered)}")
        line = " ".join(parts)
        exception = _exception(self, record)
        if exception:
            line += " | " + _escape(exception)
        return line


# --- configuration -------------------------------------------------------------------------


def configure_logging(
    settings: Settings | None = None,
    *,
    level: str | int | None = None,
    fmt: Literal["json", "console"] | None = None,
    stream: IO[str] | None = None,
    capture: Iterable[str] = SERVER_LOGGERS,
) -> logging.Handler:
    """Send every log record of the process through one handler on the root logger,
    formatted as JSON (or console lines), with context and redaction.

    ``level`` and ``fmt`` default to the settings' ``LOG_LEVEL`` and ``LOG_FORMAT``
    (``info`` and ``json`` without settings); ``stream`` defaults to stderr. The
    loggers named in ``capture`` (by default uvicorn's and gunicorn's) lose their own
    handlers and propagate to the root. Calling it again replaces the handler it
    installed before. Returns the handler.
    """
    chosen_level = level if level is not None else (settings.log_level if settings else "info")
    if isinstance(chosen_level, str):
        name = chosen_level.strip().upper()
        chosen_level = _LEVEL_NUMBERS.get("WARNING" if name == "WARN" else name, logging.INFO)
    chosen_format = fmt or (settings.log_format if settings else "json")

    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen_format == "json" else ConsoleFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(chosen_level)
    for name in capture:
        server_logger = logging.getLogger(name)
        for old in list(server_logger.handlers):
            server_logger.removeHandler(old)
        server_logger.propagate = True
    return handler
