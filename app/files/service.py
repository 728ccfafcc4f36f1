"""What the files API may do in a tenant's storage, with the storage's own rules.

The storage root, path confinement, quota reservations and atomic part files are the ones the
`files.*` steps use (app/steps/storage.py), so a file uploaded here is the file a template
reads, and the quota counts both. Their StepInputErrors become domain errors here:
quota -> QUOTA_EXCEEDED, an existing target -> CONFLICT, a missing file -> NOT_FOUND, any
other path problem -> VALIDATION_FAILED.

An upload streams in 1 MiB chunks from the request (never whole in memory) into a hidden part
file renamed into place once complete: a failed or refused upload leaves nothing behind.
Content types are sniffed from the bytes (`filetype`'s magic numbers; UTF-8 text by its
extension, else text/plain), never taken from the client.
"""

from __future__ import annotations

import asyncio
import codecs
import dataclasses
import errno
import functools
import itertools
import mimetypes
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

import filetype
import structlog

from app.errors import Conflict, Forbidden, NotFound, QuotaExceeded, ValidationFailed
from app.files import signing
from app.pagination import Page, check_first, decode_cursor, encode_cursor
from app.settings import Settings
from app.steps.base import StepInputError
from app.steps.storage import (
    CHUNK_BYTES,
    FileExists,
    NoSuchFile,
    PartFile,
    Quota,
    StorageFull,
    TenantRoot,
    charged,
    open_read,
)
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


def _opened(root: TenantRoot, real: Path) -> tuple[StoredFile, BinaryIO]:
    """The file at `real` described (type sniffed from its first bytes) and open at its start.
    NoSuchFile when it was deleted, or replaced by a symlink or a folder, since `real` was
    found (open_read follows no symlink)."""
    try:
        src = open_read(real)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        raise NoSuchFile(f"path {root.relative(real)!r}: no such file") from exc
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise NoSuchFile(f"path {root.relative(real)!r}: no such file") from exc
    try:
        head = src.read(SNIFF_BYTES)
        stat = os.fstat(src.fileno())
        src.seek(0)
    except BaseException:
        src.close()
        raise
    content_type = sniff(head, real.name)
    _TYPES.put(stat, content_type)
    modified = datetime.fromtimestamp(stat.st_mtime, UTC)
    return StoredFile(root.relative(real), stat.st_size, content_type, modified), src


def _describe(root: TenantRoot, real: Path, rel: str | None = None) -> StoredFile:
    """The file at `real` described (as `rel`, the path it was listed under, when a symlink led
    there): its content type from the cache when the file is unchanged since it was sniffed
    (same inode, size and mtime), else sniffed again."""
    try:
        stat = real.lstat()  # `real` is resolved: a symlink here was swapped in since
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NoSuchFile(f"path {root.relative(real)!r}: no such file") from exc
    if not S_ISREG(stat.st_mode):
        raise NoSuchFile(f"path {root.relative(real)!r}: no such file")
    known = _TYPES.get(stat)
    if known is None:
        stored, src = _opened(root, real)
        src.close()
        return stored if rel is None else dataclasses.replace(stored, path=rel)
    modified = datetime.fromtimestamp(stat.st_mtime, UTC)
    return StoredFile(rel or root.relative(real), stat.st_size, known, modified)


