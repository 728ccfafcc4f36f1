"""A storage configuration that cannot work stops `wfs api` / `wfs worker` before they serve,
with one line saying why: settings refused at parse time, a bucket checked at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings
from app.steps.backends import check_storage
from tests.conftest import S3_BUCKET, Services

WFS = Path(sys.executable).parent / "wfs"


def test_s3_settings_are_checked_when_read() -> None:
    with pytest.raises(ValidationError, match="STORAGE_BACKEND=s3 needs S3_BUCKET"):
        Settings(_env_file=None, storage_backend="s3")  # type: ignore[call-arg]
    for bad in ("../x", "a/../b", "a b"):
        with pytest.raises(ValidationError, match="S3_PREFIX"):
            Settings(_env_file=None, s3_prefix=bad)  # type: ignore[call-arg]
    ok = Settings(_env_file=None, storage_backend="s3", s3_bucket="b-1", s3_prefix="/wfs/x")  # type: ignore[call-arg]
    assert ok.s3_prefix == "wfs/x/"
    with pytest.raises(ValidationError):
        Settings(_env_file=None, storage_backend="gcs")  # type: ignore[call-arg]


def test_a_bucket_that_cannot_be_used_stops_startup(s3_endpoint: str, services: Services) -> None:
    base = Settings(  # type: ignore[call-arg]
        _env_file=None,
        storage_backend="s3",
        s3_bucket=S3_BUCKET,
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        redis_url=services.redis_url,
    )
    check_storage(base)  # the suite's bucket: fine
    check_storage(Settings(_env_file=None))  # type: ignore[call-arg]  (local: nothing to check)
    with pytest.raises(RuntimeError, match="'no-such-bucket' at http.* is not usable: 404"):
        check_storage(base.model_copy(update={"s3_bucket": "no-such-bucket"}))
    with pytest.raises(RuntimeError, match="set REDIS_URL"):
        check_storage(base.model_copy(update={"redis_url": None}))


def test_wfs_api_explains_a_bad_storage_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "STORAGE_"))}
    done = subprocess.run(
        [str(WFS), "api"],
        env={**env, "STORAGE_BACKEND": "s3"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: invalid configuration: STORAGE_BACKEND=s3 needs S3_BUCKET "
        "(and S3_ENDPOINT_URL unless AWS)"
    )
    assert "Traceback" not in done.stderr
