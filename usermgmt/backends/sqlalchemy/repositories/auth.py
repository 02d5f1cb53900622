"""SQL repositories for sessions, one-time tokens, OAuth accounts and the audit log.

The race-prone operations (refresh rotation, revocation, token consumption) are single
``UPDATE ... WHERE <conditions> RETURNING`` statements: the row lock the update takes
makes concurrent callers queue, and each re-checks the conditions on the row the winner
left, so exactly one wins. Rotation and revocation update the same ``sessions`` row and
therefore share its lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import fields
from datetime import datetime
from json.scanner import make_scanner
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    RowMapping,
    Text,
    cast,
    delete,
    func,
    insert,
    select,
    update,
)

from usermgmt.audit_chain import GENESIS_HASH, chain_event, organization_of, stream_of
from usermgmt.backends.sqlalchemy.models import (
    AuditArchiveBatchRow,
    AuditChainHeadRow,
    AuditLogRow,
    OAuthAccountRow,
    OneTimeTokenRow,
    SessionRow,
    table_of,
)
from usermgmt.backends.sqlalchemy.repositories import audit_lines
from usermgmt.backends.sqlalchemy.repositories._base import (
    SqlRepository,
    entity_values,
    insert_ignore,
)
from usermgmt.errors import Conflict
from usermgmt.models import AuditEvent, OAuthAccount, OneTimeToken, Session, TokenPurpose
from usermgmt.ports import AuditArchiveBatch, AuditChainHead, AuditQuery

__all__ = [
    "SqlAuditArchiveRepository",
    "SqlAuditLogRepository",
    "SqlOAuthAccountRepository",
    "SqlOneTimeTokenRepository",
    "SqlSessionRepository",
]

SESSIONS = table_of(SessionRow)
TOKENS = table_of(OneTimeTokenRow)
OAUTH_ACCOUNTS = table_of(OAuthAccountRow)
AUDIT_LOGS = table_of(AuditLogRow)
AUDIT_HEADS = table_of(AuditChainHeadRow)
AUDIT_BATCHES = table_of(AuditArchiveBatchRow)


def _token(row: RowMapping) -> OneTimeToken:
    values = dict(row)
    values["purpose"] = TokenPurpose(values["purpose"])
    return OneTimeToken(**values)


class SqlSessionRepository(SqlRepository):
    """:class:`~usermgmt.ports.SessionRepository` in SQL."""

    __slots__ = ()

    def add(self, session: Session) -> None:
        """Insert; raises Conflict for a duplicate id."""
        self._tx.execute(insert(SESSIONS).values(entity_values(session, SESSIONS)), write=True)

    def get(self, session_id: UUID) -> Session | None:
        row = self._tx.execute(select(SESSIONS).where(SESSIONS.c.id == session_id)).mappings()
        found = row.first()
        return None if found is None else Session(**found)

    def list_active_for_user(self, user_id: UUID, now: datetime) -> list[Session]:
        """Unrevoked, unexpired sessions of the user, newest (``created_at``, then id) first."""
        statement = (
            select(SESSIONS)
            .where(
                SESSIONS.c.user_id == user_id,
                SESSIONS.c.revoked_at.is_(None),
                SESSIONS.c.expires_at > now,
            )
            .order_by(SESSIONS.c.created_at.desc(), SESSIONS.c.id.desc())
        )
        return [Session(**row) for row in self._tx.execute(statement).mappings()]

    def rotate(
        self,
        session_id: UUID,
        *,
        expected_generation: int,
        expected_token_hash: str,
        new_token_hash: str,
        now: datetime,
    ) -> Session | None:
        """Atomic compare-and-set of generation and token hash on an unrevoked session."""
        statement = (
            update(SESSIONS)
            .where(
                SESSIONS.c.id == session_id,
                SESSIONS.c.revoked_at.is_(None),
                SESSIONS.c.generation == expected_generation,
                SESSIONS.c.token_hash == expected_token_hash,
            )
            .values(
                generation=SESSIONS.c.generation + 1,
                token_hash=new_token_hash,
                last_used_at=now,
            )
            .returning(*SESSIONS.columns)
        )
        row = self._tx.execute(statement, write=True).mappings().first()
        return None if row is None else Session(**row)

    def revoke(self, session_id: UUID, now: datetime, reason: str) -> bool:
        """Atomic: revoke if not yet revoked; True if this call revoked it."""
        statement = (
            update(SESSIONS)
            .where(SESSIONS.c.id == session_id, SESSIONS.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .returning(SESSIONS.c.id)
        )
        return self._tx.execute(statement, write=True).first() is not None

    def revoke_all_for_user(
        self, user_id: UUID, now: datetime, reason: str, *, except_id: UUID | None = None
    ) -> list[UUID]:
        """Revoke every unrevoked session of the user but ``except_id``; the ids, sorted."""
        statement = (
            update(SESSIONS)
            .where(SESSIONS.c.user_id == user_id, SESSIONS.c.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
            .returning(SESSIONS.c.id)
        )
        if except_id is not None:
            statement = statement.where(SESSIONS.c.id != except_id)
        return sorted(self._tx.execute(statement, write=True).scalars())

    def count_active(self, now: datetime) -> int:
        statement = (
            select(func.count())
            .select_from(SESSIONS)
            .where(SESSIONS.c.revoked_at.is_(None), SESSIONS.c.expires_at > now)
        )
        return int(self._tx.execute(statement).scalar_one())


class SqlOneTimeTokenRepository(SqlRepository):
    """:class:`~usermgmt.ports.OneTimeTokenRepository` in SQL (token hashes are unique)."""

    __slots__ = ()

    def add(self, token: OneTimeToken) -> None:
        """Insert; raises Conflict for a duplicate id or token hash."""
        values = entity_values(token, TOKENS)
        values["purpose"] = str(token.purpose)
        self._tx.execute_guarded(insert(TOKENS).values(values))

    def consume(self, purpose: TokenPurpose, token_hash: str, now: datetime) -> OneTimeToken | None:
        """Atomic: mark used if of that purpose, unused and unexpired at ``now``."""
        statement = (
            update(TOKENS)
            .where(
                TOKENS.c.token_hash == token_hash,
                TOKENS.c.purpose == str(purpose),
                TOKENS.c.used_at.is_(None),
                TOKENS.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(*TOKENS.columns)
        )
        row = self._tx.execute(statement, write=True).mappings().first()
        return None if row is None else _token(row)

    def find(self, purpose: TokenPurpose, token_hash: str) -> OneTimeToken | None:
        statement = select(TOKENS).where(
            TOKENS.c.token_hash == token_hash, TOKENS.c.purpose == str(purpose)
        )
        row = self._tx.execute(statement).mappings().first()
        return None if row is None else _token(row)

    def invalidate_for_user(self, user_id: UUID, purpose: TokenPurpose, now: datetime) -> int:
        """Mark the user's unused, unexpired tokens of ``purpose`` used at ``now``; how many."""
        statement = (
            update(TOKENS)
            .where(
                TOKENS.c.user_id == user_id,
                TOKENS.c.purpose == str(purpose),
                TOKENS.c.used_at.is_(None),
                TOKENS.c.expires_at > now,
            )
            .values(used_at=now)
        )
        return self._tx.execute(statement, write=True).rowcount


