"""Operations: health checks, Prometheus metrics, structured logs.

* :mod:`~usermgmt.observability.health`: ``/health`` and its siblings;
* :mod:`~usermgmt.observability.metrics`: ``/metrics`` (``um.metrics``; needs the
  ``metrics`` extra, imported on first use only);
* :mod:`~usermgmt.observability.hooks`: where backends report durations and counts;
* :mod:`~usermgmt.observability.logging`: :func:`configure_logging`, the JSON formatter
  and the redaction filter; :mod:`~usermgmt.observability.context`: the request and
  user ids the adapters bind for log records.

Framework-free: the adapters only turn these answers into HTTP responses.
"""

from usermgmt.observability.health import HealthReport, HealthService

__all__ = ["HealthReport", "HealthService"]
