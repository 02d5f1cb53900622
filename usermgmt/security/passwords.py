"""Password hashing and password policy (SECURITY.md section 1A).

* :class:`PasslibHasher` hashes with argon2id through libpass (``passlib``) and still
  verifies legacy bcrypt hashes, which it reports as needing a rehash (SEC-PW-09/10).
  bcrypt only reads 72 bytes, so a longer password is *refused* against a bcrypt hash,
  never truncated (SEC-PW-03/11).
* :class:`PasswordPolicy` is the whole policy: a length window counted in code points,
  the bundled blocklist, the user's email, and an optional breach checker. There are no
  composition rules (SEC-PW-04).
* Every password is NFKC-normalised (:func:`normalize_password`) before it is measured,
  hashed or verified, so composed and decomposed forms are the same password (SEC-PW-12).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import sys
import threading
import unicodedata
from collections.abc import Callable, Container
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from passlib.context import CryptContext

from usermgmt.errors import (
    ConfigurationError,
    PasswordBreached,
    PasswordTooCommon,
    PasswordTooLong,
    PasswordTooShort,
)
from usermgmt.ports import BreachChecker
from usermgmt.security.blocklist import default_blocklist, fold

if TYPE_CHECKING:
    from usermgmt.config import Settings

__all__ = [
    "BCRYPT_MAX_BYTES",
    "MIN_PASSWORD_LENGTH_FLOOR",
    "Argon2Parameters",
    "PasslibHasher",
    "PasswordPolicy",
    "normalize_password",
]

logger = logging.getLogger("usermgmt.security.passwords")

T = TypeVar("T")

#: bcrypt ignores everything after this many bytes; longer passwords are refused.
BCRYPT_MAX_BYTES = 72
#: No configuration may set the minimum length below this (NIST 800-63B, ASVS 6.2.1).
MIN_PASSWORD_LENGTH_FLOOR = 8
#: Passwords of this many characters must always be accepted (ASVS 6.2.9).
MAX_PASSWORD_LENGTH_FLOOR = 64

_ARGON2_PHC = re.compile(
    r"\$(?P<type>argon2(?:id|i|d))\$v=(?P<v>\d+)\$m=(?P<m>\d+),t=(?P<t>\d+),p=(?P<p>\d+)"
    r"\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+"
)
_ARGON2_VERSION = 19


def normalize_password(password: str) -> str:
    """The NFKC form of ``password``: what is measured, hashed and verified (SEC-PW-12)."""
    return unicodedata.normalize("NFKC", password)


# --- hashing ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    """argon2id cost: memory in KiB, iterations, lanes.

    Raises :class:`~usermgmt.errors.ConfigurationError` for values argon2 cannot use. The
    OWASP minimum (m >= 19456, t >= 2) is enforced by :class:`~usermgmt.config.Settings`
    outside ``ENVIRONMENT=test``, not here, so tests can use a cheap profile.
    """

    memory_kib: int
    time_cost: int
    parallelism: int

    def __post_init__(self) -> None:
        if self.parallelism < 1 or self.time_cost < 1:
            raise ConfigurationError("argon2 time cost and parallelism must be at least 1")
        if self.memory_kib < 8 * self.parallelism:
            raise ConfigurationError("argon2 memory must be at least 8 KiB per lane")

    @classmethod
    def from_settings(cls, settings: Settings) -> Argon2Parameters:
        """The ``PASSWORD_ARGON2_*`` values. Raises ConfigurationError as the constructor."""
        return cls(
            memory_kib=settings.password_argon2_memory_kib,
            time_cost=settings.password_argon2_time_cost,
            parallelism=settings.password_argon2_parallelism,
        )


def default_hash_concurrency() -> int:
    """Hashes allowed at once per process: one core is always left to serve requests."""
    return max(1, (os.cpu_count() or 2) - 1)


#: How much lower than the caller's the priority of the hashing threads is (``nice``
#: increment, Linux only): see :class:`_Bounded`.
HASH_THREAD_NICE = 10


def _lower_priority(increment: int) -> None:
    """Lower this thread's priority by ``increment`` (its own ``nice`` value: on Linux a
    thread is a task of its own, and the threads it starts, argon2's lanes, inherit it)."""
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except OSError as exc:  # not allowed here: hashes run at the normal priority
        logger.debug("password hashing threads keep their priority: %s", exc)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def dummy_argon2_hash(params: Argon2Parameters) -> str:
    """An argon2id PHC string with ``params``, a random 16-byte salt and a random 32-byte
    digest (the sizes of real hashes), matching no password. Verifying a password against
    it runs one argon2id of exactly the configured cost, like a real hash, so it needs no
    hashing to make: a process never spends ``m`` KiB at start-up for it."""
    return (
        f"$argon2id$v={_ARGON2_VERSION}$m={params.memory_kib},t={params.time_cost},"
        f"p={params.parallelism}${_b64(secrets.token_bytes(16))}${_b64(secrets.token_bytes(32))}"
    )


