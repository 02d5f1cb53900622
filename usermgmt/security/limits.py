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
