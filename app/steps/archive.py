"""Streaming zip and tar.gz writers for `files.archive`.

Each member is read from the tenant's storage (any backend) and copied in chunks through
`storage.pump`, so a large archive heartbeats its progress and stops between chunks when the
step is cancelled. The output is any object with `write`: zipfile then writes data descriptors
(it cannot seek back), which every unzip reads. The tar stream is written by
hand (headers from `TarInfo.tobuf`, 512-byte padding, end-of-archive blocks) because
`TarFile.addfile` copies a whole member in one blocking call.
"""

from __future__ import annotations

import asyncio
import gzip
import tarfile
import time
import zipfile
from collections.abc import Callable
from typing import IO, BinaryIO

from app.steps.base import StepInputError, StepTransientError
from app.steps.storage import FileEntry, Progress, pump

# Opens a member by its path: what is read (size, mtime) and its bytes.
OpenMember = Callable[[str], tuple[FileEntry, BinaryIO]]

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
_BLOCK = tarfile.BLOCKSIZE


def archive_format(name: str) -> str:
    """`zip` or `tar.gz`, from the target's file name."""
    lowered = name.lower()
    if lowered.endswith(".zip"):
        return "zip"
    if lowered.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    raise StepInputError(f"target {name!r} must end in {', '.join(ARCHIVE_SUFFIXES)}")


async def write_archive(
    fmt: str, handle: IO[bytes], members: list[str], open_member: OpenMember, progress: Progress
) -> None:
    """Write `members` (paths, also their names in the archive) to `handle` as `fmt`."""
    if fmt == "zip":
        await _write_zip(handle, members, open_member, progress)
    else:
        await _write_tar_gz(handle, members, open_member, progress)


def _zip_info(name: str, entry: FileEntry) -> zipfile.ZipInfo:
    stamp = time.localtime(max(entry.modified, 315532800))  # zip dates start in 1980
    info = zipfile.ZipInfo(name, stamp[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.file_size = entry.size  # known up front, so open() turns on ZIP64 for large members
    return info


async def _write_zip(
    handle: IO[bytes], members: list[str], open_member: OpenMember, progress: Progress
) -> None:
    archive = await asyncio.to_thread(
        zipfile.ZipFile, handle, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False
    )
    try:
        for name in members:
            entry, src = await asyncio.to_thread(open_member, name)
            info = _zip_info(name, entry)
            try:
                dest = await asyncio.to_thread(archive.open, info, "w")
                try:
                    await pump(src.read, dest.write, progress)
                finally:
                    await asyncio.to_thread(dest.close)
            finally:
                await asyncio.to_thread(src.close)
    finally:
        await asyncio.to_thread(archive.close)


def _bounded(read: Callable[[int], bytes], size: int) -> Callable[[int], bytes]:
    """A reader that stops after `size` bytes: a tar header already promised that many."""
    left = size

    def bounded_read(n: int) -> bytes:
        nonlocal left
        chunk = read(min(n, left))
        left -= len(chunk)
        return chunk

    return bounded_read


async def _write_tar_gz(
    handle: IO[bytes], members: list[str], open_member: OpenMember, progress: Progress
) -> None:
    gz = await asyncio.to_thread(gzip.GzipFile, filename="", mode="wb", fileobj=handle)
    written = 0
    try:
        for name in members:
            entry, src = await asyncio.to_thread(open_member, name)
            try:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = entry.size, int(entry.modified), 0o644
                header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
                await asyncio.to_thread(gz.write, header)
                moved = await pump(_bounded(src.read, info.size), gz.write, progress)
            finally:
                await asyncio.to_thread(src.close)
            if moved != info.size:
                raise StepTransientError(f"{name!r} shrank while it was being archived")
            padding = b"\0" * (-moved % _BLOCK)
            await asyncio.to_thread(gz.write, padding)
            written += len(header) + moved + len(padding)
        # Two zero blocks end the archive; tarfile pads the stream to whole records too.
        end = 2 * _BLOCK
        await asyncio.to_thread(gz.write, b"\0" * (end + (-(written + end) % tarfile.RECORDSIZE)))
    finally:
        await asyncio.to_thread(gz.close)
