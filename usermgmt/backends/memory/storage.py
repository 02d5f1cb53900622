"""Write-once blob storage in memory.

:class:`LocalBlobStorage` (a directory) lives in :mod:`usermgmt.backends.storage.local`
and is re-exported here; the key rules are in :mod:`usermgmt.backends.storage.common`.
"""

from __future__ import annotations

import hashlib
import threading

from usermgmt.backends.storage.common import (
    DEFAULT_CONTENT_TYPE,
    check_checksum,
    validate_blob_key,
)
from usermgmt.backends.storage.local import LocalBlobStorage
from usermgmt.errors import BlobExists, NotFound
from usermgmt.ports import BlobInfo

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "LocalBlobStorage",
    "MemoryBlobStorage",
    "check_checksum",
    "validate_blob_key",
]


def _info(key: str, data: bytes, content_type: str) -> BlobInfo:
    return BlobInfo(
        key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(), content_type=content_type
    )


class MemoryBlobStorage:
    """A write-once :class:`~usermgmt.ports.BlobStorage` in a dict; thread-safe.

    Keys are validated like :class:`LocalBlobStorage`'s so tests catch keys that
    would not work on disk.
    """

    def __init__(self) -> None:
        self._blobs: dict[str, tuple[bytes, BlobInfo]] = {}
        self._lock = threading.Lock()

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        checksum_sha256: str | None = None,
    ) -> BlobInfo:
        """Store ``data`` under a new key; the same bytes again return the stored info.
        Raises BlobExists for different bytes, BlobIntegrityError for a wrong checksum,
        ValidationError for a bad key."""
        validate_blob_key(key)
        data = bytes(data)
        check_checksum(key, data, checksum_sha256)
        with self._lock:
            existing = self._blobs.get(key)
            if existing is not None:
                if existing[0] != data:
                    raise BlobExists(f"blob {key!r} exists with different content")
                return existing[1]
            info = _info(key, data, content_type)
            self._blobs[key] = (data, info)
            return info

    def head(self, key: str) -> BlobInfo | None:
        """The key's info, or None."""
        existing = self._blobs.get(key)
        return None if existing is None else existing[1]

    def get(self, key: str) -> bytes:
        """The stored bytes; raises NotFound."""
        existing = self._blobs.get(key)
        if existing is None:
            raise NotFound("blob")
        return existing[0]

    def list(self, prefix: str = "") -> list[BlobInfo]:
        """Infos of the keys starting with ``prefix``, sorted by key."""
        with self._lock:
            return [
                info for key, (_, info) in sorted(self._blobs.items()) if key.startswith(prefix)
            ]
