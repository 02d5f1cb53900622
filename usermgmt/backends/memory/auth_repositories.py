"""In-memory repositories for sessions, one-time tokens, OAuth accounts and the
audit log. See :mod:`usermgmt.backends.memory.repositories` for the shared rules."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from uuid import UUID

from usermgmt.audit_chain import GENESIS_HASH, chain_event, stream_of
from usermgmt.backends.memory.repositories import _Repository
from usermgmt.backends.memory.store import detach
from usermgmt.errors import Conflict
from usermgmt.models import AuditEvent, OAuthAccount, OneTimeToken, Session, TokenPurpose
from usermgmt.ports import AuditArchiveBatch, AuditChainHead, AuditQuery

__all__ = [
    "MemoryAuditArchiveRepository",
    "MemoryAuditLogRepository",
    "MemoryOAuthAccountRepository",
    "MemoryOneTimeTokenRepository",
    "MemorySessionRepository",
]


class MemorySessionRepository(_Repository):
    """:class:`~usermgmt.ports.SessionRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def add(self, session: Session) -> None:
        """Insert; raises Conflict for a duplicate id."""
        store, journal = self._tx.writing()
        if session.id in store.sessions:
            raise Conflict(f"session {session.id} exists")
        journal.put(store.sessions, session.id, session)

    def get(self, session_id: UUID) -> Session | None:
        return self._tx.reading().sessions.get(session_id)

    def list_active_for_user(self, user_id: UUID, now: datetime) -> list[Session]:
        """Unrevoked, unexpired sessions of the user, newest (``created_at``, then id) first."""
        found = [
            s
            for s in self._tx.reading().sessions.values()
            if s.user_id == user_id and s.is_active(now)
        ]
        return sorted(found, key=lambda s: (s.created_at, s.id), reverse=True)

    def rotate(
        self,
        session_id: UUID,
        *,
        expected_generation: int,
        expected_token_hash: str,
        new_token_hash: str,
        now: datetime,
    ) -> Session | None:
        """Atomic: bump the generation, store ``new_token_hash`` and set ``last_used_at``
        if the session is unrevoked and at the expected generation and hash."""
        store, journal = self._tx.writing()
        session = store.sessions.get(session_id)
        if (
            session is None
            or session.revoked_at is not None
            or session.generation != expected_generation
            or session.token_hash != expected_token_hash
        ):
            return None
        rotated = dataclasses.replace(
            session,
            generation=session.generation + 1,
            token_hash=new_token_hash,
            last_used_at=now,
        )
        journal.put(store.sessions, session_id, rotated)
        return rotated

    def revoke(self, session_id: UUID, now: datetime, reason: str) -> bool:
        """Atomic: revoke if not yet revoked; True if this call revoked it."""
        store, journal = self._tx.writing()
        session = store.sessions.get(session_id)
        if session is None or session.revoked_at is not None:
            return False
        revoked = dataclasses.replace(session, revoked_at=now, revoked_reason=reason)
        journal.put(store.sessions, session_id, revoked)
        return True

    def revoke_all_for_user(
        self, user_id: UUID, now: datetime, reason: str, *, except_id: UUID | None = None
    ) -> list[UUID]:
        """Revoke every unrevoked session of the user but ``except_id``; the ids, sorted."""
        store, journal = self._tx.writing()
        targets = sorted(
            s.id
            for s in store.sessions.values()
            if s.user_id == user_id and s.revoked_at is None and s.id != except_id
        )
        for session_id in targets:
            revoked = dataclasses.replace(
                store.sessions[session_id], revoked_at=now, revoked_reason=reason
            )
            journal.put(store.sessions, session_id, revoked)
        return targets

    def count_active(self, now: datetime) -> int:
        return sum(1 for s in self._tx.reading().sessions.values() if s.is_active(now))


class MemoryOneTimeTokenRepository(_Repository):
    """:class:`~usermgmt.ports.OneTimeTokenRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def add(self, token: OneTimeToken) -> None:
        """Insert; raises Conflict for a duplicate id or (purpose, token hash)."""
        store, journal = self._tx.writing()
        key = (token.purpose, token.token_hash)
        if token.id in store.tokens or key in store.token_index:
            raise Conflict("one-time token exists")
        journal.put(store.tokens, token.id, token)
        journal.put(store.token_index, key, token.id)

    def consume(self, purpose: TokenPurpose, token_hash: str, now: datetime) -> OneTimeToken | None:
        """Atomic: mark used if of that purpose, unused and unexpired at ``now``."""
        store, journal = self._tx.writing()
        token_id = store.token_index.get((purpose, token_hash))
        if token_id is None:
            return None
        token = store.tokens[token_id]
        if token.used_at is not None or token.expires_at <= now:
            return None
        used = dataclasses.replace(token, used_at=now)
        journal.put(store.tokens, token_id, used)
        return used

    def find(self, purpose: TokenPurpose, token_hash: str) -> OneTimeToken | None:
        store = self._tx.reading()
        token_id = store.token_index.get((purpose, token_hash))
        return None if token_id is None else store.tokens[token_id]

    def invalidate_for_user(self, user_id: UUID, purpose: TokenPurpose, now: datetime) -> int:
        """Mark the user's unused, unexpired tokens of ``purpose`` used at ``now``; how many."""
        store, journal = self._tx.writing()
        targets = [
            t
            for t in store.tokens.values()
            if t.user_id == user_id
            and t.purpose == purpose
            and t.used_at is None
            and t.expires_at > now
        ]
        for token in targets:
            journal.put(store.tokens, token.id, dataclasses.replace(token, used_at=now))
        return len(targets)


