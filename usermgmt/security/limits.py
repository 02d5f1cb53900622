"""Built-in throttles of the authentication flows, stricter than the global per-client limit.

Numbers are per window; the per-email ones are *silent* (the response does not
change, the mail is simply not sent), the per-IP ones raise RateLimited.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    seconds: float


@dataclass(frozen=True, slots=True)
class BuiltinLimits:
    login_per_ip: Limit = Limit(30, 60)
    register_per_ip: Limit = Limit(10, 3600)
    forgot_per_ip: Limit = Limit(20, 3600)
    refresh_per_ip: Limit = Limit(120, 60)
    resend_per_ip: Limit = Limit(20, 3600)
    #: reset mails per target address (SEC-RL-08), silent
    forgot_per_email: Limit = Limit(5, 3600)
    #: verification mails per target address, silent
    verify_resend_per_email: Limit = Limit(5, 3600)
    #: "you already have an account" notices per address, silent
    notice_per_email: Limit = Limit(5, 3600)
    #: invitation mails per invited address and organization, silent
    invite_per_email: Limit = Limit(10, 3600)


# --- login lockout: the rule every AttemptCounter implements -------------------------------

#: An unlocked lockout state idle this long is forgotten (its backoff level too).
LOCKOUT_FORGET_AFTER_SECONDS = 24 * 3600.0


def check_lockout_settings(
    max_failures: int, lockout_seconds: float, max_lockout_seconds: float
) -> None:
    """Raise ValueError unless ``max_failures >= 1`` and
    ``0 < lockout_seconds <= max_lockout_seconds``."""
    if max_failures < 1 or lockout_seconds <= 0 or max_lockout_seconds < lockout_seconds:
        raise ValueError("need max_failures >= 1 and 0 < lockout_seconds <= max_lockout_seconds")


def lockout_duration(level: int, lockout_seconds: float, max_lockout_seconds: float) -> float:
    """The length of the ``level``-th lock (1 = the first): ``lockout_seconds``, doubling
    with each further lock, at most ``max_lockout_seconds``."""
    return min(lockout_seconds * 2.0 ** min(level - 1, 64), max_lockout_seconds)
