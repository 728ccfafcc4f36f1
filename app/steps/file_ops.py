"""What the `files.*` step activities do (app/steps/files.py registers them with their input
schemas): write, read, copy, list, delete and archive files under the tenant's confined
storage root. Blocking file work runs in threads; copy and archive stream in chunks with
heartbeats (cancellable); every write reserves its bytes against the tenant's storage quota
first, and deletes give them back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from app.steps.archive import archive_format, write_archive
from app.steps.base import StepContext, StepInputError
from app.steps.data import parse
from app.steps.storage import (
    PartFile,
    Progress,
    Quota,
    TenantRoot,
    charged,
    open_read,
    pump,
    sha256_file,
)
from app.steps.tenant_limits import tenant_limits

MAX_LIST_ENTRIES = 10_000


async def _root(ctx: StepContext) -> TenantRoot:
    return await asyncio.to_thread(TenantRoot(ctx.settings.files_root, ctx.tenant_id).open)


async def _quota(ctx: StepContext) -> Quota:
    tier = (await tenant_limits(ctx)).tier
    return Quota(ctx.settings.storage_quota_bytes.get(tier, 0), tier)


def _archive_bound(members: list[tuple[str, Path]], total: int) -> int:
    """The most a zip or tar.gz of `members` (`total` bytes) can take: deflate adds well under
    1% to incompressible data; each member adds headers (tar: 512-byte blocks and a PAX header
    carrying the name, zip: local and central entries), and the archive end its trailer."""
    names = sum(len(name.encode()) for name, _ in members)
    return total + total // 100 + 4096 * len(members) + 3 * names + 64 * 1024


def _same_bytes(path: Path, data: bytes) -> bool:
    if path.stat().st_size != len(data):
        return False
    with open_read(path) as src:
        return hashlib.sha256(src.read()).digest() == hashlib.sha256(data).digest()


def _write_bytes(
    root: TenantRoot, rel: str, data: bytes, overwrite: bool, quota: Quota
) -> dict[str, Any]:
    target = root.resolve(rel)
    if target.is_dir():
        raise StepInputError(f"path {rel!r} is a directory")
    if target.exists() and not overwrite:
        if not _same_bytes(target, data):
            raise StepInputError(f"path {rel!r} already exists; set overwrite: true")
    else:
        reservation = root.reserve_write(target, len(data), quota, overwrite)
        try:
            part = PartFile(target)
            try:
                part.handle.write(data)
            except BaseException:
                part.discard()
                raise
            reservation.commit(functools.partial(part.place, overwrite))
        finally:
            reservation.release()  # nothing once committed
    digest = hashlib.sha256(data).hexdigest()
    return {"path": root.relative(target), "size": len(data), "sha256": digest}


async def write_file(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Write text (UTF-8) or base64 bytes to `path`, creating folders; atomic (temp + rename)."""
    if "content" in input:
        data = input["content"].encode()
    else:
        try:
            data = base64.b64decode(input["content_base64"], validate=True)
        except binascii.Error as exc:
            raise StepInputError(f"`content_base64` is not valid base64: {exc}") from exc
    root, quota = await _root(ctx), await _quota(ctx)
    return await asyncio.to_thread(
        _write_bytes, root, input["path"], data, input.get("overwrite", False), quota
    )


def _read_bytes(root: TenantRoot, rel: str, limit: int) -> tuple[str, bytes]:
    path = root.file(rel)
    with open_read(path) as src:
        data = src.read(limit + 1)
    if len(data) > limit:
        raise StepInputError(f"{rel!r} is larger than max_bytes ({limit}); copy or archive it")
    return root.relative(path), data


