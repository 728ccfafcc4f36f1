"""What the `files.*` step activities do (app/steps/files.py registers them with their input
schemas): write, read, copy, list, delete and archive files in the tenant's storage, on
whichever backend holds it (app/steps/tenant_storage.py). Blocking storage calls run in
threads; copy and archive stream in chunks with heartbeats (cancellable); every write reserves
its bytes against the tenant's storage quota first, and deletes give them back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from app.steps.archive import archive_format, write_archive
from app.steps.backends import open_storage
from app.steps.base import StepContext, StepInputError
from app.steps.data import parse
from app.steps.storage import FileEntry, Progress, Quota, pump
from app.steps.tenant_limits import tenant_limits
from app.steps.tenant_storage import FileWriter, TenantStorage, discard

MAX_LIST_ENTRIES = 10_000


async def _storage(ctx: StepContext) -> TenantStorage:
    return await asyncio.to_thread(open_storage, ctx.settings, ctx.tenant_id)


async def _quota(ctx: StepContext) -> Quota:
    tier = (await tenant_limits(ctx)).tier
    return Quota(ctx.settings.storage_quota_bytes.get(tier, 0), tier)


def _archive_bound(members: list[FileEntry], total: int) -> int:
    """The most a zip or tar.gz of `members` (`total` bytes) can take: deflate adds well under
    1% to incompressible data; each member adds headers (tar: 512-byte blocks and a PAX header
    carrying the name, zip: local and central entries and a data descriptor), and the archive
    end its trailer."""
    names = sum(len(e.path.encode()) for e in members)
    return total + total // 100 + 4096 * len(members) + 3 * names + 64 * 1024


def _read_all(storage: TenantStorage, path: str, limit: int) -> tuple[FileEntry, bytes]:
    entry, src = storage.open_read(path)
    with src:
        return entry, src.read(limit + 1)


def _same_bytes(storage: TenantStorage, entry: FileEntry, data: bytes) -> bool:
    if entry.size != len(data):
        return False
    _, found = _read_all(storage, entry.path, len(data))
    return hashlib.sha256(found).digest() == hashlib.sha256(data).digest()


def _write_bytes(
    storage: TenantStorage, rel: str, data: bytes, overwrite: bool, quota: Quota
) -> dict[str, Any]:
    entry = storage.stat(rel)
    if entry is not None and entry.folder:
        raise StepInputError(f"path {rel!r} is a directory")
    if entry is not None and not overwrite:
        if not _same_bytes(storage, entry, data):
            raise StepInputError(f"path {rel!r} already exists; set overwrite: true")
        path = entry.path
    else:
        writer = storage.create(rel, len(data), quota, overwrite)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.discard()
            raise
        path = writer.path
    digest = hashlib.sha256(data).hexdigest()
    return {"path": path, "size": len(data), "sha256": digest}


async def write_file(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Write text (UTF-8) or base64 bytes to `path`, creating folders; atomic (temp + rename)."""
    if "content" in input:
        data = input["content"].encode()
    else:
        try:
            data = base64.b64decode(input["content_base64"], validate=True)
        except binascii.Error as exc:
            raise StepInputError(f"`content_base64` is not valid base64: {exc}") from exc
    storage, quota = await _storage(ctx), await _quota(ctx)
    return await asyncio.to_thread(
        _write_bytes, storage, input["path"], data, input.get("overwrite", False), quota
    )


def _read_bytes(storage: TenantStorage, rel: str, limit: int) -> tuple[str, bytes]:
    entry, data = _read_all(storage, rel, limit)
    if len(data) > limit:
        raise StepInputError(f"{rel!r} is larger than max_bytes ({limit}); copy or archive it")
    return entry.path, data


