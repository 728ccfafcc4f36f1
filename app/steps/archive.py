"""Streaming zip and tar.gz writers for `files.archive`.

Each member is copied in chunks through `storage.pump`, so a large archive heartbeats its
progress and stops between chunks when the step is cancelled. The tar stream is written by
hand (headers from `TarInfo.tobuf`, 512-byte padding, end-of-archive blocks) because
`TarFile.addfile` copies a whole member in one blocking call.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from app.steps.base import StepInputError, StepTransientError
from app.steps.storage import Progress, open_read, pump

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
    fmt: str, handle: BinaryIO, members: list[tuple[str, Path]], progress: Progress
) -> None:
    """Write `members` (archive name, real path) to the open `handle` as `fmt`."""
    if fmt == "zip":
        await _write_zip(handle, members, progress)
    else:
        await _write_tar_gz(handle, members, progress)


async def _write_zip(handle: BinaryIO, members: list[tuple[str, Path]], progress: Progress) -> None:
    archive = await asyncio.to_thread(
        zipfile.ZipFile, handle, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False
    )
    try:
        for name, real in members:
            info = await asyncio.to_thread(
                zipfile.ZipInfo.from_file, real, name, strict_timestamps=False
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            src = await asyncio.to_thread(open_read, real)
            try:
                # ZipInfo.from_file set file_size, so open() turns on ZIP64 for large members.
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
    handle: BinaryIO, members: list[tuple[str, Path]], progress: Progress
) -> None:
    gz = await asyncio.to_thread(gzip.GzipFile, filename="", mode="wb", fileobj=handle)
    written = 0
    try:
        for name, real in members:
            src = await asyncio.to_thread(open_read, real)
            try:
                stat = await asyncio.to_thread(os.fstat, src.fileno())
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
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