async def read_file(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Read a file (at most `max_bytes`, default 1 MiB) as text, base64, parsed JSON or CSV rows."""
    root = await _root(ctx)
    limit = input.get("max_bytes", 1024 * 1024)
    rel, data = await asyncio.to_thread(_read_bytes, root, input["path"], limit)
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


def _copy_plan(root: TenantRoot, source: str, target: str) -> tuple[Path, Path, int, bool]:
    src, dst = root.file(source, "source"), root.resolve(target, "target")
    if src == dst:
        raise StepInputError(f"source and target are the same file ({source!r})")
    if dst.is_dir():
        raise StepInputError(f"target {target!r} is a directory")
    return src, dst, src.stat().st_size, dst.exists()


async def copy_file(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Copy `source` to `target` in chunks (heartbeats bytes done; cancellable; atomic)."""
    root = await _root(ctx)
    src, dst, size, exists = await asyncio.to_thread(
        _copy_plan, root, input["source"], input["target"]
    )
    overwrite = input.get("overwrite", False)
    progress = Progress(ctx, size)
    if exists and not overwrite:
        digest = await sha256_file(src, progress)
        if (await asyncio.to_thread(dst.stat)).st_size == size and digest == await sha256_file(
            dst, progress
        ):
            return {"path": root.relative(dst), "size": size, "sha256": digest}
        raise StepInputError(f"target {input['target']!r} already exists; set overwrite: true")
    quota = await _quota(ctx)
    reservation = await asyncio.to_thread(root.reserve_write, dst, size, quota, overwrite)
    hasher = hashlib.sha256()
    try:
        part = await asyncio.to_thread(PartFile, dst)
        try:
            reader = await asyncio.to_thread(open_read, src)
            try:

                def write(chunk: bytes) -> None:
                    hasher.update(chunk)
                    part.handle.write(chunk)

                moved = await pump(reader.read, write, progress)
            finally:
                await asyncio.to_thread(reader.close)
            if moved != size:  # the source changed meanwhile: hold what was really written
                grown = reservation.written - charged(size) + charged(moved)
                await asyncio.to_thread(reservation.resize, grown)
            await asyncio.to_thread(reservation.commit, functools.partial(part.place, overwrite))
        except BaseException:
            part.discard()  # a quick unlink; must run even when cancelled twice
            raise
    finally:
        reservation.release()  # a quick sum; nothing once committed
    return {"path": root.relative(dst), "size": moved, "sha256": hasher.hexdigest()}


async def list_files(input: dict[str, Any], ctx: StepContext) -> list[dict[str, Any]]:
    """Files whose path starts with `prefix` and matches the glob `pattern` (`*` spans `/`)."""
    root = await _root(ctx)
    entries = await asyncio.to_thread(root.walk, input.get("prefix", ""), input.get("pattern"))
    limit = input.get("limit", MAX_LIST_ENTRIES)
    if len(entries) > limit:
        raise StepInputError(
            f"{len(entries)} files match, more than limit {limit}; narrow prefix or pattern"
        )
    return [e.as_output() for e in entries]


def _delete(root: TenantRoot, input: dict[str, Any]) -> dict[str, Any]:
    found: list[tuple[float, str]] = []  # (modified, path)
    if "pattern" in input:
        found = [(e.modified, e.path) for e in root.walk(pattern=input["pattern"])]
    else:
        for rel in dict.fromkeys(input.get("paths") or [input.get("path")]):
            entry = root.entry(rel)
            if entry.is_dir() and not entry.is_symlink():
                raise StepInputError(f"path {rel!r} is a directory; delete its files by pattern")
            if entry.is_symlink() or entry.exists():  # a missing path is already deleted
                found.append((entry.lstat().st_mtime, root.relative(entry)))
    found.sort(reverse=True)  # newest first; among equal times the later name counts as newer
    keep = input.get("keep_newest", 0)
    kept, doomed = found[:keep], found[keep:]

    def unlink() -> int:
        freed = 0
        for _, rel in doomed:
            entry = root.entry(rel)
            try:
                freed += charged(entry.lstat().st_size)
                entry.unlink()
            except FileNotFoundError:
                pass
        return freed

    root.usage.change(unlink)
    return {"deleted": sorted(p for _, p in doomed), "kept": sorted(p for _, p in kept)}


async def delete_files(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Delete `path`, `paths` or the files matching `pattern`, sparing the `keep_newest` newest.

    Every path is checked before anything is deleted; a symlink is removed, not its target.
    """
    root = await _root(ctx)
    return await asyncio.to_thread(_delete, root, input)


def _archive_plan(
    root: TenantRoot, input: dict[str, Any]
) -> tuple[Path, str, list[tuple[str, Path]]]:
    target = root.resolve(input["target"], "target")
    fmt = archive_format(target.name)
    if target.is_dir():
        raise StepInputError(f"target {input['target']!r} is a directory")
    if target.exists() and not input.get("overwrite", False):
        raise StepInputError(f"target {input['target']!r} already exists; set overwrite: true")
    if "paths" in input:
        names = dict.fromkeys(PurePosixPath(p).as_posix() for p in input["paths"])
        members = [(name, root.file(name)) for name in names]
    else:
        members = [(e.path, root.resolve(e.path)) for e in root.walk(prefix=input["prefix"])]
        members = [(name, real) for name, real in members if real != target]
    if not members:
        raise StepInputError("no files to archive")
    if len(members) > MAX_LIST_ENTRIES:
        raise StepInputError(f"{len(members)} files to archive, more than {MAX_LIST_ENTRIES}")
    return target, fmt, members


async def archive_files(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Pack `paths` (or every file under `prefix`) into a zip or tar.gz `target`.

    Streams each file in chunks (heartbeats, cancellable); `sha256` and `size` describe the
    archive as written; `files` lists the member names.
    """
    root, quota = await _root(ctx), await _quota(ctx)
    target, fmt, members = await asyncio.to_thread(_archive_plan, root, input)
    sizes = await asyncio.to_thread(lambda: sum(real.stat().st_size for _, real in members))
    bound = _archive_bound(members, sizes)  # reserved up front, trued up once written
    overwrite = input.get("overwrite", False)
    reservation = await asyncio.to_thread(root.reserve_write, target, bound, quota, overwrite)
    progress = Progress(ctx, sizes)
    try:
        part = await asyncio.to_thread(PartFile, target)
        try:
            await write_archive(fmt, part.handle, members, progress)
            await asyncio.to_thread(part.close)
            size = (await asyncio.to_thread(part.path.stat)).st_size
            written = reservation.written - charged(bound) + charged(size)
            await asyncio.to_thread(reservation.resize, written)
            digest = await sha256_file(part.path, Progress(ctx, size))
            place = functools.partial(part.place, overwrite)
            await asyncio.to_thread(reservation.commit, place)
        except BaseException:
            part.discard()  # a quick unlink; must run even when cancelled twice
            raise
    finally:
        reservation.release()  # a quick sum; nothing once committed
    return {
        "path": root.relative(target),
        "size": size,
        "sha256": digest,
        "files": [name for name, _ in members],
    }