class _Bounded:
    """A CryptContext whose ``hash`` and ``verify`` run at most ``slots`` at a time.

    argon2 releases the GIL and each hash takes ``m`` KiB of memory: without a bound,
    a burst of logins in the threadpool saturates every core and multiplies memory,
    starving the requests that need no hashing. Waiting callers queue here instead.

    On Linux (``nice`` > 0) the hashes run in ``slots`` threads of their own whose
    priority is ``nice`` steps lower (argon2's lane threads inherit it): when logins
    keep every core busy, the scheduler still gives the event loop and the threads
    serving other requests the CPU first, so their latency stays that of an idle
    machine and the logins take the rest. The caller waits for its hash as before.
    Elsewhere, or with ``nice=0``, the hash runs in the caller's thread.
    """

    def __init__(self, context: Any, slots: int, nice: int = HASH_THREAD_NICE) -> None:
        self._inner = context
        self._slots = threading.BoundedSemaphore(slots)
        self._size = slots
        self._nice = nice if sys.platform == "linux" and hasattr(os, "setpriority") else 0
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        pid = os.getpid()
        pool = self._pool
        if pool is None or self._pool_pid != pid:
            with self._pool_lock:
                # A forked child (gunicorn --preload) has the object but not its threads.
                if self._pool is None or self._pool_pid != pid:
                    self._pool = ThreadPoolExecutor(
                        max_workers=self._size,
                        thread_name_prefix="usermgmt-password-hash",
                        initializer=_lower_priority,
                        initargs=(self._nice,),
                    )
                    self._pool_pid = pid
                pool = self._pool
        return pool

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` under the bound (in a hashing thread when ``nice``)."""
        if not self._nice:
            with self._slots:
                return function(*args)
        return self._executor().submit(function, *args).result()

    def hash(self, secret: str) -> Any:
        return self.run(self._inner.hash, secret)

    def verify(self, secret: str, hashed: str) -> Any:
        return self.run(self._inner.verify, secret, hashed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class PasslibHasher:
    """A :class:`~usermgmt.ports.PasswordHasher`: argon2id for new hashes, bcrypt verify-only.

    Verification failures of any kind (wrong password, unknown or malformed hash, a
    password too long for a bcrypt hash) return ``False`` after doing the work of one
    verification, so every failure costs the same (SEC-AU-02).

    At most ``concurrency`` hashes run at once (default: cores - 1); on Linux they run
    in threads ``nice`` steps below the caller's priority (0: in the caller's thread, at
    its priority), so that logins never take the CPU from the requests that need none.
    """

    def __init__(
        self,
        params: Argon2Parameters,
        *,
        concurrency: int | None = None,
        nice: int = HASH_THREAD_NICE,
    ) -> None:
        self.params = params
        self.concurrency = concurrency or default_hash_concurrency()
        self._context: Any = _Bounded(
            CryptContext(
                schemes=["argon2", "bcrypt"],
                deprecated=["bcrypt"],
                argon2__type="ID",
                argon2__memory_cost=params.memory_kib,
                argon2__time_cost=params.time_cost,
                argon2__parallelism=params.parallelism,
            ),
            self.concurrency,
            nice,
        )
        self._dummy_hash = dummy_argon2_hash(params)

    @classmethod
    def from_settings(cls, settings: Settings) -> PasslibHasher:
        """A hasher with the ``PASSWORD_ARGON2_*`` cost and ``PASSWORD_HASH_CONCURRENCY``.

        Raises ConfigurationError."""
        return cls(
            Argon2Parameters.from_settings(settings),
            concurrency=settings.password_hash_concurrency,
        )

    def hash(self, password: str) -> str:
        """An argon2id PHC string of the NFKC-normalised password, with a fresh salt.

        Length limits are the policy's job (:class:`PasswordPolicy`); call it first.
        """
        return str(self._context.hash(normalize_password(password)))

    def verify(self, password: str, hashed: str) -> bool:
        """True if ``password`` matches ``hashed``. Never raises for a bad hash.

        A password over 72 UTF-8 bytes never matches a bcrypt hash (bcrypt would only
        compare its first 72 bytes).
        """
        secret = normalize_password(password)
        scheme = self._identify(hashed)
        if scheme is None or (
            scheme == "bcrypt" and len(secret.encode("utf-8")) > BCRYPT_MAX_BYTES
        ):
            self._verify_dummy(secret)
            return False
        try:
            return bool(self._context.verify(secret, hashed))
        except (ValueError, TypeError):
            # Malformed parameters, salt or digest (passlib raises before hashing).
            self._verify_dummy(secret)
            return False

    def needs_rehash(self, hashed: str) -> bool:
        """True unless ``hashed`` is argon2id v19 with exactly the configured parameters."""
        if self._identify(hashed) != "argon2":
            return True
        match = _ARGON2_PHC.fullmatch(hashed)
        if match is None:
            return True
        current = (
            match["type"] == "argon2id"
            and int(match["v"]) == _ARGON2_VERSION
            and int(match["m"]) == self.params.memory_kib
            and int(match["t"]) == self.params.time_cost
            and int(match["p"]) == self.params.parallelism
        )
        if not current:
            return True
        try:
            return bool(self._context.needs_update(hashed))
        except (ValueError, TypeError):
            return True

    def dummy_verify(self, password: str) -> None:
        """One verification of the configured cost against a dummy hash.

        For logins of unknown, inactive or password-less users, so they cost the same as
        a wrong password (SEC-AU-02). The dummy hash is built, not computed (see
        :func:`dummy_argon2_hash`): nothing to warm up, and no process pays for it.
        """
        self._verify_dummy(normalize_password(password))

    def warm_up(self) -> None:
        """Nothing to do any more (kept for callers of earlier versions): the dummy hash
        is built when the hasher is."""

    def _verify_dummy(self, secret: str) -> None:
        self._context.verify(secret, self._dummy_hash)

    def _identify(self, hashed: object) -> str | None:
        if not isinstance(hashed, str) or not hashed:
            return None
        try:
            scheme = self._context.identify(hashed, required=False)
        except (ValueError, TypeError):
            return None
        return scheme if isinstance(scheme, str) else None

    def __repr__(self) -> str:
        p = self.params
        return f"PasslibHasher(argon2id m={p.memory_kib} t={p.time_cost} p={p.parallelism})"


# --- policy -------------------------------------------------------------------------------


class PasswordPolicy:
    """Checks a new password on registration, change and reset (SEC-PW-01..06, 11).

    ``blocklist`` is any container answering ``folded_password in blocklist``; it is
    given the NFKC, case-folded password (the bundled
    :class:`~usermgmt.security.blocklist.CommonPasswords` folds on its own too).

    A ``breach_checker`` that raises is logged as a warning and the password is
    **accepted** (fail-open). The breach check is an extra layer over the bundled
    blocklist and the length rule, usually backed by a third-party service; failing closed
    would turn that service's outage into an outage of registration and password reset.
    """

    __slots__ = ("blocklist", "breach_checker", "max_length", "min_length")

    def __init__(
        self,
        min_length: int,
        max_length: int,
        blocklist: Container[str],
        breach_checker: BreachChecker | None = None,
    ) -> None:
        if min_length < MIN_PASSWORD_LENGTH_FLOOR:
            raise ConfigurationError(
                f"the minimum password length cannot be below {MIN_PASSWORD_LENGTH_FLOOR}"
            )
        if max_length < max(min_length, MAX_PASSWORD_LENGTH_FLOOR):
            raise ConfigurationError(
                "the maximum password length must be at least the minimum and at least "
                f"{MAX_PASSWORD_LENGTH_FLOOR}"
            )
        self.min_length = min_length
        self.max_length = max_length
        self.blocklist = blocklist
        self.breach_checker = breach_checker

    @classmethod
    def from_settings(
        cls, settings: Settings, breach_checker: BreachChecker | None = None
    ) -> PasswordPolicy:
        """The policy of ``PASSWORD_MIN_LENGTH``/``PASSWORD_MAX_LENGTH`` with the bundled list."""
        return cls(
            settings.password_min_length,
            settings.password_max_length,
            default_blocklist(),
            breach_checker,
        )

    def check_length_only(self, password: str) -> None:
        """The cheap upper bound, for the login path; run it before any hashing.

        Raises :class:`~usermgmt.errors.PasswordTooLong`.
        """
        if len(password) > self.max_length:
            raise PasswordTooLong(
                f"Password must be at most {self.max_length} characters.",
                max_length=self.max_length,
            )

    def check(self, password: str, *, email: str | None = None) -> None:
        """Accept ``password`` or raise why not, in this order:

        :class:`~usermgmt.errors.PasswordTooLong` (raw length, checked first),
        :class:`~usermgmt.errors.PasswordTooShort` (NFKC code points),
        :class:`~usermgmt.errors.PasswordTooCommon` (blocklisted, or equal to ``email``
        or its local part, case-insensitively),
        :class:`~usermgmt.errors.PasswordBreached` (the breach checker says so).
        """
        self.check_length_only(password)
        normalized = normalize_password(password)
        if len(normalized) < self.min_length:
            raise PasswordTooShort(
                f"Password must be at least {self.min_length} characters.",
                min_length=self.min_length,
            )
        folded = fold(normalized)
        if email and folded in _email_forms(email):
            raise PasswordTooCommon(
                "Password must not be your email address or its user name.",
                reason="email",
            )
        if folded in self.blocklist:
            raise PasswordTooCommon(
                "Password is one of the most common passwords; choose another one.",
                reason="blocklist",
            )
        if self.breach_checker is not None and _breached(self.breach_checker, normalized):
            raise PasswordBreached(
                "Password has appeared in a data breach; choose another one.",
            )

    def __repr__(self) -> str:
        return (
            f"PasswordPolicy(min_length={self.min_length}, max_length={self.max_length}, "
            f"breach_checker={type(self.breach_checker).__name__})"
        )


def _email_forms(email: str) -> set[str]:
    forms = {fold(email.strip())}
    local = email.strip().rpartition("@")[0]
    if local:
        forms.add(fold(local))
    return forms


def _breached(checker: BreachChecker, password: str) -> bool:
    try:
        return bool(checker.is_breached(password))
    except Exception as exc:  # fail-open by design: see PasswordPolicy's docstring
        # Type names only: an exception message could quote the password.
        logger.warning(
            "breach checker %s failed (%s); password accepted without the breach check",
            type(checker).__name__,
            type(exc).__name__,
        )
        return False
