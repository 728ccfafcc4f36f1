"""The download-URL key made in the state dir: never empty or short, even after a crash left
a broken key file behind (an empty key would let anyone sign URLs for any tenant)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from app import state_keys
from app.errors import Forbidden
from app.files import signing
from app.settings import Settings


def settings_in(state_dir: Path) -> Settings:
    return Settings(_env_file=None, state_dir=state_dir)  # type: ignore[call-arg]


def signed_with(key: bytes, tenant_id: str, path: str) -> str:
    payload = signing._b64(json.dumps([tenant_id, path, 2**40]).encode())
    mac = signing._b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{mac}"


@pytest.mark.parametrize("left_behind", ["", "  \n", "ab" * 8, "zz"])
def test_a_broken_key_file_is_replaced_never_used(tmp_path: Path, left_behind: str) -> None:
    key_file = tmp_path / state_keys.SECRET_FILE
    key_file.write_text(left_behind)
    settings = settings_in(tmp_path)
    grant = signing.sign(settings, "t1", "a.txt")
    assert signing.verify(settings, grant.token).path == "a.txt"
    assert len(bytes.fromhex(key_file.read_text())) == state_keys.KEY_BYTES
    assert key_file.stat().st_mode & 0o777 == 0o600
    for key in (b"", bytes.fromhex(left_behind.strip()) if left_behind.strip() != "zz" else b""):
        with pytest.raises(Forbidden, match="invalid download URL"):
            signing.verify(settings, signed_with(key, "t1", "../other/secret.txt"))
    assert [p.name for p in tmp_path.iterdir()] == [state_keys.SECRET_FILE]  # no temp file left


def test_a_valid_key_file_is_kept(tmp_path: Path) -> None:
    key = bytes(range(32))
    (tmp_path / state_keys.SECRET_FILE).write_text(key.hex())
    settings = settings_in(tmp_path)
    assert signing.verify(settings, signed_with(key, "t1", "a.txt")).tenant_id == "t1"
    assert (tmp_path / state_keys.SECRET_FILE).read_text() == key.hex()


def test_a_missing_key_file_is_made_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    token = signing.sign(settings_in(state), "t1", "a.txt").token
    made = (state / state_keys.SECRET_FILE).read_text()
    assert len(bytes.fromhex(made)) == state_keys.KEY_BYTES
    assert signing.verify(settings_in(state), token).tenant_id == "t1"
    assert (state / state_keys.SECRET_FILE).read_text() == made
