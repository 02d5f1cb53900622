"""gunicorn settings for the examples (``gunicorn -c examples/gunicorn_conf.py ...``).

With ``PROMETHEUS_MULTIPROC_DIR`` set, every worker writes its metrics to that
directory and ``/metrics`` merges them (see :mod:`usermgmt.observability.metrics`):
the directory is emptied when gunicorn starts (samples of an earlier run would
otherwise be added in), and ``child_exit`` tells prometheus-client when a worker is gone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from usermgmt.observability.metrics import MULTIPROC_ENV, child_exit

__all__ = ["child_exit", "on_starting"]


def on_starting(server: Any) -> None:
    """gunicorn hook, in the master before any worker starts: empty the directory."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
