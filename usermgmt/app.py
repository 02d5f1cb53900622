"""The composition root: Settings → backends → services.

::

    um = UserManagement(Settings())     # from the environment
    um = UserManagement.in_memory()     # every backend in memory, for tests
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from usermgmt.backends import Backends, build_backends
from usermgmt.clock import FakeClock, SystemClock
from usermgmt.config import Settings
from usermgmt.email.rendering import EmailRenderer
from usermgmt.errors import BackendError, ConfigurationError
from usermgmt.models import Permission
from usermgmt.oauth.service import OAuthService
from usermgmt.observability import hooks
from usermgmt.permissions import PermissionRegistry
from usermgmt.ports import BreachChecker, Clock, EmailMessage, PasswordHasher, RateLimitResult
from usermgmt.security.clientip import client_ip
from usermgmt.security.jwt import TokenCodecs
from usermgmt.security.limits import BuiltinLimits
from usermgmt.security.passwords import PasslibHasher, PasswordPolicy
from usermgmt.services.admin import AdminService
from usermgmt.services.archive import AUDIT_ARCHIVE_TASK, ArchiveReport, AuditArchiver
from usermgmt.services.audit import AuditService
from usermgmt.services.auth import AuthService
from usermgmt.services.authorization import AuthorizationService
from usermgmt.services.base import Kernel
from usermgmt.services.invitations import InvitationService
from usermgmt.services.members import MembershipService
from usermgmt.services.notifications import SEND_EMAIL_TASK, Notifier
from usermgmt.services.organizations import OrganizationService
from usermgmt.services.roles import RoleService
from usermgmt.services.users import UserService

if TYPE_CHECKING:
    from usermgmt.observability.health import HealthService
    from usermgmt.observability.metrics import Metrics

logger = logging.getLogger("usermgmt")

Task = Callable[[Mapping[str, Any]], None]


def _login_counter(on_login: Callable[[str], None] | None) -> Callable[[str], None]:
    """Every login result goes to the metrics hooks, then to the application's callback."""

    def count(result: str) -> None:
        hooks.count_login(result)
        if on_login is not None:
            on_login(result)

    return count