class SqlOAuthAccountRepository(SqlRepository):
    """:class:`~usermgmt.ports.OAuthAccountRepository` in SQL."""

    __slots__ = ()

    def add(self, account: OAuthAccount) -> None:
        """Insert; raises Conflict if (provider, subject) is linked already."""
        self._tx.execute_guarded(
            insert(OAUTH_ACCOUNTS).values(entity_values(account, OAUTH_ACCOUNTS))
        )

    def get(self, provider: str, subject: str) -> OAuthAccount | None:
        statement = select(OAUTH_ACCOUNTS).where(
            OAUTH_ACCOUNTS.c.provider == provider, OAUTH_ACCOUNTS.c.subject == subject
        )
        row = self._tx.execute(statement).mappings().first()
        return None if row is None else OAuthAccount(**row)

    def list_for_user(self, user_id: UUID) -> list[OAuthAccount]:
        """The user's linked accounts, ordered by id."""
        statement = (
            select(OAUTH_ACCOUNTS)
            .where(OAUTH_ACCOUNTS.c.user_id == user_id)
            .order_by(OAUTH_ACCOUNTS.c.id)
        )
        return [OAuthAccount(**row) for row in self._tx.execute(statement).mappings()]

    def delete(self, account_id: UUID) -> bool:
        """Remove the linked account; False if it did not exist."""
        statement = delete(OAUTH_ACCOUNTS).where(OAUTH_ACCOUNTS.c.id == account_id)
        return bool(self._tx.execute(statement, write=True).rowcount)


