"""`files.*` step activities: files in the tenant's confined storage root.

Paths are relative to `<settings.files_root>/<tenant_id>/` (see app/steps/storage.py for the
confinement rules). Large files move in 1 MiB chunks off the event loop, heartbeating the bytes
done and stopping (asyncio.CancelledError, nothing left behind) once the step is cancelled.

| activity | input | output |
|---|---|---|
| files.write | path, content (text) or content_base64, overwrite? | {path, size, sha256} |
| files.read | path, as: text, base64, json or csv, max_bytes? | {path, size, content} |
| files.copy | source, target, overwrite? | {path, size, sha256} |
| files.list | prefix?, pattern?, limit? | [{path, size, modified}] |
| files.delete | path, paths or pattern; keep_newest? | {deleted: [...], kept: [...]} |
| files.archive | paths or prefix, target (.zip/.tar.gz/.tgz), overwrite? | {path, size, ...} |

Without `overwrite`, writing where a file exists fails, unless that file already holds exactly
the same bytes: a retried step then succeeds instead of failing on its own earlier write.

Every step that adds bytes (write, copy, archive) reserves them against the tenant's storage
quota (STORAGE_QUOTA_BYTES by tier; see app/steps/storage.py) before writing, and is refused
with a clear error when they do not fit; deletes give the bytes back.

The activities themselves are in app/steps/file_ops.py; here are their names and input schemas.
"""

from __future__ import annotations

from typing import Any

from app.steps.archive import ARCHIVE_SUFFIXES
from app.steps.base import StepActivity, define
from app.steps.file_ops import (
    MAX_LIST_ENTRIES,
    archive_files,
    copy_file,
    delete_files,
    list_files,
    read_file,
    write_file,
)

MAX_READ_BYTES = 2 * 1024 * 1024  # Temporal refuses payloads above 2 MB
HEARTBEAT_SECONDS = 30.0

_PATH: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 1024}
_PATHS: dict[str, Any] = {"type": "array", "items": _PATH, "minItems": 1}
_OVERWRITE: dict[str, Any] = {"type": "boolean", "default": False}


def _schema(properties: dict[str, Any], required: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        **extra,
    }


ACTIVITIES: list[StepActivity] = [
    define(
        "files.write",
        "write text or base64 content to a file in the tenant's storage",
        _schema(
            {"path": _PATH, "content": {"type": "string"}, "content_base64": {"type": "string"}}
            | {"overwrite": _OVERWRITE},
            ["path"],
            oneOf=[{"required": ["content"]}, {"required": ["content_base64"]}],
        ),
        write_file,
    ),
    define(
        "files.read",
        "read a file as text, base64, JSON or CSV rows",
        _schema(
            {
                "path": _PATH,
                "as": {"enum": ["text", "base64", "json", "csv"], "default": "text"},
                "max_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_READ_BYTES},
            },
            ["path"],
        ),
        read_file,
    ),
    define(
        "files.copy",
        "copy a file within the tenant's storage (streamed, cancellable)",
        _schema({"source": _PATH, "target": _PATH, "overwrite": _OVERWRITE}, ["source", "target"]),
        copy_file,
        heartbeat_seconds=HEARTBEAT_SECONDS,
    ),
    define(
        "files.list",
        "list files by prefix and glob pattern: path, size, modified",
        _schema(
            {
                "prefix": {"type": "string", "maxLength": 1024},
                "pattern": {"type": "string", "minLength": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_ENTRIES},
            },
            [],
        ),
        list_files,
    ),
    define(
        "files.delete",
        "delete files by path, paths or pattern; keep_newest keeps the N newest (retention)",
        _schema(
            {
                "path": _PATH,
                "paths": _PATHS,
                "pattern": {"type": "string", "minLength": 1},
                "keep_newest": {"type": "integer", "minimum": 0},
            },
            [],
            oneOf=[{"required": ["path"]}, {"required": ["paths"]}, {"required": ["pattern"]}],
        ),
        delete_files,
    ),
    define(
        "files.archive",
        f"pack files into an archive ({', '.join(ARCHIVE_SUFFIXES)}) with its sha256",
        _schema(
            {
                "paths": _PATHS,
                "prefix": {"type": "string", "maxLength": 1024},
                "target": {**_PATH, "pattern": r"\.(zip|tar\.gz|tgz)$"},
                "overwrite": _OVERWRITE,
            },
            ["target"],
            oneOf=[{"required": ["paths"]}, {"required": ["prefix"]}],
        ),
        archive_files,
        heartbeat_seconds=HEARTBEAT_SECONDS,
    ),
]
