"""A tenant's confined file storage root (the local backend of app/steps/tenant_storage.py)
and chunked, cancellable streaming for `files.*`.

Every tenant has its own directory `<files_root>/<tenant_id>/`. A path from a template is
relative POSIX text; `..`, absolute paths, backslashes and symlinks that resolve outside the
tenant's root are refused with StepInputError. Files are opened by their resolved path with
O_NOFOLLOW, so a symlink swapped in after the check is not followed either.

Writes go to a hidden temporary file next to the target (`.wfs-part-*`, never listed) that is
renamed into place at the end, so readers never see half a file and a cancelled copy leaves
nothing behind. The methods here block: callers run them with `asyncio.to_thread`.

Quota: a tenant's storage holds at most STORAGE_QUOTA_BYTES[tier]. Usage counts every file,
symlink and folder in whole 4 KiB blocks, as a disk stores them (an empty file costs a block:
its inode), so a tenant cannot fill the disk's inodes with empty files, and the number of
entries a walk of its root meets is at most quota / 4 KiB. Every write reserves its bytes
first (`StorageUsage.reserve`), refused when usage plus the reservation passes the quota. Usage
is walked from disk (hidden part files excluded: this process counts its own as reservations)
at most every USAGE_FRESH_SECONDS per tenant and process, or every USAGE_EDGE_SECONDS once a
write comes within 10% of the quota; in between, this process's own writes and deletes adjust
it. So one process is exact, and several workers writing for one tenant at once overshoot by
at most what the others write within a second of the edge.

Sample files: the standard templates' example params read `samples/` (app/templates/samples).
Opening a root puts them in (a whole folder, renamed into place) whenever its `samples/` folder
is missing, so every tenant has them on first use, whichever process (API or worker replica)
opens its root first, created before or after this existed; nothing deletes a folder
(files.delete and deleteFile remove files), so a tenant that deleted the sample files does not
get them back.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, NamedTuple

from app.steps.base import StepContext, StepInputError

CHUNK_BYTES = 1024 * 1024
PART_PREFIX = ".wfs-part-"
BLOCK_BYTES = 4096
USAGE_FRESH_SECONDS = 30.0
USAGE_EDGE_SECONDS = 1.0
_EDGE_FRACTION = 0.9
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
SAMPLES = Path(__file__).resolve().parents[1] / "templates" / "samples"
SAMPLES_FOLDER = "samples"


class StorageFull(StepInputError):
    """A write would pass the tenant's storage quota."""


class FileExists(StepInputError):
    """The target exists and the write may not overwrite it."""


class NoSuchFile(StepInputError):
    """The path names no regular file."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the tenant root, POSIX separators
    size: int
    modified: float  # POSIX timestamp
    tag: str = ""  # changes whenever the content may have (inode and mtime; an S3 ETag)
    folder: bool = False  # a folder (S3: a prefix other keys start with), not a file

    def as_output(self) -> dict[str, Any]:
        when = datetime.fromtimestamp(self.modified, UTC).isoformat().replace("+00:00", "Z")
        return {"path": self.path, "size": self.size, "modified": when}


class Quota(NamedTuple):
    """A tenant's storage quota and the tier it comes from (named in refusals)."""

    limit: int
    tier: str


def charged(size: int) -> int:
    """What `size` bytes of one file cost against the quota: whole blocks, at least one."""
    return max(1, math.ceil(size / BLOCK_BYTES)) * BLOCK_BYTES


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"


def walk_usage(real: Path) -> int:
    """The quota usage of everything under `real` (symlinks not followed, part files left out)."""
    total, folders = 0, [real]
    while folders:
        try:
            entries = os.scandir(folders.pop())
        except OSError:  # removed meanwhile
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith(PART_PREFIX):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
                        total += BLOCK_BYTES
                    else:
                        total += charged(entry.stat(follow_symlinks=False).st_size)
                except OSError:
                    continue
    return total