class SqlAuditLogRepository(SqlRepository):
    """:class:`~usermgmt.ports.AuditLogRepository` in SQL (append-only)."""

    __slots__ = ()

    def add(self, event: AuditEvent) -> AuditEvent:
        """Append to the stream's chain; raises Conflict for a duplicate id.

        ``UPDATE audit_chain_heads SET seq = seq + 1 ... RETURNING seq, hash`` takes the
        stream's row lock (held to commit: appends to one stream queue, other streams
        are not touched) and yields the predecessor's hash; the first event of a stream
        creates the row with ``INSERT ... ON CONFLICT DO NOTHING``. Three statements per
        event in the steady state: the head update, the event insert, the head's new hash.
        A duplicate id puts the head back before raising, so a caller that catches the
        Conflict and commits leaves the head in step with the events.

        One transaction appending to two streams locks their heads in the order it
        appends: two such transactions in opposite orders can deadlock on PostgreSQL
        (one is aborted and retried as a TransactionConflict; no service does this).
        """
        heads = AUDIT_HEADS
        stream = stream_of(event.organization_id)
        bump = (
            update(heads)
            .where(heads.c.stream == stream)
            .values(seq=heads.c.seq + 1)
            .returning(heads.c.seq, heads.c.hash)
        )
        row = self._tx.execute(bump, write=True).first()
        if row is None:
            create = insert_ignore(self._tx.dialect_name, heads, ["stream"]).values(
                stream=stream, seq=0, hash=GENESIS_HASH
            )
            self._tx.execute(create, write=True)
            row = self._tx.execute(bump, write=True).one()
        seq = int(row.seq)
        chained = chain_event(event, seq, str(row.hash))
        # ON CONFLICT DO NOTHING: a duplicate id neither aborts a PostgreSQL transaction
        # nor costs a savepoint. The head is put back (the row lock is still ours, so no
        # one bumped it since) and the caller may catch Conflict and commit its other
        # writes with the head in step with the events, as with the memory backend.
        add_event = (
            insert_ignore(self._tx.dialect_name, AUDIT_LOGS, ["id"])
            .values(entity_values(chained, AUDIT_LOGS))
            .returning(AUDIT_LOGS.c.id)  # rowcount is not reliable here (psycopg: -1)
        )
        if self._tx.execute(add_event, write=True).first() is None:
            # An UPDATE, not a DELETE of a head created for this event: the application
            # role may not delete heads. A head at seq 0 (genesis hash) is an empty chain.
            put_back = update(heads).where(heads.c.stream == stream).values(seq=seq - 1)
            self._tx.execute(put_back, write=True)
            raise Conflict(f"audit event {event.id} exists")
        self._tx.execute(
            update(heads).where(heads.c.stream == stream).values(hash=chained.hash), write=True
        )
        return chained

    def list(self, query: AuditQuery, *, limit: int, before: UUID | None) -> list[AuditEvent]:
        """Matching events newest first by id; ``since`` inclusive, ``until`` exclusive."""
        if limit <= 0:
            return []
        c = AUDIT_LOGS.c
        statement = select(AUDIT_LOGS).order_by(c.id.desc()).limit(limit)
        if before is not None:
            statement = statement.where(c.id < before)
        if query.organization_id is not None:
            statement = statement.where(c.organization_id == query.organization_id)
        if query.action is not None:
            statement = statement.where(c.action == query.action)
        if query.actor_user_id is not None:
            statement = statement.where(c.actor_user_id == query.actor_user_id)
        if query.target_type is not None:
            statement = statement.where(c.target_type == query.target_type)
        if query.target_id is not None:
            statement = statement.where(c.target_id == query.target_id)
        if query.since is not None:
            statement = statement.where(c.occurred_at >= query.since)
        if query.until is not None:
            statement = statement.where(c.occurred_at < query.until)
        return [AuditEvent(**row) for row in self._tx.execute(statement).mappings()]


