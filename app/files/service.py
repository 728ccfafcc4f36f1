"""What the files API may do in a tenant's storage, with the storage's own rules.

The storage (app/steps/tenant_storage.py: local or S3), path confinement, quota reservations
and atomic writes are the ones the `files.*` steps use, so a file uploaded here is the file a
template reads, and the quota counts both. Their StepInputErrors become domain errors here:
quota -> QUOTA_EXCEEDED, an existing target -> CONFLICT, a missing file -> NOT_FOUND, any
other path problem -> VALIDATION_FAILED.

An upload streams in 1 MiB chunks from the request (never whole in memory) into the storage's
writer (a hidden part file renamed into place, or an S3 multipart upload), visible once
complete: a failed or refused upload leaves nothing behind. Downloads stream through the API
(`GET /files/<token>`) on both backends: one auth check and the same headers everywhere, and
the bucket needs no public endpoint (docs/storage.md says why not presigned URLs).
Content types are sniffed from the bytes (`filetype`'s magic numbers; UTF-8 text by its
extension, else text/plain), never taken from the client.
"""

from __future__ import annotations

import asyncio
import codecs
import mimetypes
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import filetype
import structlog

from app.errors import Conflict, Forbidden, NotFound, QuotaExceeded, ValidationFailed
from app.files import signing
from app.pagination import Page, check_first, decode_cursor, encode_cursor
from app.settings import Settings
from app.steps.backends import open_storage
from app.steps.base import StepInputError
from app.steps.storage import (
    CHUNK_BYTES,
    FileEntry,
    FileExists,
    NoSuchFile,
    Quota,
    StorageFull,
)
from app.steps.tenant_storage import FileWriter, TenantStorage, discard
from app.tenants.service import Principal

log = structlog.get_logger(__name__)
SNIFF_BYTES = 8192  # what filetype reads
MAX_PATH_CHARS = 1024  # as the files.* steps' schemas
WRITERS = ("operator", "admin")
OCTET_STREAM = "application/octet-stream"
TYPE_CACHE_SIZE = 20_000

ReadChunk = Callable[[int], Awaitable[bytes]]


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the tenant's storage, POSIX separators
    size: int
    content_type: str
    modified_at: datetime


def sniff(head: bytes, name: str) -> str:
    """The content type of a file starting with `head`: its magic number when it has one; for
    UTF-8 text the type its extension names when that is text (CSV, JSON, ...), else
    text/plain; anything else is application/octet-stream."""
    kind = filetype.guess_mime(head)
    if kind:
        return str(kind)
    try:  # not final: a character cut at the end of `head` is fine
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return OCTET_STREAM
    named = mimetypes.guess_type(name)[0]
    if named and (named.startswith("text/") or named in ("application/json", "application/xml")):
        return named
    return "text/plain"


@contextmanager
def domain_errors() -> Iterator[None]:
    try:
        yield
    except StorageFull as exc:
        raise QuotaExceeded(str(exc)) from exc
    except FileExists as exc:
        raise Conflict(str(exc)) from exc
    except NoSuchFile as exc:
        raise NotFound(str(exc)) from exc
    except StepInputError as exc:
        raise ValidationFailed(str(exc)) from exc


def _stored(entry: FileEntry, content_type: str) -> StoredFile:
    modified = datetime.fromtimestamp(entry.modified, UTC)
    return StoredFile(entry.path, entry.size, content_type, modified)


def _content_type(storage: TenantStorage, entry: FileEntry) -> str:
    """The type of the file `entry` describes: from the cache while the file is unchanged
    (same tag and size), else sniffed from its first bytes."""
    known = _TYPES.get(entry)
    if known is None:
        found, src = storage.open_read(entry.path, length=SNIFF_BYTES)
        with src:
            head = src.read(SNIFF_BYTES)
        known = sniff(head, entry.path.rsplit("/", 1)[-1])
        _TYPES.put(found, known)
    return known


def _describe(storage: TenantStorage, entry: FileEntry) -> StoredFile:
    return _stored(entry, _content_type(storage, entry))


def _opened(storage: TenantStorage, path: str) -> tuple[StoredFile, BinaryIO]:
    """The file at `path` described (type sniffed or cached) and open at its start; the size
    is the size of what is read. NoSuchFile when there is none."""
    entry, src = storage.open_read(path)
    try:
        known = _TYPES.get(entry)
        if known is None and src.seekable():  # a local file: sniff it and rewind
            known = sniff(src.read(SNIFF_BYTES), entry.path.rsplit("/", 1)[-1])
            src.seek(0)
            _TYPES.put(entry, known)
        elif known is None:  # a stream: the first bytes come from a ranged read
            known = _content_type(storage, entry)
    except BaseException:
        src.close()
        raise
    return _stored(entry, known), src


