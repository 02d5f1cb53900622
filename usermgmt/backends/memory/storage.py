"""Write-once blob storage in memory and on the local filesystem."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

from usermgmt.errors import Conflict, NotFound, ValidationError
from usermgmt.ports import BlobInfo

__all__ = ["LocalBlobStorage", "MemoryBlobStorage", "validate_blob_key"]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_META_DIR = ".usermgmt-meta"  # sidecars and temporary files of LocalBlobStorage


def validate_blob_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key such as ``org/2026/01/batch-1.jsonl.gz``.

    Raises :class:`~usermgmt.errors.ValidationError` for an empty or absolute key,
    a backslash or NUL, an empty, ``.`` or ``..`` segment, or the reserved
    ``.usermgmt-meta`` first segment.
    """
    if not key or "\\" in key or "\x00" in key:
        raise ValidationError("invalid blob key: empty, or contains a backslash or NUL")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise ValidationError("invalid blob key: must be relative")
    segments = key.split("/")
    if any(s in {"", ".", ".."} for s in segments):
        raise ValidationError("invalid blob key: empty, '.' or '..' segment")
    if segments[0] == _META_DIR:
        raise ValidationError(f"invalid blob key: {_META_DIR!r} is reserved")
    return key


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

    def put(self, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE) -> BlobInfo:
        """Store ``data`` under a new key; the same bytes again return the stored info.
        Raises Conflict for different bytes, ValidationError for a bad key."""
        validate_blob_key(key)
        data = bytes(data)
        with self._lock:
            existing = self._blobs.get(key)
            if existing is not None:
                if existing[0] != data:
                    raise Conflict(f"blob {key!r} exists with different content")
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


class LocalBlobStorage:
    """A write-once :class:`~usermgmt.ports.BlobStorage` in a directory.

    A blob with key ``a/b.gz`` is the file ``root_dir/a/b.gz``; its content type is
    kept in a JSON sidecar under ``root_dir/.usermgmt-meta/``. Writes go to a
    temporary file that is fsynced and then hard-linked into place, which fails
    if the key exists, so two processes racing on one key cannot both win (where
    hard links are unsupported it falls back to ``os.replace``). :meth:`head`
    hashes the file itself, so it verifies what is really on disk.
    """

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root_dir).resolve()
        self._meta = self.root / _META_DIR
        self._tmp = self._meta / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_blob_key(key).split("/"))

    def _sidecar(self, key: str) -> Path:
        return self._meta.joinpath(*key.split("/")).with_name(key.rsplit("/", 1)[-1] + ".json")

    def put(self, key: str, data: bytes, *, content_type: str = DEFAULT_CONTENT_TYPE) -> BlobInfo:
        """Store ``data`` under a new key; the same bytes again return the stored info.
        Raises Conflict for different bytes (or a key clashing with a directory),
        ValidationError for a bad key."""
        path = self._path(key)
        data = bytes(data)
        with self._lock:
            if path.exists():
                return self._existing(key, path, data)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as exc:
                raise Conflict(f"blob key {key!r} clashes with an existing key") from exc
            tmp = self._write_temp(data)
            try:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return self._existing(key, path, data)
                except OSError:  # no hard links on this filesystem
                    os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            info = _info(key, data, content_type)
            self._write_sidecar(key, info)
            return info

    def head(self, key: str) -> BlobInfo | None:
        """The key's info (size and SHA-256 computed from the file), or None."""
        path = self._path(key)
        if not path.is_file():
            return None
        return _info(key, path.read_bytes(), self._content_type(key))

    def get(self, key: str) -> bytes:
        """The stored bytes; raises NotFound."""
        path = self._path(key)
        if not path.is_file():
            raise NotFound("blob")
        return path.read_bytes()

    def list(self, prefix: str = "") -> list[BlobInfo]:
        """Infos of the keys starting with ``prefix``, sorted by key."""
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root and _META_DIR in dirnames:
                dirnames.remove(_META_DIR)
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        infos = (self.head(key) for key in sorted(keys))
        return [info for info in infos if info is not None]

    # -- helpers ----------------------------------------------------------------------

    def _existing(self, key: str, path: Path, data: bytes) -> BlobInfo:
        if not path.is_file():
            raise Conflict(f"blob key {key!r} clashes with an existing key")
        stored = path.read_bytes()
        if stored != data:
            raise Conflict(f"blob {key!r} exists with different content")
        return _info(key, stored, self._content_type(key))

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
