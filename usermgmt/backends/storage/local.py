"""Write-once blob storage in a local directory (``STORAGE_BACKEND=local``).

A blob with key ``a/b.gz`` is the file ``<root>/a/b.gz``. Its content type, size and
SHA-256 are kept in a JSON sidecar under ``<root>/.usermgmt-meta/``, where temporary
files live too.

Never overwriting, even against another process: the bytes go to a temporary file
that is fsynced, then hard-linked to the key's path (``link`` fails if the path
exists), then the directory is fsynced. On a filesystem without hard links the file
is created with ``O_CREAT | O_EXCL`` and written in place (still never overwriting,
but a crash can leave a short file, which :meth:`LocalBlobStorage.head` then reports
with its real size and SHA-256).

Keys are relative paths checked by
:func:`~usermgmt.backends.storage.common.validate_blob_key` (no absolute paths, no
``..``, no backslashes); a symlink inside the root that would lead a key outside it is
refused too.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from usermgmt.backends.storage.common import (
    DEFAULT_CONTENT_TYPE,
    META_DIR,
    check_checksum,
    validate_blob_key,
)
from usermgmt.errors import BlobExists, Conflict, NotFound, ValidationError
from usermgmt.ports import BlobInfo

__all__ = ["LocalBlobStorage"]

_CHUNK = 1024 * 1024


class LocalBlobStorage:
    """A write-once :class:`~usermgmt.ports.BlobStorage` in a directory.

    :meth:`head` hashes the file itself, so it reports what is really on disk.
    """

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root_dir).resolve()
        self._meta = self.root / META_DIR
        self._tmp = self._meta / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalBlobStorage({str(self.root)!r})"

    # -- the port ----------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        checksum_sha256: str | None = None,
    ) -> BlobInfo:
        """Store ``data`` under a new key; the same bytes again return the stored info.

        Raises BlobExists for different bytes, Conflict for a key clashing with a
        directory, BlobIntegrityError for a wrong checksum, ValidationError for a bad key.
        """
        path = self._path(key)
        data = bytes(data)
        check_checksum(key, data, checksum_sha256)
        info = BlobInfo(
            key=key,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            content_type=content_type,
        )
        with self._lock:
            if os.path.lexists(path):
                return self._existing(key, path, info)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as exc:
                raise Conflict(f"blob key {key!r} clashes with an existing key") from exc
            self._inside_root(key, path.parent)
            tmp = self._write_temp(data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return self._existing(key, path, info)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                self._write_exclusive(key, path, data, info)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            _fsync_dir(path.parent)
            self._write_sidecar(key, info)
            return info

    def head(self, key: str) -> BlobInfo | None:
        """Size and SHA-256 computed from the file on disk, or None."""
        path = self._path(key)
        if not path.is_file():
            return None
        self._inside_root(key, path)
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return BlobInfo(
            key=key, size=size, sha256=digest.hexdigest(), content_type=self._content_type(key)
        )

    def get(self, key: str) -> bytes:
        """The stored bytes; raises NotFound."""
        return b"".join(self.iter_chunks(key))

    def iter_chunks(self, key: str, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The stored bytes in chunks; raises NotFound (before the first chunk)."""
        path = self._path(key)
        if not path.is_file():
            raise NotFound("blob")
        self._inside_root(key, path)
        fh = path.open("rb")
        return _chunks(fh, chunk_size)

    def list(self, prefix: str = "") -> list[BlobInfo]:
        """Infos of the keys starting with ``prefix``, sorted by key."""
        infos = (self.head(key) for key in self.keys(prefix))
        return [info for info in infos if info is not None]

    # -- beyond the port -----------------------------------------------------------------

    def keys(self, prefix: str = "") -> builtins.list[str]:
        """The keys starting with ``prefix``, sorted."""
        keys: builtins.list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root and META_DIR in dirnames:
                dirnames.remove(META_DIR)
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    # -- helpers -------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_blob_key(key).split("/"))

    def _inside_root(self, key: str, path: Path) -> None:
        """Refuse a key that a symlink inside the root leads elsewhere."""
        if not path.resolve().is_relative_to(self.root):
            raise ValidationError(f"invalid blob key {key!r}: leads outside the storage root")

    def _sidecar(self, key: str) -> Path:
        return self._meta.joinpath(*key.split("/")).with_name(key.rsplit("/", 1)[-1] + ".json")

    def _existing(self, key: str, path: Path, info: BlobInfo) -> BlobInfo:
        if not path.is_file() or path.is_symlink():
            raise Conflict(f"blob key {key!r} clashes with an existing key")
        stored = self.head(key)
        if stored is None or (stored.size, stored.sha256) != (info.size, info.sha256):
            raise BlobExists(f"blob {key!r} exists with different content")
        return stored

    def _write_temp(self, data: bytes) -> str:
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def _write_exclusive(self, key: str, path: Path, data: bytes, info: BlobInfo) -> None:
        """Without hard links: create the file exclusively and write it in place."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            self._existing(key, path, info)
            return
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def _write_sidecar(self, key: str, info: BlobInfo) -> None:
        sidecar = self._sidecar(key)
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        meta = {"content_type": info.content_type, "sha256": info.sha256, "size": info.size}
        tmp = self._write_temp(json.dumps(meta).encode())
        os.replace(tmp, sidecar)

    def _content_type(self, key: str) -> str:
        try:
            meta = json.loads(self._sidecar(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return DEFAULT_CONTENT_TYPE  # sidecar lost (crash between the two writes)
        value = meta.get("content_type") if isinstance(meta, dict) else None
        return value if isinstance(value, str) else DEFAULT_CONTENT_TYPE


def _chunks(fh: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(chunk_size):
            yield chunk


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