#: The audit_logs columns in AuditEvent's field order, ``metadata`` as JSON text.
_EVENT_COLUMNS = [
    cast(AUDIT_LOGS.c.metadata, Text).label("metadata")
    if f.name == "metadata"
    else AUDIT_LOGS.c[f.name]
    for f in fields(AuditEvent)
]
_METADATA = [f.name for f in fields(AuditEvent)].index("metadata")
_JSON_SCAN: Any = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed


def _json_value(text: str | None) -> Any:
    """``json.loads(text)`` (what the drivers' JSON loaders do) minus its wrappers: the C
    scanner straight away, json.loads itself for anything unusual (or to raise)."""
    if text is None:
        return None
    try:
        value, end = _JSON_SCAN(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _in_stream(stream: str) -> ColumnElement[bool]:
    organization_id = organization_of(stream)
    column = AUDIT_LOGS.c.organization_id
    return column.is_(None) if organization_id is None else column == organization_id


class SqlAuditArchiveRepository(SqlRepository):
    """:class:`~usermgmt.ports.AuditArchiveRepository` in SQL."""

    __slots__ = ()

    def heads(self, *, after: str | None, limit: int) -> list[AuditChainHead]:
        statement = select(AUDIT_HEADS).order_by(AUDIT_HEADS.c.stream).limit(max(0, limit))
        if after is not None:
            statement = statement.where(AUDIT_HEADS.c.stream > after)
        return [AuditChainHead(**row) for row in self._tx.execute(statement).mappings()]

    def head(self, stream: str) -> AuditChainHead | None:
        row = (
            self._tx.execute(select(AUDIT_HEADS).where(AUDIT_HEADS.c.stream == stream))
            .mappings()
            .first()
        )
        return None if row is None else AuditChainHead(**row)

    def events(self, stream: str, *, after_seq: int, limit: int) -> list[AuditEvent]:
        """Plain tuples in the dataclass's field order, built positionally, and
        ``metadata`` read as text and parsed here: the archiver reads every event
        through here, and mappings, keyword arguments and the drivers' JSON loaders
        cost more than the rest of a row's trip."""
        c = AUDIT_LOGS.c
        statement = (
            select(*_EVENT_COLUMNS)
            .where(_in_stream(stream), c.chain_seq > after_seq)
            .order_by(c.chain_seq)
            .limit(max(0, limit))
        )
        make: Any = AuditEvent  # all fields, in order: mypy cannot tell from *row
        m, load = _METADATA, _json_value
        return [
            make(*row[:m], load(row[m]), *row[m + 1 :]) for row in self._tx.execute(statement).all()
        ]

    def count_before(self, cutoff: datetime) -> int:
        statement = select(func.count()).where(AUDIT_LOGS.c.occurred_at < cutoff)
        return int(self._tx.execute(statement).scalar_one())

    def batches(self, stream: str) -> list[AuditArchiveBatch]:
        statement = (
            select(AUDIT_BATCHES)
            .where(AUDIT_BATCHES.c.stream == stream)
            .order_by(AUDIT_BATCHES.c.first_seq)
        )
        return [AuditArchiveBatch(**row) for row in self._tx.execute(statement).mappings()]

    # The archiver's optional fast path (PostgreSQL only; see audit_lines).

    def next_batch(
        self, stream: str, *, after_seq: int, limit: int, cutoff: datetime
    ) -> tuple[int, int, datetime, datetime] | None:
        return audit_lines.next_batch(
            self._tx, stream, after_seq=after_seq, limit=limit, cutoff=cutoff
        )

    def line_parts(self, stream: str, *, after_seq: int, last_seq: int) -> Iterator[Sequence[Any]]:
        return audit_lines.line_parts(self._tx, stream, after_seq=after_seq, last_seq=last_seq)

    @property
    def builds_lines(self) -> bool:
        """Whether :meth:`next_batch` and :meth:`line_parts` are available (PostgreSQL)."""
        return self._tx.dialect_name == "postgresql"

    def record_batch(self, batch: AuditArchiveBatch) -> int:
        self._tx.execute(
            insert(AUDIT_BATCHES).values(entity_values(batch, AUDIT_BATCHES)), write=True
        )
        c = AUDIT_LOGS.c
        doomed = delete(AUDIT_LOGS).where(
            _in_stream(batch.stream), c.chain_seq >= batch.first_seq, c.chain_seq <= batch.last_seq
        )
        return int(self._tx.execute(doomed, write=True).rowcount)
