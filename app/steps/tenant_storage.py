"""One interface to a tenant's storage, whichever backend holds it (app/steps/backends.py
`open_storage` picks the configured one).

The `files.*` steps, the files API, downloads and seeding all go through `TenantStorage`, so
STORAGE_BACKEND (local or s3) changes where bytes live and nothing else. The methods block
(disk or network I/O): callers run them with `asyncio.to_thread`, a chunk at a time for big
files, so cancel and heartbeats work as before.

- `stat(path)`: the file (or folder) at a path, None when there is none.
- `open_read(path)`: the file and a stream of its bytes (the entry describes what is read).
- `create(path, size, quota, overwrite)`: a `FileWriter` that has reserved `size` bytes
  against the quota; `write` chunks, `expect` the final size when it differs, then `commit`
  (places the file whole; FileExists when it may not overwrite and the path was taken
  meanwhile) or `discard` (nothing is left behind).
- `iter_files(prefix, pattern, after, limit)`: files in path order, lazily, for pages.
- `delete(paths)`: removes files; returns the paths that were there.
- `usage_bytes()`: what the tenant holds as its quota counts it (local: a walk of its folder;
  S3: the shared counter in Redis, measured from a listing when missing). Blocking.

Backends: `LocalStorage` (here; app/steps/storage.py holds its confined root, quota ledger and
part files, unchanged) and `S3Storage` (app/steps/s3_storage.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from stat import S_ISDIR, S_ISREG
from typing import BinaryIO

from app.steps.storage import (
    FileEntry,
    NoSuchFile,
    PartFile,
    Quota,
    Reservation,
    TenantRoot,
    charged,
    open_read,
    stat_tag,
    walk_usage,
)

__all__ = ["FileEntry", "FileWriter", "LocalStorage", "TenantStorage"]


class FileWriter(ABC):
    """A file being written: nothing is visible at `path` until `commit`."""

    path: str  # the canonical relative path it will have

    @abstractmethod
    def write(self, chunk: bytes) -> None: ...

    @abstractmethod
    def expect(self, size: int) -> None:
        """The file will be `size` bytes, not what was reserved: the reservation follows
        (growing is checked against the quota)."""

    @abstractmethod
    def commit(self) -> None:
        """Place the file. Ends the writer whatever happens (a failed commit leaves nothing)."""

    @abstractmethod
    def discard(self) -> None:
        """Give up: nothing left behind, the reservation released. Safe to call twice, and
        after `commit`."""


async def discard(writer: FileWriter) -> None:
    """Give a writer up off the event loop (S3 aborts its multipart upload over the network);
    shielded, so a second cancel cannot leave the upload behind."""
    await asyncio.shield(asyncio.to_thread(writer.discard))


class TenantStorage(ABC):
    """One tenant's files. Paths are relative POSIX text checked by `storage.path_parts`."""

    @abstractmethod
    def stat(self, path: str, what: str = "path", follow: bool = True) -> FileEntry | None:
        """The file or folder at `path`, None when nothing is there. `follow=False` describes
        a local symlink itself (what a delete removes) rather than its target."""

    @abstractmethod
    def open_read(
        self, path: str, what: str = "path", length: int | None = None
    ) -> tuple[FileEntry, BinaryIO]:
        """The file at `path` and its bytes (the first `length` when given); NoSuchFile when
        there is no file."""

    @abstractmethod
    def create(
        self, path: str, size: int, quota: Quota, overwrite: bool = False, what: str = "path"
    ) -> FileWriter:
        """A writer for `path` holding `size` bytes of quota; StorageFull past the quota."""

    @abstractmethod
    def iter_files(
        self,
        prefix: str = "",
        pattern: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> Iterator[FileEntry]:
        """Files whose path starts with `prefix` and matches the glob `pattern` (`*` spans
        `/`), in path order (code points), from the first path greater than `after`; at most
        `limit` (a page asks for what it shows, so S3 lists no more keys than that)."""

    @abstractmethod
    def delete(self, paths: list[str]) -> list[str]:
        """Delete these files (all checked first); returns those that existed."""

    @abstractmethod
    def usage_bytes(self) -> int:
        """Bytes the storage holds, each file charged as the quota charges it."""

    @abstractmethod
    def seed_samples(self) -> list[str]:
        """Copy the standard templates' sample files into `samples/`, keeping any already
        there; returns the paths written."""

    def file(self, path: str, what: str = "path") -> FileEntry:
        """The regular file at `path`, or NoSuchFile."""
        entry = self.stat(path, what)
        if entry is None or entry.folder:
            raise NoSuchFile(f"{what} {path!r}: no such file")
        return entry

    def walk(self, prefix: str = "", pattern: str | None = None) -> list[FileEntry]:
        return list(self.iter_files(prefix, pattern))


class LocalStorage(TenantStorage):
    """A directory per tenant (app/steps/storage.py: confinement, symlinks, quota, part files)."""

    def __init__(self, root: TenantRoot) -> None:
        self.root = root

    def stat(self, path: str, what: str = "path", follow: bool = True) -> FileEntry | None:
        real = self.root.resolve(path, what) if follow else self.root.entry(path, what)
        try:
            found = real.stat() if follow else real.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        rel = self.root.relative(real)
        if S_ISDIR(found.st_mode):
            return FileEntry(rel, 0, found.st_mtime, folder=True)
        return FileEntry(rel, found.st_size, found.st_mtime, stat_tag(found))

    def open_read(
        self, path: str, what: str = "path", length: int | None = None
    ) -> tuple[FileEntry, BinaryIO]:
        real = self.root.resolve(path, what)
        missing = NoSuchFile(f"{what} {path!r}: no such file")
        try:
            src = open_read(real)  # O_NOFOLLOW: a symlink swapped in since resolve is refused
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise missing from exc
        except OSError as exc:  # ELOOP: the symlink case
            raise missing from exc
        found = os.fstat(src.fileno())
        if not S_ISREG(found.st_mode):
            src.close()
            raise missing
        rel = self.root.relative(real)
        return FileEntry(rel, found.st_size, found.st_mtime, stat_tag(found)), src

    def create(
        self, path: str, size: int, quota: Quota, overwrite: bool = False, what: str = "path"
    ) -> FileWriter:
        target = self.root.resolve(path, what)
        reservation = self.root.reserve_write(target, size, quota, overwrite)
        try:
            part = PartFile(target)
        except BaseException:
            reservation.release()
            raise
        return _LocalWriter(self.root.relative(target), part, reservation, overwrite, size)

    def iter_files(
        self,
        prefix: str = "",
        pattern: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> Iterator[FileEntry]:
        return itertools.islice(self.root.iter_files(prefix, pattern, after), limit)

    def delete(self, paths: list[str]) -> list[str]:
        entries = [self.root.entry(rel) for rel in paths]  # every path checked first
        deleted: list[str] = []

        def unlink() -> int:
            freed = 0
            for entry in entries:
                try:
                    size = entry.lstat().st_size
                    entry.unlink()
                except FileNotFoundError:
                    continue
                freed += charged(size)
                deleted.append(self.root.relative(entry))
            return freed

        self.root.usage.change(unlink)
        return deleted

    def usage_bytes(self) -> int:
        return walk_usage(self.root.real) if self.root.real.is_dir() else 0

    def seed_samples(self) -> list[str]:
        return self.root.seed_samples()


class _LocalWriter(FileWriter):
    """A hidden part file renamed into place, with the root's quota reservation."""

    def __init__(
        self, path: str, part: PartFile, reservation: Reservation, overwrite: bool, size: int
    ) -> None:
        self.path, self.part, self.reservation = path, part, reservation
        self.overwrite, self.expected = overwrite, size

    def write(self, chunk: bytes) -> None:
        self.part.handle.write(chunk)

    def expect(self, size: int) -> None:
        if charged(size) != charged(self.expected):
            written = self.reservation.written - charged(self.expected) + charged(size)
            self.reservation.resize(written)
        self.expected = size

    def commit(self) -> None:
        try:
            self.reservation.commit(lambda: self.part.place(self.overwrite))
        finally:
            self.reservation.release()  # nothing once committed

    def discard(self) -> None:
        self.part.discard()  # a quick unlink
        self.reservation.release()
