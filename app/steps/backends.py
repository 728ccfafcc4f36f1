"""`open_storage`: a tenant's storage on the backend STORAGE_BACKEND names (local or s3), and
`check_storage`, which `wfs api` and `wfs worker` run before they start serving.

Kept apart from the interface (app/steps/tenant_storage.py), which the backends import.
"""

from __future__ import annotations

from app.settings import Settings
from app.steps.storage import TenantRoot
from app.steps.tenant_storage import LocalStorage, TenantStorage


def open_storage(settings: Settings, tenant_id: str) -> TenantStorage:
    """The tenant's storage on the configured backend, its sample files seeded on first use.
    Blocking: run it in a thread."""
    if settings.storage_backend == "s3":
        from app.steps.s3_storage import S3Storage  # boto3 loads only where it is used

        return S3Storage.open(settings, tenant_id)
    return LocalStorage(TenantRoot(settings.files_root, tenant_id).open())


def storage_usage_bytes(settings: Settings, tenant_id: str) -> int:
    """What the tenant's storage holds on the configured backend, as its quota counts it,
    without creating or seeding anything (a tenant that never stored a file holds 0).
    Blocking: on S3 it may list the tenant's keys (once, shared with every process)."""
    if settings.storage_backend == "s3":
        from app.steps.s3_storage import S3Storage

        return S3Storage.open(settings, tenant_id, seed=False).usage_bytes()
    return LocalStorage(TenantRoot(settings.files_root, tenant_id)).usage_bytes()


def check_storage(settings: Settings) -> None:
    """Stop a starting process with a clear message when its storage cannot work: S3 without
    Redis, or a bucket that is missing, unreachable or refuses the credentials. Blocking."""
    if settings.storage_backend == "s3":
        from app.steps.s3_storage import check_bucket

        check_bucket(settings)