@dataclass
class StorageUsage:
    """One tenant's storage usage as this process knows it (see the module docstring).

    `disk` serialises what changes the tenant's disk usage (a walk, placing a written file, a
    delete), so a walk never sees half a change; it is taken in worker threads only. `lock`
    guards the counters for moments, so the event loop may take it (releasing a reservation
    while a step is being cancelled)."""

    real: Path
    on_disk: int = 0  # as last walked, plus this process's changes since
    pending: int = 0  # reserved by this process's writes in progress
    walked_at: float = -math.inf
    disk: threading.Lock = field(default_factory=threading.Lock)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _stale(self, adding: int, quota: int) -> bool:
        age = time.monotonic() - self.walked_at
        near = self.on_disk + self.pending + adding > quota * _EDGE_FRACTION
        return age > USAGE_FRESH_SECONDS or (near and age > USAGE_EDGE_SECONDS)

    def _check(self, adding: int, quota: Quota) -> None:
        used = self.on_disk + self.pending
        if used + adding > quota.limit:
            raise StorageFull(
                f"storage quota exceeded: the {quota.tier} tier stores at most "
                f"{_size(quota.limit)} ({quota.limit} bytes); {_size(used)} are used and this "
                f"write needs {_size(adding)} more (files and folders count in whole 4 KiB "
                "blocks); delete files to make room"
            )

    def reserve(self, written: int, replaced: int, quota: Quota) -> Reservation:
        """Hold what a write adds (`written` less the `replaced` file it overwrites), or raise
        StepInputError when that passes the quota."""
        reservation = Reservation(self, written, replaced, quota)
        with self.disk:
            with self.lock:
                stale = self._stale(reservation.held, quota.limit)
            if stale:
                walked = walk_usage(self.real)
                with self.lock:
                    self.on_disk, self.walked_at = walked, time.monotonic()
            with self.lock:
                self._check(reservation.held, quota)
                self.pending += reservation.held
        return reservation

    def change(self, apply: Callable[[], int]) -> None:
        """Run `apply` (a delete; returns the bytes it freed) and count what it freed."""
        with self.disk:
            freed = apply()
            with self.lock:
                self.on_disk = max(0, self.on_disk - freed)


_LEDGER: dict[Path, StorageUsage] = {}
_LEDGER_LOCK = threading.Lock()


def usage_of(real: Path) -> StorageUsage:
    with _LEDGER_LOCK:
        return _LEDGER.setdefault(real, StorageUsage(real))


class Reservation:
    """Bytes held for one write until it is placed (`commit`) or given up (`release`)."""

    def __init__(self, usage: StorageUsage, written: int, replaced: int, quota: Quota) -> None:
        self.usage, self.quota = usage, quota
        self.written, self.replaced = written, replaced  # what the write puts, what it replaces
        self.held = max(0, written - replaced)  # counted in usage.pending until placed
        self.open = True

    def resize(self, written: int) -> None:
        """The write puts `written` bytes instead (an archive, once written); growing checks
        the quota."""
        held = max(0, written - self.replaced)
        with self.usage.lock:
            if held > self.held:
                self.usage._check(held - self.held, self.quota)
            self.usage.pending += held - self.held
            self.written, self.held = written, held

    def commit(self, place: Callable[[], int]) -> None:
        """Run `place` (renames the file in; returns the bytes it replaced), then count it."""
        with self.usage.disk:
            freed = place()
            with self.usage.lock:
                self.usage.pending -= self.held
                self.usage.on_disk = max(0, self.usage.on_disk + self.written - freed)
                self.open = False

    def release(self) -> None:
        """Give the bytes back unless committed; quick, safe on the event loop."""
        with self.usage.lock:
            if self.open:
                self.usage.pending -= self.held
                self.open = False


def path_parts(rel: str, what: str = "path") -> tuple[str, ...]:
    """The parts of a tenant's relative path, or StepInputError: the rules every backend
    applies (no `..`, nothing absolute, no backslash or NUL, no part-file names)."""
    if not rel or "\x00" in rel or "\\" in rel:
        raise StepInputError(f"{what} {rel!r} is not a valid relative path")
    pure = PurePosixPath(rel)
    if pure.is_absolute():
        raise StepInputError(f"{what} {rel!r} is absolute; paths are relative to the storage")
    if ".." in pure.parts:
        raise StepInputError(f"{what} {rel!r} contains '..'; paths must stay in the storage")
    if any(part.startswith(PART_PREFIX) for part in pure.parts):
        # Part files are never listed nor counted against the quota: not a name to store.
        raise StepInputError(f"{what} {rel!r}: names starting {PART_PREFIX!r} are reserved")
    return pure.parts


