"""Keys kept in the state directory: the file-URL signing key (app/files/signing.py), from
which the AI input fingerprints' key is also derived when AI_INPUT_HASH_KEY is unset
(app/ai/input_hash.py). A leaf module (settings only), so both layers can use it without an
import cycle.

The key file is written atomically and a file that does not hold exactly KEY_BYTES is never
used: an empty key after a crash would let anyone sign download URLs.
"""

from __future__ import annotations

import os
import secrets
from functools import cache
from pathlib import Path

from app.settings import Settings

SECRET_FILE = "file-url-secret"
KEY_BYTES = 32


def _read_key(path: Path) -> bytes | None:
    """The key in `path`, or None when it is missing or not exactly KEY_BYTES (an empty key
    would let anyone sign download URLs)."""
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return key if len(key) == KEY_BYTES else None


def _write_key(path: Path, replace: bool) -> None:
    """Write a fresh key to a temp file, fsync it, then move it into place in one step, so
    `path` never holds a partial key. Without `replace` an existing file wins (os.link fails)."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_bytes(KEY_BYTES).hex())
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # a process racing this one made it first: everybody uses that one
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


@cache  # only a valid key is ever returned, so only a valid key is ever cached
def _state_secret(state_dir: Path) -> bytes:
    path = state_dir / SECRET_FILE
    if (key := _read_key(path)) is not None:
        return key
    state_dir.mkdir(parents=True, exist_ok=True)
    # Missing: create it. Present but not a whole key (a crash of an older version between
    # create and write): replace it; nothing valid was ever signed with it.
    _write_key(path, replace=path.exists())
    if (key := _read_key(path)) is None:
        raise RuntimeError(f"{path} does not hold a {KEY_BYTES}-byte hex key: delete it")
    return key


def file_url_key(settings: Settings) -> bytes:
    """FILE_URL_SECRET, or the key kept in `<state dir>/file-url-secret` (made on first use)."""
    if settings.file_url_secret is not None:
        return settings.file_url_secret.get_secret_value().encode()
    return _state_secret(settings.state_dir.resolve())
