"""Webhook secrets at rest (app/webhooks/secret_box.py): sealed with WEBHOOK_SECRET_KEY or a key
made once in the state dir; short or corrupt keys are refused, never replaced."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from app.settings import Settings
from app.webhooks.secret_box import KEY_FILE, SecretBox, SecretUnreadable

SECRET = "whsec_" + "B" * 43 + "="


def settings_in(state_dir: Path, **values: object) -> Settings:
    return Settings(_env_file=None, state_dir=state_dir, **values)  # type: ignore[call-arg]


def test_a_key_is_made_once_in_the_state_dir(tmp_path: Path) -> None:
    box = SecretBox(settings_in(tmp_path))
    sealed = box.seal(SECRET)
    assert SECRET not in sealed and box.open(sealed) == SECRET
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Fernet(key_file.read_bytes()).decrypt(sealed.encode()).decode() == SECRET
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left
    assert SecretBox(settings_in(tmp_path)).open(sealed) == SECRET


def test_the_configured_key_seals_and_another_does_not_open(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    sealed = SecretBox(settings_in(tmp_path, webhook_secret_key=key)).seal(SECRET)
    assert Fernet(key).decrypt(sealed.encode()).decode() == SECRET
    assert not (tmp_path / KEY_FILE).exists()
    other = SecretBox(settings_in(tmp_path, webhook_secret_key=Fernet.generate_key().decode()))
    with pytest.raises(SecretUnreadable):
        other.open(sealed)
    assert other.open(SECRET) == SECRET  # written in clear before encryption: used as it is


def test_short_or_corrupt_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        settings_in(tmp_path, webhook_secret_key="too-short")
    with pytest.raises(ValueError, match="no Fernet key"):
        SecretBox(settings_in(tmp_path, webhook_secret_key="!" * 44))
    (tmp_path / KEY_FILE).write_text("half-a-key")
    with pytest.raises(ValueError, match="no Fernet key"):
        SecretBox(settings_in(tmp_path))
    assert (tmp_path / KEY_FILE).read_text() == "half-a-key"  # kept for the operator to fix
