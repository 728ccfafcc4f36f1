"""`manifest.json`: what a backup holds, written last (a folder without it is not a backup).

It says which code and schema made the backup (restore refuses a schema newer than its own
code), its backup point (the database snapshot's time: rows committed later are not in it,
and `wfs restore` replays from Temporal what the workflows recorded after it), the row count
of every table (checked after a restore) and the size and SHA-256 of each file (checked
before a restore reads a byte of them).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from app.errors import ValidationFailed

FORMAT = 1
NAME = "manifest.json"
DATABASE_FILE = "database.dump"
STORAGE_FILE = "storage.tar.gz"
CHUNK = 1 << 20


class BackupInvalid(ValidationFailed):
    """Not a backup, a damaged one, or one of an unknown format."""


@dataclass
class FileSum:
    bytes: int
    sha256: str


@dataclass
class StorageInfo:
    backend: str  # local or s3
    included: bool  # local: the tar is in the backup; s3: the bucket's own versioning
    files: int = 0
    bucket: str | None = None
    prefix: str | None = None


@dataclass
class Manifest:
    app_version: str
    alembic_revision: str
    backup_point: datetime  # the database snapshot's time
    finished_at: datetime
    server_version: str
    pg_dump_major: int
    temporal_namespace: str
    temporal_task_queue: str
    tables: dict[str, int]
    storage: StorageInfo
    files: dict[str, FileSum] = field(default_factory=dict)
    format: int = FORMAT

    def write(self, folder: Path) -> None:
        data = asdict(self)
        data["backup_point"] = self.backup_point.isoformat()
        data["finished_at"] = self.finished_at.isoformat()
        (folder / NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / NAME
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise BackupInvalid(
                f"{folder}: no {NAME} (not a backup, or an unfinished one)"
            ) from exc
        except (OSError, ValueError) as exc:
            raise BackupInvalid(f"{path}: unreadable ({exc})") from exc
        if data.get("format") != FORMAT:
            raise BackupInvalid(f"{path}: backup format {data.get('format')!r}, not {FORMAT}")
        try:
            return cls(
                **{
                    **data,
                    "backup_point": datetime.fromisoformat(data["backup_point"]),
                    "finished_at": datetime.fromisoformat(data["finished_at"]),
                    "storage": StorageInfo(**data["storage"]),
                    "files": {k: FileSum(**v) for k, v in data["files"].items()},
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupInvalid(f"{path}: malformed ({exc})") from exc

    def verify(self, folder: Path) -> None:
        """Every file as the manifest says, read once (streamed): BackupInvalid otherwise."""
        for name, expected in self.files.items():
            path = folder / name
            try:
                with path.open("rb") as src:
                    found = checksum(src)
            except OSError as exc:
                raise BackupInvalid(f"{path}: missing or unreadable ({exc})") from exc
            if found != expected:
                raise BackupInvalid(
                    f"{path}: {found.bytes} bytes, sha256 {found.sha256[:12]}..., but the "
                    f"manifest says {expected.bytes} bytes, {expected.sha256[:12]}... (damaged)"
                )


def checksum(src: BinaryIO) -> FileSum:
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return FileSum(size, digest.hexdigest())


class HashingWriter:
    """A file being written that sums what passes through it (one pass, nothing held)."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("xb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> int:
        self.digest.update(chunk)
        self.size += len(chunk)
        return self.handle.write(chunk)

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> FileSum:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return FileSum(self.size, self.digest.hexdigest())