class _TypeCache:
    """Sniffed content types by (path, tag, size): a `files` page reads no file twice while it
    is unchanged (the tag is the inode and mtime, or the S3 ETag and time). Bounded, oldest
    first out; threads share it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._types: OrderedDict[tuple[str, str, int], str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(entry: FileEntry) -> tuple[str, str, int] | None:
        return (entry.path, entry.tag, entry.size) if entry.tag else None

    def get(self, entry: FileEntry) -> str | None:
        key = self._key(entry)
        with self._lock:
            return None if key is None else self._types.get(key)

    def put(self, entry: FileEntry, content_type: str) -> None:
        key = self._key(entry)
        if key is None:
            return
        with self._lock:
            self._types[key] = content_type
            self._types.move_to_end(key)
            while len(self._types) > self.size:
                self._types.popitem(last=False)


_TYPES = _TypeCache(TYPE_CACHE_SIZE)


def _check_path(path: str, what: str = "path") -> None:
    if len(path) > MAX_PATH_CHARS:
        raise ValidationFailed(f"{what} is longer than {MAX_PATH_CHARS} characters")


def require_writer(role: str, doing: str) -> None:
    """Forbidden unless `role` may write files (operators and admins)."""
    if role not in WRITERS:
        raise Forbidden(f"viewers cannot {doing}; an operator or admin key can")


class FileService:
    """One tenant's files, for one caller (`principal`: its tenant, tier and role)."""

    def __init__(self, settings: Settings, principal: Principal) -> None:
        self.settings, self.principal = settings, principal

    def _require_writer(self, doing: str) -> None:
        require_writer(self.principal.role, doing)

    async def _storage(self) -> TenantStorage:
        tenant_id = str(self.principal.tenant_id)
        return await asyncio.to_thread(open_storage, self.settings, tenant_id)

    def _quota(self) -> Quota:
        tier = self.principal.tier
        return Quota(self.settings.storage_quota_bytes.get(tier, 0), tier)

    async def upload(
        self, path: str, read: ReadChunk, size: int | None, overwrite: bool = False
    ) -> StoredFile:
        """Store what `read` yields at `path`. `size` is the upload's size when known (it is
        reserved against the quota up front; unknown: MAX_UPLOAD_BYTES is, trued up after)."""
        self._require_writer("upload files")
        _check_path(path)
        most = self.settings.max_upload_bytes
        if size is not None and size > most:
            raise ValidationFailed(f"the file is {size} bytes; uploads take at most {most}")
        with domain_errors():
            storage = await self._storage()
            await asyncio.to_thread(self._check_target, storage, path, overwrite)
            expected = most if size is None else size
            writer = await asyncio.to_thread(
                storage.create, path, expected, self._quota(), overwrite
            )
            try:
                moved = await self._stream(read, writer, most)
                await asyncio.to_thread(writer.expect, moved)
                await asyncio.to_thread(writer.commit)
            except BaseException:
                await discard(writer)
                raise
            stored = await asyncio.to_thread(lambda: _describe(storage, storage.file(path)))
        log.info(
            "files.uploaded", tenant_id=str(self.principal.tenant_id), path=stored.path, size=moved
        )
        return stored

    @staticmethod
    def _check_target(storage: TenantStorage, path: str, overwrite: bool) -> None:
        entry = storage.stat(path)
        if entry is not None and entry.folder:
            raise ValidationFailed(f"path {path!r} is a folder")
        if entry is not None and not overwrite:
            raise Conflict(f"path {path!r} already exists; set overwrite: true to replace it")

    @staticmethod
    async def _stream(read: ReadChunk, writer: FileWriter, most: int) -> int:
        moved = 0
        while chunk := await read(CHUNK_BYTES):
            moved += len(chunk)
            if moved > most:
                raise ValidationFailed(f"the file is over {most} bytes, the most an upload takes")
            await asyncio.to_thread(writer.write, chunk)
        return moved

    async def list(
        self, prefix: str | None, first: int | None, after: str | None
    ) -> Page[StoredFile]:
        """Files whose path starts with `prefix`, in path order, `first` after cursor `after`."""
        count = check_first(first)
        _check_path(prefix or "", "prefix")
        start = decode_cursor(after)
        if start is not None and not (len(start) == 1 and isinstance(start[0], str)):
            raise ValidationFailed("invalid cursor")
        with domain_errors():
            storage = await self._storage()
            after_path = None if start is None else start[0]

            def page() -> tuple[list[StoredFile], bool]:
                entries = list(storage.iter_files(prefix or "", after=after_path, limit=count + 1))
                found = []
                for entry in entries[:count]:
                    try:
                        found.append(_describe(storage, entry))
                    except (OSError, StepInputError):  # deleted or replaced meanwhile
                        continue
                return found, len(entries) > count

            files, more = await asyncio.to_thread(page)
        return Page(files, [encode_cursor([f.path]) for f in files], more)

    async def get(self, path: str) -> StoredFile:
        _check_path(path)
        with domain_errors():
            storage = await self._storage()
            return await asyncio.to_thread(lambda: _describe(storage, storage.file(path)))

    async def delete(self, path: str) -> str:
        """Delete one file (a symlink itself, not its target); returns its path."""
        self._require_writer("delete files")
        _check_path(path)
        with domain_errors():
            storage = await self._storage()
            return await asyncio.to_thread(self._delete, storage, path)

    @staticmethod
    def _delete(storage: TenantStorage, path: str) -> str:
        entry = storage.stat(path, follow=False)
        if entry is not None and entry.folder:
            raise ValidationFailed(f"path {path!r} is a folder; delete its files")
        deleted = storage.delete([path]) if entry is not None else []
        if not deleted:
            raise NotFound(f"path {path!r}: no such file")
        return deleted[0]

    def download(self, stored: StoredFile) -> signing.Grant:
        """A short-lived token for `GET /files/<token>` (FILE_URL_TTL_SECONDS)."""
        return signing.sign(self.settings, str(self.principal.tenant_id), stored.path)


def open_download(settings: Settings, token: str) -> tuple[StoredFile, BinaryIO]:
    """The file a download token names, opened for reading (blocking: run it in a thread).
    Forbidden for a bad or expired token; NotFound when the file is gone. The path is
    confined again here: a symlink placed after the URL was signed cannot lead out."""
    grant = signing.verify(settings, token)
    with domain_errors():
        return _opened(open_storage(settings, grant.tenant_id), grant.path)