async def read_file(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Read a file (at most `max_bytes`, default 1 MiB) as text, base64, parsed JSON or CSV rows."""
    storage = await _storage(ctx)
    limit = input.get("max_bytes", 1024 * 1024)
    rel, data = await asyncio.to_thread(_read_bytes, storage, input["path"], limit)
    mode = input.get("as", "text")
    content: Any
    if mode == "base64":
        content = base64.b64encode(data).decode("ascii")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StepInputError(f"{rel!r} is not UTF-8 text; read it `as: base64`") from exc
        if mode == "json":
            try:
                content = json.loads(text)
            except ValueError as exc:
                raise StepInputError(f"{rel!r} is not valid JSON: {exc}") from exc
        elif mode == "csv":
            content = parse({"text": text, "format": "csv"})
        else:
            content = text
    return {"path": rel, "size": len(data), "content": content}


def _copy_plan(
    storage: TenantStorage, source: str, target: str
) -> tuple[FileEntry, FileEntry | None]:
    src, dst = storage.file(source, "source"), storage.stat(target, "target")
    if dst is not None and dst.folder:
        raise StepInputError(f"target {target!r} is a directory")
    if dst is not None and src.path == dst.path:
        raise StepInputError(f"source and target are the same file ({source!r})")
    return src, dst


async def sha256_of(storage: TenantStorage, path: str, progress: Progress) -> str:
    """The SHA-256 of a stored file, read in chunks (heartbeats, cancellable)."""
    digest = hashlib.sha256()
    _, src = await asyncio.to_thread(storage.open_read, path)
    try:
        await pump(src.read, digest.update, progress)
    finally:
        await asyncio.to_thread(src.close)
    return digest.hexdigest()


async def stream_into(
    writer: FileWriter, read: Callable[[int], bytes], progress: Progress
) -> tuple[int, str]:
    """Pump `read` into `writer`: the bytes moved and their SHA-256."""
    hasher = hashlib.sha256()

    def write(chunk: bytes) -> None:
        hasher.update(chunk)
        writer.write(chunk)

    return await pump(read, write, progress), hasher.hexdigest()


async def copy_file(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Copy `source` to `target` in chunks (heartbeats bytes done; cancellable; atomic)."""
    storage = await _storage(ctx)
    src, dst = await asyncio.to_thread(_copy_plan, storage, input["source"], input["target"])
    overwrite = input.get("overwrite", False)
    progress = Progress(ctx, src.size)
    if dst is not None and not overwrite:
        digest = await sha256_of(storage, src.path, progress)
        if dst.size == src.size and digest == await sha256_of(storage, dst.path, progress):
            return {"path": dst.path, "size": src.size, "sha256": digest}
        raise StepInputError(f"target {input['target']!r} already exists; set overwrite: true")
    quota = await _quota(ctx)
    writer = await asyncio.to_thread(storage.create, input["target"], src.size, quota, overwrite)
    try:
        _, reader = await asyncio.to_thread(storage.open_read, src.path, "source")
        try:
            moved, digest = await stream_into(writer, reader.read, progress)
        finally:
            await asyncio.to_thread(reader.close)
        if moved != src.size:  # the source changed meanwhile: hold what was really written
            await asyncio.to_thread(writer.expect, moved)
        await asyncio.to_thread(writer.commit)
    except BaseException:
        await discard(writer)
        raise
    return {"path": writer.path, "size": moved, "sha256": digest}


async def list_files(input: dict[str, Any], ctx: StepContext) -> list[dict[str, Any]]:
    """Files whose path starts with `prefix` and matches the glob `pattern` (`*` spans `/`)."""
    storage = await _storage(ctx)
    limit = input.get("limit", MAX_LIST_ENTRIES)

    def listed() -> list[FileEntry]:  # one past the limit is enough to refuse
        found = storage.iter_files(input.get("prefix", ""), input.get("pattern"), limit=limit + 1)
        return list(found)

    entries = await asyncio.to_thread(listed)
    if len(entries) > limit:
        raise StepInputError(f"more than limit {limit} files match; narrow prefix or pattern")
    return [e.as_output() for e in entries]


def _delete(storage: TenantStorage, input: dict[str, Any]) -> dict[str, Any]:
    found: list[tuple[float, str]] = []  # (modified, path)
    if "pattern" in input:
        found = [(e.modified, e.path) for e in storage.walk(pattern=input["pattern"])]
    else:
        rels = list(dict.fromkeys(input.get("paths") or [input.get("path")]))
        entries = [storage.stat(rel, follow=False) for rel in rels]  # every path checked first
        for rel, entry in zip(rels, entries, strict=True):
            if entry is not None and entry.folder:
                raise StepInputError(f"path {rel!r} is a directory; delete its files by pattern")
            if entry is not None:  # a missing path is already deleted
                found.append((entry.modified, entry.path))
    found.sort(reverse=True)  # newest first; among equal times the later name counts as newer
    keep = input.get("keep_newest", 0)
    kept, doomed = found[:keep], found[keep:]
    storage.delete([rel for _, rel in doomed])
    return {"deleted": sorted(p for _, p in doomed), "kept": sorted(p for _, p in kept)}


async def delete_files(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Delete `path`, `paths` or the files matching `pattern`, sparing the `keep_newest` newest.

    Every path is checked before anything is deleted; a symlink is removed, not its target.
    """
    storage = await _storage(ctx)
    return await asyncio.to_thread(_delete, storage, input)


def _archive_plan(
    storage: TenantStorage, input: dict[str, Any]
) -> tuple[str, FileEntry | None, list[FileEntry]]:
    fmt = archive_format(PurePosixPath(input["target"]).name)
    target = storage.stat(input["target"], "target")
    if target is not None and target.folder:
        raise StepInputError(f"target {input['target']!r} is a directory")
    if target is not None and not input.get("overwrite", False):
        raise StepInputError(f"target {input['target']!r} already exists; set overwrite: true")
    if "paths" in input:
        names = dict.fromkeys(PurePosixPath(p).as_posix() for p in input["paths"])
        members = [storage.file(name) for name in names]
        members = [
            FileEntry(name, e.size, e.modified) for name, e in zip(names, members, strict=True)
        ]
    else:
        members = storage.walk(prefix=input["prefix"])
        if target is not None:
            members = [e for e in members if e.path != target.path]
    if not members:
        raise StepInputError("no files to archive")
    if len(members) > MAX_LIST_ENTRIES:
        raise StepInputError(f"{len(members)} files to archive, more than {MAX_LIST_ENTRIES}")
    return fmt, target, members


class _ArchiveOut:
    """What the archive writers write to: the writer, counting and hashing what passes."""

    def __init__(self, writer: FileWriter) -> None:
        self.writer, self.size, self.hasher = writer, 0, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.writer.write(bytes(data))
        self.hasher.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


async def archive_files(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Pack `paths` (or every file under `prefix`) into a zip or tar.gz `target`.

    Streams each file in chunks (heartbeats, cancellable); `sha256` and `size` describe the
    archive as written; `files` lists the member names.
    """
    storage, quota = await _storage(ctx), await _quota(ctx)
    fmt, _, members = await asyncio.to_thread(_archive_plan, storage, input)
    sizes = sum(e.size for e in members)
    bound = _archive_bound(members, sizes)  # reserved up front, trued up once written
    overwrite = input.get("overwrite", False)
    writer = await asyncio.to_thread(storage.create, input["target"], bound, quota, overwrite)
    out = _ArchiveOut(writer)

    def open_member(name: str) -> tuple[FileEntry, BinaryIO]:
        return storage.open_read(name)

    try:
        names = [e.path for e in members]
        await write_archive(fmt, out, names, open_member, Progress(ctx, sizes))  # type: ignore[arg-type]
        await asyncio.to_thread(writer.expect, out.size)
        await asyncio.to_thread(writer.commit)
    except BaseException:
        await discard(writer)
        raise
    return {
        "path": writer.path,
        "size": out.size,
        "sha256": out.hasher.hexdigest(),
        "files": [e.path for e in members],
    }