class TenantRoot:
    """One tenant's directory. Construct it, then call `open()` (blocking) before use."""

    def __init__(self, files_root: Path, tenant_id: str) -> None:
        if not _TENANT_ID.fullmatch(tenant_id):
            raise StepInputError(f"tenant id {tenant_id!r} cannot name a storage directory")
        self.base = files_root / tenant_id
        self.real = self.base

    def open(self) -> TenantRoot:
        self.base.mkdir(parents=True, exist_ok=True)
        self.real = self.base.resolve(strict=True)
        if not os.path.lexists(self.real / SAMPLES_FOLDER):
            self._seed_folder()
        return self

    def _seed_folder(self) -> None:
        """Make `samples/` whole in one rename: a step opening the root at the same moment (in
        this process or another) sees no folder, then the whole folder, never a half-filled
        one (a parallel files.read of a sample found it missing). The losing rename of two
        leaves the winner's folder alone."""
        staging = self.real / f"{PART_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for source in sorted(SAMPLES.iterdir()):
                (staging / source.name).write_bytes(source.read_bytes())
            try:
                os.rename(staging, self.real / SAMPLES_FOLDER)
            except OSError:  # seeded meanwhile (ENOTEMPTY), or a file named samples
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when renamed
        with self.usage.lock:
            self.usage.walked_at = -math.inf  # not reserved (a few KiB): walked again

    def seed_samples(self) -> list[str]:
        """Copy the sample files into `samples/`, leaving any already there alone (another
        process may be seeding at the same moment); returns the paths written. They are not
        reserved against the quota (a few KiB); the usage is walked again on the next write."""
        written = []
        with self.usage.disk:
            for source in sorted(SAMPLES.iterdir()):
                part = PartFile(self.real / SAMPLES_FOLDER / source.name)
                try:
                    part.handle.write(source.read_bytes())
                except BaseException:
                    part.discard()
                    raise
                try:
                    part.commit(overwrite=False)
                except FileExists:
                    continue
                written.append(f"{SAMPLES_FOLDER}/{source.name}")
            with self.usage.lock:
                self.usage.walked_at = -math.inf
        return written

    @staticmethod
    def _parts(rel: str, what: str) -> tuple[str, ...]:
        return path_parts(rel, what)

    def _inside(self, path: Path, rel: str, what: str) -> Path:
        if path != self.real and not path.is_relative_to(self.real):
            raise StepInputError(f"{what} {rel!r} leads outside the storage (symlink)")
        return path

    def resolve(self, rel: str, what: str = "path") -> Path:
        """The real path of `rel` (symlinks followed), refused when it leaves the root."""
        parts = self._parts(rel, what)
        return self._inside(self.real.joinpath(*parts).resolve(), rel, what)

    def entry(self, rel: str, what: str = "path") -> Path:
        """`rel` with only its parent resolved: a symlink itself rather than its target."""
        parts = self._parts(rel, what)
        parent = self._inside(self.real.joinpath(*parts[:-1]).resolve(), rel, what)
        return parent / parts[-1]

    def relative(self, path: Path) -> str:
        return path.relative_to(self.real).as_posix()

    @property
    def usage(self) -> StorageUsage:
        return usage_of(self.real)

    def reserve_write(
        self, target: Path, size: int, quota: Quota, overwrite: bool = False
    ) -> Reservation:
        """Reserve writing `size` bytes at `target`: the file and the folders it creates, less
        the file it replaces when `overwrite` (so rewriting a file in place fits at the quota)."""
        folders = 0
        parent = target.parent
        while parent != self.real and not parent.exists():
            folders, parent = folders + 1, parent.parent
        replaced = 0
        if overwrite:
            try:
                replaced = charged(target.lstat().st_size)
            except FileNotFoundError:
                pass
        return self.usage.reserve(charged(size) + folders * BLOCK_BYTES, replaced, quota)

    def file(self, rel: str, what: str = "path") -> Path:
        """The real path of an existing regular file."""
        path = self.resolve(rel, what)
        if not path.is_file():
            raise NoSuchFile(f"{what} {rel!r}: no such file")
        return path

    def walk(self, prefix: str = "", pattern: str | None = None) -> list[FileEntry]:
        """Files under the root whose relative path starts with `prefix` and matches `pattern`
        (fnmatch on the whole relative path: `*` also matches `/`), in path order."""
        return list(self.iter_files(prefix, pattern))

    def iter_files(
        self, prefix: str = "", pattern: str | None = None, after: str | None = None
    ) -> Iterator[FileEntry]:
        """What `walk` returns, lazily, from the first path greater than `after`: a page reads
        the folders it needs and stops, instead of walking and sorting the whole tree.

        Path order (code points of the whole relative path) without sorting it all: each folder's
        entries are visited sorted by their name, a folder's with a "/" appended, which is the
        order of the paths under them. Only folders that can hold a path starting with `prefix`
        and greater than `after` are read."""
        start = self.real
        if "/" in prefix:
            start = self.resolve(prefix.rsplit("/", 1)[0], "prefix")
        elif prefix:
            self._parts(prefix, "prefix")
        yield from self._files_under(start, prefix, pattern, after)

    def _files_under(
        self, folder: Path, prefix: str, pattern: str | None, after: str | None
    ) -> Iterator[FileEntry]:
        try:
            with os.scandir(folder) as scan:
                entries = [(e.name + "/" if _is_folder(e) else e.name, e) for e in scan]
        except OSError:  # removed while we walked, or unreadable: skipped, as os.walk did
            return
        for key, entry in sorted(entries, key=lambda pair: pair[0]):
            if entry.name.startswith(PART_PREFIX):
                continue
            full = Path(entry.path)
            rel = self.relative(full)
            if key.endswith("/"):
                # Every path below sorts between rel + "/" and rel + "0" ("0" follows "/").
                inside = (rel + "/").startswith(prefix) or prefix.startswith(rel + "/")
                if inside and (after is None or after < rel + "0"):
                    yield from self._files_under(full, prefix, pattern, after)
                continue
            if not rel.startswith(prefix) or (after is not None and rel <= after):
                continue
            if pattern and not fnmatchcase(rel, pattern):
                continue
            try:
                real = full.resolve()
                if not real.is_relative_to(self.real) or not real.is_file():
                    continue  # a symlink out of the root or to a directory: not ours to show
                stat = real.stat()
            except OSError:  # removed or replaced while we walked
                continue
            yield FileEntry(rel, stat.st_size, stat.st_mtime, stat_tag(stat))


