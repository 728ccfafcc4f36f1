"""A tenant's confined file storage root and chunked, cancellable streaming for `files.*`.

Every tenant has its own directory `<files_root>/<tenant_id>/`. A path from a template is
relative POSIX text; `..`, absolute paths, backslashes and symlinks that resolve outside the
tenant's root are refused with StepInputError. Files are opened by their resolved path with
O_NOFOLLOW, so a symlink swapped in after the check is not followed either.

Writes go to a hidden temporary file next to the target (`.wfs-part-*`, never listed) that is
renamed into place at the end, so readers never see half a file and a cancelled copy leaves
nothing behind. The methods here block: callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from app.steps.base import StepContext, StepInputError

CHUNK_BYTES = 1024 * 1024
PART_PREFIX = ".wfs-part-"
_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the tenant root, POSIX separators
    size: int
    modified: float  # POSIX timestamp

    def as_output(self) -> dict[str, Any]:
        when = datetime.fromtimestamp(self.modified, UTC).isoformat().replace("+00:00", "Z")
        return {"path": self.path, "size": self.size, "modified": when}


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
        return self

    @staticmethod
    def _parts(rel: str, what: str) -> tuple[str, ...]:
        if not rel or "\x00" in rel or "\\" in rel:
            raise StepInputError(f"{what} {rel!r} is not a valid relative path")
        pure = PurePosixPath(rel)
        if pure.is_absolute():
            raise StepInputError(f"{what} {rel!r} is absolute; paths are relative to the storage")
        if ".." in pure.parts:
            raise StepInputError(f"{what} {rel!r} contains '..'; paths must stay in the storage")
        return pure.parts

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

    def file(self, rel: str, what: str = "path") -> Path:
        """The real path of an existing regular file."""
        path = self.resolve(rel, what)
        if not path.is_file():
            raise StepInputError(f"{what} {rel!r}: no such file")
        return path

    def walk(self, prefix: str = "", pattern: str | None = None) -> list[FileEntry]:
        """Files under the root whose relative path starts with `prefix` and matches `pattern`
        (fnmatch on the whole relative path: `*` also matches `/`), in path order."""
        start = self.real
        if "/" in prefix:
            start = self.resolve(prefix.rsplit("/", 1)[0], "prefix")
        elif prefix:
            self._parts(prefix, "prefix")
        found = []
        for folder, dirs, files in os.walk(start):
            dirs.sort()
            for name in files:
                if name.startswith(PART_PREFIX):
                    continue
                full = Path(folder) / name
                rel = self.relative(full)
                if not rel.startswith(prefix) or (pattern and not fnmatchcase(rel, pattern)):
                    continue
                real = full.resolve()
                if not real.is_relative_to(self.real) or not real.is_file():
                    continue  # a symlink out of the root or to a directory: not ours to show
                stat = real.stat()
                found.append(FileEntry(rel, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda e: e.path)


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
            raise StepInputError(
                f"{self.final.name!r} already exists; set overwrite: true to replace it"
            ) from exc
        finally:
            self.discard()

    def discard(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


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


async def sha256_file(path: Path, progress: Progress) -> str:
    digest = hashlib.sha256()
    src = await asyncio.to_thread(open_read, path)
    try:
        await pump(src.read, digest.update, progress)
    finally:
        await asyncio.to_thread(src.close)
    return digest.hexdigest()
