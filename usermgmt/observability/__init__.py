"""Operations: health checks (metrics and structured logging arrive with their issues).

Framework-free: the adapters only turn these answers into HTTP responses.
"""

from usermgmt.observability.health import HealthReport, HealthService

__all__ = ["HealthReport", "HealthService"]