def stat_tag(stat: os.stat_result) -> str:
    """What changes when a local file's content may have: its inode and modification time."""
    return f"{stat.st_dev}:{stat.st_ino}:{stat.st_mtime_ns}"


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """A real folder (walked into); a symlink to one is not followed, as os.walk did."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def open_read(path: Path) -> BinaryIO:
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")


class PartFile:
    """A hidden temporary file next to `final`, renamed into place by `commit`."""

    def __init__(self, final: Path) -> None:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StepInputError(f"cannot create {final.name!r}: a parent is a file") from exc
        self.final = final
        self.path = final.parent / f"{PART_PREFIX}{uuid.uuid4().hex}"
        self.handle: BinaryIO = os.fdopen(
            os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb"
        )

    def close(self) -> None:
        self.handle.close()

    def commit(self, overwrite: bool) -> None:
        self.handle.close()
        try:
            if overwrite:
                os.replace(self.path, self.final)
            else:
                os.link(self.path, self.final)  # fails when the target appeared meanwhile
        except FileExistsError as exc:
            raise FileExists(
                f"{self.final.name!r} already exists; set overwrite: true to replace it"
            ) from exc
        finally:
            self.discard()

    def discard(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)

    def place(self, overwrite: bool) -> int:
        """`commit`, returning the quota bytes of the file it replaced (for `Reservation`)."""
        try:
            freed = charged(self.final.lstat().st_size) if overwrite else 0
        except FileNotFoundError:
            freed = 0
        self.commit(overwrite)
        return freed


class Progress:
    """Bytes moved in one activity call: heartbeats them and stops when cancel was asked."""

    def __init__(self, ctx: StepContext, total: int | None = None) -> None:
        self.ctx, self.total, self.done = ctx, total, 0

    def check(self) -> None:
        if self.ctx.cancelled():
            raise asyncio.CancelledError("the step was cancelled")

    def advance(self, n: int) -> None:
        self.done += n
        self.ctx.heartbeat({"bytes_done": self.done, "bytes_total": self.total})


def _move_chunk(read: Callable[[int], bytes], write: Callable[[bytes], Any]) -> int:
    chunk = read(CHUNK_BYTES)
    if chunk:
        write(chunk)
    return len(chunk)


async def pump(
    read: Callable[[int], bytes], write: Callable[[bytes], Any], progress: Progress
) -> int:
    """Move bytes chunk by chunk off the event loop; between chunks heartbeat and honour cancel."""
    moved = 0
    while True:
        progress.check()
        n = await asyncio.to_thread(_move_chunk, read, write)
        if n == 0:
            return moved
        moved += n
        progress.advance(n)