class UserManagement:
    """Everything usermgmt does, for one application.

    Services: :attr:`users`, :attr:`auth`, :attr:`organizations`, :attr:`members`,
    :attr:`invitations`, :attr:`roles`, :attr:`authz`, :attr:`audit`, :attr:`admin`,
    :attr:`oauth`.
    Thread-safe: build one per process and share it.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        backends: Backends | None = None,
        clock: Clock | None = None,
        hasher: PasswordHasher | None = None,
        breach_checker: BreachChecker | None = None,
        email_template_dirs: Sequence[str | os.PathLike[str]] = (),
        permissions: Iterable[str | tuple[str, str]] = (),
        limits: BuiltinLimits | None = None,
        on_login: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.clock: Clock = clock or SystemClock()
        self._tasks: dict[str, Task] = {
            SEND_EMAIL_TASK: self._send_email,
            AUDIT_ARCHIVE_TASK: self._archive_audit,
        }
        self.backends = backends or build_backends(self.settings, self.clock, self.run_task)
        self.registry = PermissionRegistry(self.settings.app_permissions)
        for item in permissions:
            name, description = (item, "") if isinstance(item, str) else item
            self.registry.register(name, description)
        renderer = EmailRenderer(
            template_dirs=email_template_dirs, defaults={"app_name": self.settings.app_name}
        )
        self.hasher: PasswordHasher = hasher or PasslibHasher.from_settings(self.settings)
        # The dummy hash of SEC-AU-02 is built by the hasher, not computed: no process
        # pays argon2's PASSWORD_ARGON2_MEMORY_KIB for it at start-up.
        b = self.backends
        self.kernel = Kernel(
            settings=self.settings,
            uow=b.uow,
            clock=self.clock,
            hasher=self.hasher,
            policy=PasswordPolicy.from_settings(self.settings, breach_checker=breach_checker),
            codecs=TokenCodecs.from_settings(self.settings, clock=self.clock),
            cache=b.cache,
            limiter=b.rate_limiter,
            attempts=b.attempts,
            revocations=b.revocations,
            notifier=Notifier(self.settings, b.queue, renderer),
            registry=self.registry,
            limits=limits or BuiltinLimits(),
        )
        k = self.kernel
        self.authz = AuthorizationService(k)
        self.auth = AuthService(k, on_login=_login_counter(on_login))
        self.users = UserService(k, self.authz)
        self.admin = AdminService(k, self.users, self.authz)
        self.organizations = OrganizationService(k, self.authz)
        self.members = MembershipService(k, self.authz)
        self.invitations = InvitationService(k, self.authz)
        self.roles = RoleService(k, self.authz)
        self.audit = AuditService(k, self.authz)
        self.oauth = OAuthService(k, self.auth)

    # --- constructors ---------------------------------------------------------------------

    @classmethod
    def from_env(cls, **kwargs: Any) -> UserManagement:
        """``UserManagement(Settings(), **kwargs)``: configuration from the environment."""
        return cls(Settings(), **kwargs)

    @classmethod
    def in_memory(
        cls,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        **kwargs: Any,
    ) -> UserManagement:
        """Every backend in memory (no server, no network), a cheap argon2 profile,
        emails in an outbox (:attr:`outbox`) and jobs run at once. For tests.

        Pass ``clock=FakeClock()`` to control time; setting overrides go in ``settings``
        (built with :meth:`Settings.for_tests`).
        """
        settings = settings or Settings.for_tests()
        if settings.is_production:
            raise ConfigurationError("UserManagement.in_memory() is not for production")
        if not settings.database_url.startswith("memory:"):
            settings = settings.model_copy(update={"database_url": "memory://"})
        um = cls(settings, clock=clock, **kwargs)
        um.seed()
        return um

    # --- application hooks -----------------------------------------------------------------

    def register_permission(self, name: str, description: str = "") -> Permission:
        """Add an application permission (``resource:action``) to the catalogue.

        Owners and admins hold it at once. Raises ValidationError for a malformed name.
        """
        return self.registry.register(name, description)

    def register_task(self, name: str, task: Task) -> None:
        """Make a task runnable by the queue (workers must register the same ones)."""
        self._tasks[name] = task

    def run_task(self, name: str, payload: Mapping[str, Any]) -> None:
        """Execute a queued task by name (what queue workers call)."""
        try:
            task = self._tasks[name]
        except KeyError:
            raise ConfigurationError(f"unknown task {name!r}") from None
        task(payload)

    def seed(self) -> None:
        """Store the permission catalogue and create missing system roles (idempotent)."""
        self.kernel.write(lambda uow: uow.permissions.ensure(self.registry.all()))
        self.organizations.ensure_system_roles()

    # --- HTTP helpers (used by the adapters; business-free) --------------------------------

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client address: ``X-Forwarded-For`` only behind ``TRUSTED_PROXIES``."""
        return client_ip(peer, forwarded_for, self.settings.trusted_proxies)

    def check_request_rate(self, client: str | None) -> RateLimitResult | None:
        """The global per-client limit (``RATE_LIMIT_*``): the decision and the numbers for
        the ``RateLimit-*`` headers, or None when disabled or the client is unknown."""
        s = self.settings
        if not s.rate_limit_enabled or client is None:
            return None
        return self.backends.rate_limiter.hit(
            f"global:{client}",
            limit=s.rate_limit_max_requests,
            window_seconds=s.rate_limit_window_ms / 1000,
        )

    # --- conveniences --------------------------------------------------------------------------

    @functools.cached_property
    def health(self) -> HealthService:
        """Health checks of the backends (what ``/health`` and its siblings serve)."""
        from usermgmt.observability.health import HealthService

        return HealthService(self)

    @functools.cached_property
    def metrics(self) -> Metrics:
        """Prometheus metrics (what ``/metrics`` serves), created on first use; this also
        starts the process's instruments. Raises MissingDependency without
        prometheus-client (the ``metrics`` extra)."""
        from usermgmt.observability.metrics import Metrics

        return Metrics(self)

    @functools.cached_property
    def audit_archiver(self) -> AuditArchiver:
        """Archival, verification and export of the audit trail (``usermgmt audit ...``)
        on the configured blob storage, archiving after ``AUDIT_ARCHIVE_AFTER_DAYS``."""
        return AuditArchiver(
            self.backends.uow,
            self.backends.blobs,
            self.clock,
            after_days=self.settings.audit_archive_after_days,
            compress_level=self.settings.audit_archive_gzip_level,
            concurrency=self.settings.audit_archive_concurrency,
        )

    def _archive_audit(self, payload: Mapping[str, Any]) -> None:
        """The ``audit.archive`` task (payload ``{}``); fails the job if a stream failed."""
        report: ArchiveReport = self.audit_archiver.archive()
        if not report.ok:
            raise BackendError("audit archival incomplete: " + "; ".join(report.problems))

    @property
    def outbox(self) -> Any:
        """The in-memory email outbox (a MemoryEmailSender), when email goes there."""
        from usermgmt.backends.memory import MemoryEmailSender

        if not isinstance(self.backends.email, MemoryEmailSender):
            raise ConfigurationError("the outbox exists only with EMAIL_PROVIDER=memory")
        return self.backends.email

    @property
    def fake_clock(self) -> FakeClock:
        """The FakeClock given at construction (tests)."""
        if not isinstance(self.clock, FakeClock):
            raise ConfigurationError("this UserManagement runs on the system clock")
        return self.clock

    def with_backends(self, **changes: Any) -> Backends:
        """A copy of the backends with some replaced (for building a variant)."""
        return dataclasses.replace(self.backends, **changes)

    def close(self) -> None:
        """Stop background workers of the in-process queue, if any, and close the
        database connection pools (a later use opens new connections)."""
        close = getattr(self.backends.queue, "close", None)
        if callable(close):
            close()
        dispose = getattr(self.backends.uow, "dispose", None)
        if callable(dispose):
            dispose()

    def _send_email(self, payload: Mapping[str, Any]) -> None:
        self.backends.email.send(
            EmailMessage(
                to=str(payload["to"]),
                subject=str(payload["subject"]),
                text=str(payload["text"]),
                html=None if payload.get("html") is None else str(payload["html"]),
                template=str(payload.get("template", "")),
                sender=self.settings.email_from,
            )
        )
