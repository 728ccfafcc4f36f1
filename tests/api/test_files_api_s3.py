"""The files API and a standard template on STORAGE_BACKEND=s3 (moto's S3 server, the suite's
Redis): an API and worker of their own with the bucket. The backend-neutral tests of
tests/api/test_files_api.py run here again (imported: pytest runs them with this module's
`api`); the rest checks what the local tests check on disk through the storage instead."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.settings import Settings
from app.steps.backends import open_storage
from app.steps.s3_storage import S3Storage
from app.templates.standard import STANDARD_TEMPLATES
from app.tenants.service import TenantService
from tests.api.test_files_api import (  # noqa: F401  (run again here, on S3)
    DELETE,
    FILE,
    FILES,
    KIB,
    LIMITS,
    PDF,
    SAMPLE_PATHS,
    test_another_tenant_sees_nothing,
    test_overwrite_only_when_asked,
    test_viewer_cannot_upload_or_delete,
    uploaded,
)
from tests.api.test_forecasts_api import COMPARISON, platform_client, spend, tenant_row
from tests.conftest import Services, TenantKeys, make_tenant, s3_settings
from tests.support import GraphQLClient, own_service
from tests.workers.test_template_graph import run

EXAMPLES = {t["name"]: t["example_params"] for t in STANDARD_TEMPLATES}
# A window no other test uses: tenantComparison ranks every tenant active in it.
WINDOW = {"from": "2008-03-01T00:00:00Z", "to": "2008-03-08T00:00:00Z"}
DAY = datetime(2008, 3, 3, tzinfo=UTC)


@pytest.fixture(scope="module")
def files_settings(settings: Settings, s3_endpoint: str, services: Services) -> Settings:
    return s3_settings(settings.model_copy(update=LIMITS), s3_endpoint, services.redis_url)


@pytest.fixture(scope="module")
async def api(files_settings: Settings) -> AsyncIterator[str]:
    """An API, a worker and an AI worker (the pro tier's enhancement points) on the S3 backend,
    with the small limits of test_files_api."""
    async with own_service(files_settings, worker=True, ai_worker=True) as url:
        yield url


async def storage_of(sessions: Any, settings: Settings, keys: TenantKeys) -> S3Storage:
    async with sessions() as session:
        tenant = await TenantService(session).get_by_name(keys.name)
    storage = await asyncio.to_thread(open_storage, settings, str(tenant.id))
    assert isinstance(storage, S3Storage)
    return storage


async def test_upload_list_download_delete_on_s3(
    api: str, tenant: TenantKeys, sessions: Any, files_settings: Settings
) -> None:
    done = await uploaded(api, tenant.operator, "docs/report.pdf", PDF, name="x.txt")
    assert done["path"] == "docs/report.pdf" and done["contentType"] == "application/pdf"
    storage = await storage_of(sessions, files_settings, tenant)
    _, src = storage.open_read("docs/report.pdf")
    assert src.read() == PDF  # the object the files.* steps read
    for i in range(3):
        await uploaded(api, tenant.operator, f"docs/page-{i}.txt", b"text %d" % i)
    client = GraphQLClient(api, tenant.viewer)
    seen, after = [], None
    while True:
        page = await client.data(FILES, {"prefix": "docs/", "first": 2, "after": after})
        seen += [e["node"]["path"] for e in page["files"]["edges"]]
        if not page["files"]["pageInfo"]["hasNextPage"]:
            break
        after = page["files"]["pageInfo"]["endCursor"]
    assert seen == ["docs/page-0.txt", "docs/page-1.txt", "docs/page-2.txt", "docs/report.pdf"]
    everything = (await client.data(FILES, {"first": 100}))["files"]["edges"]
    assert [e["node"]["path"] for e in everything][-3:] == SAMPLE_PATHS
    got = (await client.data(FILE, {"path": "docs/report.pdf"}))["file"]
    assert got["size"] == len(PDF)
    async with httpx.AsyncClient(timeout=30) as http:  # streamed through the API
        resp = await http.get(got["url"])
    assert resp.status_code == 200 and resp.content == PDF
    assert resp.headers["content-type"] == "application/pdf"
    assert resp.headers["content-length"] == str(len(PDF))
    operator = GraphQLClient(api, tenant.operator)
    gone = (await operator.data(DELETE, {"path": "docs/report.pdf"}))["deleteFile"]
    assert gone == {"__typename": "DeletedFile", "path": "docs/report.pdf"}
    again = (await operator.data(DELETE, {"path": "docs/report.pdf"}))["deleteFile"]
    assert again["code"] == "NOT_FOUND"
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(got["url"])).status_code == 404
    folder = (await operator.data(DELETE, {"path": "docs"}))["deleteFile"]
    assert folder["__typename"] == "ValidationError" and "folder" in folder["message"]
    assert storage.multipart_uploads() == []


async def test_the_quota_holds_on_s3_with_a_typed_error(
    api: str, sessions: Any, files_settings: Settings
) -> None:
    keys = await make_tenant(sessions, "free")  # 64 KiB here; the samples take 12
    first = await uploaded(api, keys.operator, "big-1.bin", b"\1" * 32 * KIB)
    assert first["__typename"] == "File"
    full = await uploaded(api, keys.operator, "big-2.bin", b"\2" * 32 * KIB)
    assert full["__typename"] == "QuotaExceededError" and full["code"] == "QUOTA_EXCEEDED"
    assert "the free tier stores at most" in full["message"]
    same = await uploaded(api, keys.operator, "big-1.bin", b"\3" * 32 * KIB, overwrite=True)
    assert same["__typename"] == "File"  # replacing in place adds nothing
    storage = await storage_of(sessions, files_settings, keys)
    assert storage.stat("big-2.bin") is None
    assert storage.usage.used() == storage.measure() == 12 * KIB + 32 * KIB


async def test_standard_templates_complete_on_s3(
    api: str, sessions: Any, files_settings: Settings
) -> None:
    """backup-cleanup (archive, checksum, retention) and document-processing with their
    example params, for a new tenant whose bucket prefix holds nothing yet."""
    keys = await make_tenant(sessions, "pro")
    client = GraphQLClient(api, keys.admin)
    results = []
    for _ in range(2):
        params = {**EXAMPLES["backup-cleanup"], "keep": 1}
        _, execution = await run(client, api, keys.admin, "backup-cleanup", params)
        assert execution["status"] == "COMPLETED", execution["error"]
        results.append(execution["result"])
    storage = await storage_of(sessions, files_settings, keys)
    latest = results[-1]
    _, src = storage.open_read(latest["archive"])
    assert hashlib.sha256(src.read()).hexdigest() == latest["sha256"]
    left = [e.path for e in storage.iter_files("backups/")]
    assert len(left) == 2 and len(results[1]["deleted"]) == 1  # keep 1: one archive + its sum
    assert results[1]["deleted"][0] not in left
    params = EXAMPLES["document-processing"]
    _, execution = await run(client, api, keys.admin, "document-processing", params)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"]["category"] == "invoice"
    assert storage.file(execution["result"]["report"]).size > 0
    assert storage.multipart_uploads() == []
    assert uuid.UUID(str(storage.base.split("/")[-2]))  # keys sit under the tenant's id


async def test_tenant_comparison_counts_what_the_bucket_holds(
    api: str, sessions: Any, files_settings: Settings
) -> None:
    """tenantComparison.storageBytes on S3 comes from the storage interface (the shared usage
    counter, measured from the bucket), not from the local files root; measuring a tenant that
    never stored a file neither seeds its samples nor writes any key."""
    stored, empty = await make_tenant(sessions, "free"), await make_tenant(sessions, "free")
    ids = [await tenant_row(sessions, k) for k in (stored, empty)]
    for tenant_id in ids:
        await spend(sessions, tenant_id, [(DAY, "0.5")])  # in the window, so both are ranked
    assert (await uploaded(api, stored.operator, "big.bin", b"\1" * 32 * KIB))["path"]
    platform = await platform_client(api, sessions)
    found = await platform.data(COMPARISON, {**WINDOW, "orderBy": "STORAGE"})
    rows = {e["node"]["name"]: e["node"] for e in found["tenantComparison"]["ranking"]["edges"]}
    assert rows[stored.name]["storageBytes"] == 12 * KIB + 32 * KIB  # samples + the upload
    assert rows[empty.name]["storageBytes"] == 0
    assert rows[empty.name]["storageMeasuredAt"] is not None
    storage = await storage_of(sessions, files_settings, stored)
    assert storage.usage.used() == storage.measure() == 12 * KIB + 32 * KIB
    listed = storage.client.list_objects_v2(
        Bucket=storage.bucket, Prefix=f"{files_settings.s3_prefix}{ids[1]}/"
    )
    assert listed.get("KeyCount", 0) == 0  # measured, not seeded
