"""What every SQL repository shares: the transaction protocol and statement helpers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar
from uuid import UUID

from sqlalchemy import CursorResult, Executable, Insert, Row, RowMapping, Table, insert
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["SqlRepository", "SqlTransaction", "entity_values", "group_by_id", "insert_ignore"]

K = TypeVar("K")


class SqlTransaction(Protocol):
    """What a repository needs from its unit of work."""

    @property
    def dialect_name(self) -> str:
        """``postgresql`` or ``sqlite``."""

    def execute(self, statement: Executable, *, write: bool = False) -> CursorResult[Any]:
        """Run a statement in the open transaction, translating database errors.

        Raises RuntimeError outside ``with uow:`` and, with ``write``, in a read-only one.
        """

    def execute_guarded(self, statement: Executable) -> int:
        """Run a write that may violate a constraint so that a violation leaves the
        transaction usable (a savepoint on PostgreSQL); the number of rows it matched."""


class SqlRepository:
    __slots__ = ("_tx",)

    def __init__(self, tx: SqlTransaction) -> None:
        self._tx = tx


def entity_values(entity: Any, table: Table) -> dict[str, Any]:
    """The column values of a dataclass entity whose field names are the column names."""
    return {column.name: getattr(entity, column.name) for column in table.columns}


def insert_ignore(dialect_name: str, table: Table, index_elements: Sequence[str]) -> Insert:
    """``INSERT ... ON CONFLICT (index_elements) DO NOTHING`` for PostgreSQL and SQLite."""
    if dialect_name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    if dialect_name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    return insert(table).prefix_with("OR IGNORE")  # pragma: no cover - no other dialect


def group_by_id(rows: Iterable[Row[Any]], child: str) -> list[tuple[RowMapping, frozenset[Any]]]:
    """Rows of a ``parent LEFT JOIN child`` grouped by the parent's ``id``, in first-seen
    order: each parent's columns with the set of its non-null ``child`` values."""
    order: list[UUID] = []
    parents: dict[UUID, RowMapping] = {}
    children: dict[UUID, set[Any]] = {}
    for row in rows:
        mapping = row._mapping
        key: UUID = mapping["id"]
        if key not in parents:
            order.append(key)
            parents[key] = mapping
            children[key] = set()
        value = mapping[child]
        if value is not None:
            children[key].add(value)
    return [(parents[key], frozenset(children[key])) for key in order]
