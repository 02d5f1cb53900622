"""The archiver's PostgreSQL fast path: batch boundaries and most of every canonical line
built by the database.

:func:`next_batch` finds the next archive batch of a stream in one statement (at most
``limit`` events after ``after_seq`` in chain order, stopping at the first one outside
the first one's UTC day or not older than the cutoff). :func:`line_parts` streams the
batch's events (server-side cursor) as pieces of their ``CHAIN_VERSION`` 1 canonical
line (:func:`usermgmt.audit_chain.canonical_json` of :func:`~usermgmt.audit_chain.event_record`),
written by PostgreSQL field by field in sorted-key order: ``to_json(text)`` escapes a
string as Python's ``json`` does with ``ensure_ascii=False``, ``to_char`` writes the
time as ``_time`` does, uuids and integers print alike. Only ``metadata`` (jsonb, whose
text has its own key order and spacing) comes back as JSON text for Python to
canonicalise.

Nothing here is trusted: the archiver hashes every line it assembles and compares the
result with the stored ``hash`` (and checks ``chain_seq`` and ``prev_hash``), falling
back to the reference encoder for any event that does not match. A bug here can make
archival slower, never the archive different.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from usermgmt.audit_chain import CHAIN_VERSION, organization_of
from usermgmt.backends.sqlalchemy.errors import raise_translated, sqlstate_of
from usermgmt.backends.sqlalchemy.repositories._base import SqlTransaction
from usermgmt.errors import BackendUnavailable

__all__ = ["PARTS_PAGE", "line_parts", "next_batch"]

#: Rows fetched per round trip of the server-side cursor.
PARTS_PAGE = 1_000


def _stream_filter(stream: str, params: dict[str, Any]) -> str:
    organization = organization_of(stream)
    if organization is None:
        return "organization_id IS NULL"
    params["organization_id"] = organization
    return "organization_id = :organization_id"


def next_batch(
    tx: SqlTransaction, stream: str, *, after_seq: int, limit: int, cutoff: datetime
) -> tuple[int, int, datetime, datetime] | None:
    """``(count, last_seq, min_occurred_at, max_occurred_at)`` of the next batch of
    ``stream``, or None if there is none."""
    params: dict[str, Any] = {"after": after_seq, "limit": limit, "cutoff": cutoff}
    where = _stream_filter(stream, params)
    statement = text(
        f"""
        WITH page AS (
            SELECT chain_seq, occurred_at, occurred_at AT TIME ZONE 'UTC' AS utc
            FROM audit_logs WHERE {where} AND chain_seq > :after
            ORDER BY chain_seq LIMIT :limit
        ), first AS (
            SELECT date_trunc('day', utc) AS day FROM page ORDER BY chain_seq LIMIT 1
        ), stop AS (
            SELECT min(chain_seq) AS seq FROM page, first
            WHERE occurred_at >= :cutoff OR utc < first.day
               OR utc >= first.day + interval '1 day'
        )
        SELECT count(*), max(chain_seq), min(occurred_at), max(occurred_at) FROM page
        WHERE chain_seq < coalesce((SELECT seq FROM stop), 9223372036854775807)
        """  # noqa: S608 - no user input in the text, only bound parameters
    )
    row: Any = tx.execute(statement.bindparams(**params)).one()
    count, last_seq, min_at, max_at = row
    if not count:
        return None
    return int(count), int(last_seq), min_at, max_at


def _json(column: str) -> str:
    """The JSON text of a nullable text column."""
    return f"coalesce(to_json({column})::text, 'null')"


def _quoted(column: str) -> str:
    """The JSON text of a nullable uuid column (its text needs no escaping)."""
    return f"""coalesce('"' || {column}::text || '"', 'null')"""


#: ``head``, ``middle``, ``metadata``, ``tail``, ``chain_seq``, ``prev_hash``, ``hash``:
#: the canonical line without ``hash`` is ``head + middle + canonical(metadata) + tail``
#: and the archive line ``head + '"hash":"…",' + middle + canonical(metadata) + tail``.
#: (``"v":1`` is split in two: ``:1`` would be a bind parameter to SQLAlchemy's text().)
_PARTS = f"""
    concat('{{"action":', {_json("action")}, ',"actor_user_id":', {_quoted("actor_user_id")}, ','),
    concat('"id":"', id::text, '","ip":', {_json("ip")}, ',"metadata":'),
    metadata::text,
    concat(
        ',"occurred_at":"',
        to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        '","organization_id":', {_quoted("organization_id")},
        ',"outcome":', {_json("outcome")},
        ',"prev_hash":', {_json("prev_hash")},
        ',"request_id":', {_json("request_id")},
        ',"seq":', coalesce(chain_seq::text, 'null'),
        ',"stream":"', coalesce(organization_id::text, 'platform'),
        '","target_id":', {_json("target_id")},
        ',"target_type":', {_json("target_type")},
        ',"user_agent":', {_json("user_agent")},
        ',"v":', '{CHAIN_VERSION}}}'
    ),
    chain_seq, prev_hash, hash
"""


def _driver_unavailable(error: Exception) -> bool:
    """Whether a DB-API error means the connection is gone (as errors.translate does)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    code = sqlstate_of(error) or ""
    return bool(names & {"OperationalError", "InterfaceError"}) or code.startswith("08")


def line_parts(
    tx: SqlTransaction, stream: str, *, after_seq: int, last_seq: int
) -> Iterator[Sequence[Any]]:
    """The line parts (see ``_PARTS``) of the events of ``stream`` with ``after_seq <
    chain_seq <= last_seq`` in chain order, in pages of :data:`PARTS_PAGE` rows from a
    server-side cursor (memory stays bounded)."""
    params: dict[str, Any] = {"after": after_seq, "last": last_seq}
    where = _stream_filter(stream, params)
    statement = (
        text(
            f"SELECT {_PARTS} FROM audit_logs "  # noqa: S608 - no user input in the text
            f"WHERE {where} AND chain_seq > :after AND chain_seq <= :last ORDER BY chain_seq"
        )
        .bindparams(**params)
        .execution_options(stream_results=True, yield_per=PARTS_PAGE)
    )
    result = tx.execute(statement)
    try:
        # SQLAlchemy reads one row ahead; the rest straight from the driver's
        # server-side cursor (plain tuples: SQLAlchemy's rows cost more than the
        # archiver's own work per event).
        first = result.fetchmany(1)
        if not first:
            return
        yield first
        cursor = result.cursor
        while page := cursor.fetchmany(PARTS_PAGE):
            yield page
    except SQLAlchemyError as exc:
        raise_translated(exc)
    except Exception as exc:  # the driver's own errors, read past SQLAlchemy
        if _driver_unavailable(exc):
            raise BackendUnavailable("The database is unavailable.") from exc
        raise
    finally:
        result.close()