class MemoryOAuthAccountRepository(_Repository):
    """:class:`~usermgmt.ports.OAuthAccountRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def add(self, account: OAuthAccount) -> None:
        """Insert; raises Conflict if (provider, subject) is linked already."""
        store, journal = self._tx.writing()
        key = (account.provider, account.subject)
        if account.id in store.oauth_accounts or key in store.oauth_index:
            raise Conflict("this OAuth account is linked already")
        journal.put(store.oauth_accounts, account.id, account)
        journal.put(store.oauth_index, key, account.id)

    def get(self, provider: str, subject: str) -> OAuthAccount | None:
        store = self._tx.reading()
        account_id = store.oauth_index.get((provider, subject))
        return None if account_id is None else store.oauth_accounts[account_id]

    def list_for_user(self, user_id: UUID) -> list[OAuthAccount]:
        """The user's linked accounts, ordered by id."""
        found = [a for a in self._tx.reading().oauth_accounts.values() if a.user_id == user_id]
        return sorted(found, key=lambda a: a.id)

    def delete(self, account_id: UUID) -> bool:
        """Remove the linked account; False if it did not exist."""
        store, journal = self._tx.writing()
        account = store.oauth_accounts.get(account_id)
        if account is None:
            return False
        journal.delete(store.oauth_index, (account.provider, account.subject))
        journal.delete(store.oauth_accounts, account_id)
        return True


class MemoryAuditLogRepository(_Repository):
    """:class:`~usermgmt.ports.AuditLogRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def add(self, event: AuditEvent) -> AuditEvent:
        """Append to the stream's chain; raises Conflict for a duplicate id."""
        store, journal = self._tx.writing()
        if event.id in store.audit:
            raise Conflict(f"audit event {event.id} exists")
        stream = stream_of(event.organization_id)
        head = store.audit_heads.get(stream)
        seq, prev = (0, GENESIS_HASH) if head is None else (head.seq, head.hash)
        chained = chain_event(detach(event), seq + 1, prev)
        journal.put(store.audit_heads, stream, AuditChainHead(stream, seq + 1, str(chained.hash)))
        journal.put(store.audit, event.id, chained)
        return detach(chained)

    def list(self, query: AuditQuery, *, limit: int, before: UUID | None) -> list[AuditEvent]:
        """Matching events newest first by id; ``since`` inclusive, ``until`` exclusive."""
        found: list[AuditEvent] = []
        if limit <= 0:
            return found
        events = self._tx.reading().audit
        for event_id in sorted(events, reverse=True):
            if before is not None and event_id >= before:
                continue
            event = events[event_id]
            if _matches(event, query):
                found.append(detach(event))
                if len(found) >= limit:
                    break
        return found


class MemoryAuditArchiveRepository(_Repository):
    """:class:`~usermgmt.ports.AuditArchiveRepository` on a :class:`MemoryStore`."""

    __slots__ = ()

    def heads(self, *, after: str | None, limit: int) -> list[AuditChainHead]:
        heads = self._tx.reading().audit_heads
        streams = sorted(s for s in heads if after is None or s > after)
        return [heads[s] for s in streams[: max(0, limit)]]

    def head(self, stream: str) -> AuditChainHead | None:
        return self._tx.reading().audit_heads.get(stream)

    def events(self, stream: str, *, after_seq: int, limit: int) -> list[AuditEvent]:
        found = [
            e
            for e in self._tx.reading().audit.values()
            if stream_of(e.organization_id) == stream
            and e.chain_seq is not None
            and e.chain_seq > after_seq
        ]
        found.sort(key=lambda e: (e.chain_seq or 0, e.id))
        return [detach(e) for e in found[: max(0, limit)]]

    def count_before(self, cutoff: datetime) -> int:
        return sum(1 for e in self._tx.reading().audit.values() if e.occurred_at < cutoff)

    def batches(self, stream: str) -> list[AuditArchiveBatch]:
        batches = self._tx.reading().audit_batches
        return [batches[k] for k in sorted(k for k in batches if k[0] == stream)]

    def record_batch(self, batch: AuditArchiveBatch) -> int:
        store, journal = self._tx.writing()
        key = (batch.stream, batch.first_seq)
        if key in store.audit_batches or any(
            b.key == batch.key for b in store.audit_batches.values()
        ):
            raise Conflict(f"archive batch {batch.key} is recorded already")
        journal.put(store.audit_batches, key, batch)
        doomed = [
            e.id
            for e in store.audit.values()
            if stream_of(e.organization_id) == batch.stream
            and e.chain_seq is not None
            and batch.first_seq <= e.chain_seq <= batch.last_seq
        ]
        for event_id in doomed:
            journal.delete(store.audit, event_id)
        return len(doomed)


def _matches(event: AuditEvent, query: AuditQuery) -> bool:
    if query.organization_id is not None and event.organization_id != query.organization_id:
        return False
    if query.action is not None and event.action != query.action:
        return False
    if query.actor_user_id is not None and event.actor_user_id != query.actor_user_id:
        return False
    if query.target_type is not None and event.target_type != query.target_type:
        return False
    if query.target_id is not None and event.target_id != query.target_id:
        return False
    if query.since is not None and event.occurred_at < query.since:
        return False
    return query.until is None or event.occurred_at < query.until
