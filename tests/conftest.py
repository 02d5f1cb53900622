"""Collection guards for the whole test suite.

``pytest -m core_only`` still collects every module, so folders whose modules import a
dependency that may be missing stay out of collection when it is not installed.
"""

from __future__ import annotations

import importlib.util

collect_ignore_glob: list[str] = []

# tests/sql imports SQLAlchemy and Alembic at module level.
if importlib.util.find_spec("sqlalchemy") is None or importlib.util.find_spec("alembic") is None:
    collect_ignore_glob.append("sql/*")

# tests/redis imports the redis driver at module level.
if importlib.util.find_spec("redis") is None:
    collect_ignore_glob.append("redis/*")