class _TypeCache:
    """Sniffed content types by (device, inode, size, mtime): a `files` page reads no file
    twice while it is unchanged. Bounded, oldest first out; threads share it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._types: OrderedDict[tuple[int, int, int, int], str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(stat: os.stat_result) -> tuple[int, int, int, int]:
        return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def get(self, stat: os.stat_result) -> str | None:
        with self._lock:
            return self._types.get(self._key(stat))

    def put(self, stat: os.stat_result, content_type: str) -> None:
        with self._lock:
            self._types[self._key(stat)] = content_type
            self._types.move_to_end(self._key(stat))
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

    async def _root(self) -> TenantRoot:
        root = TenantRoot(self.settings.files_root, str(self.principal.tenant_id))
        return await asyncio.to_thread(root.open)

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
            root = await self._root()
            target = await asyncio.to_thread(self._target, root, path, overwrite)
            expected = most if size is None else size
            reservation = await asyncio.to_thread(
                root.reserve_write, target, expected, self._quota(), overwrite
            )
            try:
                part = await asyncio.to_thread(PartFile, target)
                try:
                    moved = await self._stream(read, part.handle, most)
                    if charged(moved) != charged(expected):
                        written = reservation.written - charged(expected) + charged(moved)
                        await asyncio.to_thread(reservation.resize, written)
                    place = functools.partial(part.place, overwrite)
                    await asyncio.to_thread(reservation.commit, place)
                except BaseException:
                    part.discard()  # a quick unlink; must run even when cancelled
                    raise
            finally:
                reservation.release()  # nothing once committed
            stored = await asyncio.to_thread(_describe, root, target)
        log.info(
            "files.uploaded", tenant_id=str(self.principal.tenant_id), path=stored.path, size=moved
        )
        return stored

    @staticmethod
    def _target(root: TenantRoot, path: str, overwrite: bool) -> Path:
        target = root.resolve(path)
        if target.is_dir():
            raise ValidationFailed(f"path {path!r} is a folder")
        if target.exists() and not overwrite:
            raise Conflict(f"path {path!r} already exists; set overwrite: true to replace it")
        return target

    @staticmethod
    async def _stream(read: ReadChunk, out: BinaryIO, most: int) -> int:
        moved = 0
        while chunk := await read(CHUNK_BYTES):
            moved += len(chunk)
            if moved > most:
                raise ValidationFailed(f"the file is over {most} bytes, the most an upload takes")
            await asyncio.to_thread(out.write, chunk)
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
            root = await self._root()
            after_path = None if start is None else start[0]

            def page() -> tuple[list[StoredFile], bool]:
                walked = root.iter_files(prefix or "", after=after_path)
                entries = list(itertools.islice(walked, count + 1))
                found = []
                for entry in entries[:count]:
                    try:
                        found.append(_describe(root, root.resolve(entry.path), entry.path))
                    except (OSError, StepInputError):  # deleted or replaced meanwhile
                        continue
                return found, len(entries) > count

            files, more = await asyncio.to_thread(page)
        return Page(files, [encode_cursor([f.path]) for f in files], more)

    async def get(self, path: str) -> StoredFile:
        _check_path(path)
        with domain_errors():
            root = await self._root()
            return await asyncio.to_thread(lambda: _describe(root, root.file(path)))

    async def delete(self, path: str) -> str:
        """Delete one file (a symlink itself, not its target); returns its path."""
        self._require_writer("delete files")
        _check_path(path)
        with domain_errors():
            root = await self._root()
            return await asyncio.to_thread(self._unlink, root, path)

    @staticmethod
    def _unlink(root: TenantRoot, path: str) -> str:
        entry = root.entry(path)
        if entry.is_dir() and not entry.is_symlink():
            raise ValidationFailed(f"path {path!r} is a folder; delete its files")

        def unlink() -> int:
            freed = charged(entry.lstat().st_size)
            entry.unlink()
            return freed

        try:
            root.usage.change(unlink)
        except FileNotFoundError as exc:
            raise NotFound(f"path {path!r}: no such file") from exc
        return root.relative(entry)

    def download(self, stored: StoredFile) -> signing.Grant:
        """A short-lived token for `GET /files/<token>` (FILE_URL_TTL_SECONDS)."""
        return signing.sign(self.settings, str(self.principal.tenant_id), stored.path)


def open_download(settings: Settings, token: str) -> tuple[StoredFile, BinaryIO]:
    """The file a download token names, opened for reading (blocking: run it in a thread).
    Forbidden for a bad or expired token; NotFound when the file is gone. The path is
    confined again here: a symlink placed after the URL was signed cannot lead out."""
    grant = signing.verify(settings, token)
    with domain_errors():
        root = TenantRoot(settings.files_root, grant.tenant_id).open()
        return _opened(root, root.file(grant.path))
