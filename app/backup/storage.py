"""The tenant storage in a backup: the local backend's folder tree as a gzipped tar.

Written as it is read (one file at a time, summed on the way), part files of writes in progress
left out, symlinks kept as links. Restored into a staging folder beside the storage root with
Python's `data` extraction filter (no absolute paths, no links leading outside, no devices),
then renamed into place; a root that held anything is moved aside, never deleted. S3 is not
copied: the bucket's versioning and replication keep it (docs/backup.md says why).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from app.backup.manifest import STORAGE_FILE, FileSum, HashingWriter, StorageInfo
from app.settings import Settings

Progress = Callable[[str], None]
PART_PREFIX = ".wfs-part-"  # local writes in progress (app/steps/storage.py): never backed up


def back_up_storage(
    settings: Settings, folder: Path, progress: Progress
) -> tuple[StorageInfo, FileSum | None]:
    if settings.storage_backend == "s3":
        progress(
            f"storage: S3 bucket {settings.s3_bucket} (prefix {settings.s3_prefix!r}) is not "
            "copied: its versioning and replication keep it (docs/backup.md)"
        )
        return StorageInfo("s3", False, bucket=settings.s3_bucket, prefix=settings.s3_prefix), None
    root = settings.files_root
    writer = HashingWriter(folder / STORAGE_FILE)
    count = 0
    try:
        with tarfile.open(fileobj=writer, mode="w|gz") as tar:  # type: ignore[call-overload]
            for path in _storage_entries(root):
                try:
                    tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
                except FileNotFoundError:  # deleted while the backup ran: it is gone anyway
                    continue
                count += 0 if path.is_dir() else 1
    finally:
        summed = writer.close()
    progress(f"storage: {count} files from {root}, {mib(summed.bytes)} compressed")
    return StorageInfo("local", True, files=count), summed


def _storage_entries(root: Path) -> list[Path]:
    """Folders and files under the storage root, parents first, part files left out."""
    if not root.is_dir():
        return []
    found: list[Path] = []
    for top, dirs, files in os.walk(root):  # symlinks are stored as links, never followed
        dirs.sort()
        here = Path(top)
        found += [here / d for d in dirs]
        found += [here / f for f in sorted(files) if not f.startswith(PART_PREFIX)]
    return found


def holds_files(root: Path) -> bool:
    return root.is_dir() and any(root.iterdir())


def restore_storage(root: Path, archive: Path, progress: Progress) -> Path | None:
    """Unpack into a staging folder beside `root`, then swap it in; a non-empty root is
    moved aside (returned), never deleted."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.with_name(f".{root.name}.restoring-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    refused: list[str] = []

    def data_only(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        # The "data" filter: no absolute paths, no links or members leading outside, no
        # devices. One such member (a symlink a tenant's folder held that points outside it)
        # is left out and named, rather than failing the whole storage.
        try:
            return tarfile.data_filter(member, dest)
        except tarfile.FilterError:
            refused.append(member.name)
            return None

    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            tar.extractall(staging, filter=data_only)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    kept = None
    if root.exists():
        if holds_files(root):
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            kept = root.with_name(f"{root.name}.before-restore-{stamp}")
            root.rename(kept)
        else:
            root.rmdir()
    staging.rename(root)
    files = sum(len(f) for _, _, f in os.walk(root))
    progress(f"storage: {files} files restored into {root}")
    if refused:
        progress(f"storage: left out (outside the storage root): {', '.join(refused[:20])}")
    return kept


def undo_restore(root: Path, kept: Path | None) -> None:
    """Undo restore_storage after a later step failed: the restored files go (the backup
    still has them) and the folder found before, if any, is back at `root`."""
    shutil.rmtree(root, ignore_errors=True)
    if kept is not None:
        kept.rename(root)


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
