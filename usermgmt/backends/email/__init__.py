"""Email senders that talk to a real provider, chosen by ``EMAIL_PROVIDER``.

* ``smtp`` (:mod:`.smtp`) — the standard library's :mod:`smtplib`; ``SMTP_URL`` is
  ``smtp://[user:password@]host:port[?starttls=true]`` or ``smtps://…`` (TLS from the
  first byte). Needs no extra.
* ``sendgrid`` (:mod:`.sendgrid`) — the official client (extra ``sendgrid``),
  ``SENDGRID_API_KEY``, ``SENDGRID_API_URL``.
* ``ses`` (:mod:`.ses`) — boto3 (extra ``aws``), ``AWS_SES_REGION``, ``AWS_ENDPOINT_URL``.

Each module has a ``build(settings)`` used by :func:`usermgmt.backends.build_email`.
Every provider error becomes :class:`~usermgmt.errors.EmailDeliveryError`:
``transient=True`` when a retry may help (connection refused, timeouts, throttling,
server errors), ``transient=False`` when it cannot (bad credentials, rejected sender
or recipient, a header with a line break). Messages never carry credentials.
"""

from __future__ import annotations
