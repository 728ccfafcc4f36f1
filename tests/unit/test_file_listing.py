"""The files API's listing walks only what a page needs, in path order, and resumes after its
cursor; a file deleted or swapped for a symlink between finding and opening it is NOT_FOUND
(before: a raw OSError, HTTP 500)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from app.errors import NotFound, ValidationFailed
from app.files import service as files
from app.files.service import FileService
from app.settings import Settings
from app.steps.storage import PART_PREFIX, TenantRoot
from app.steps.tenant_storage import LocalStorage
from app.tenants.service import Principal

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 4
# Names whose path order is not the order of a plain walk: "a-c" < "a/b" < "a0" < "a\u00e9".
NAMES = ["a/b", "a/c/d.txt", "a/c-d", "a-c", "a0", "a.txt", "a\u00e9", "b/c/d/e", "b/c/f", "z"]


@pytest.fixture
def service(tmp_path: Path) -> FileService:
    settings = Settings(_env_file=None, storage_root=tmp_path / "storage")  # type: ignore[call-arg]
    principal = Principal(uuid.uuid4(), "t", "pro", "viewer", uuid.uuid4())
    return FileService(settings, principal)


def root_of(service: FileService) -> TenantRoot:
    """The tenant's local root (the service's storage is LocalStorage over it)."""
    tenant = str(service.principal.tenant_id)
    return TenantRoot(service.settings.files_root, tenant).open()


async def tree(service: FileService, outside: Path) -> TenantRoot:
    root = root_of(service)
    for name in NAMES:
        (root.real / name).parent.mkdir(parents=True, exist_ok=True)
        (root.real / name).write_text(name)
    (root.real / "a" / f"{PART_PREFIX}x").write_text("half")  # never listed
    (outside / "secret.txt").write_text("not yours")
    (root.real / "a" / "out").symlink_to(outside / "secret.txt")  # leads out: not listed
    (root.real / "a" / "dir-link").symlink_to(root.real / "b")  # a folder: not followed
    (root.real / "a" / "link").symlink_to(root.real / "z")  # a file inside: listed
    return root


async def paged(service: FileService, prefix: str | None, first: int) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = await service.list(prefix, first, after)
        seen += [f.path for f in page.items]
        if not page.has_next:
            return seen
        after = page.cursors[-1]


async def test_pages_are_in_path_order_and_resume_after_the_cursor(
    service: FileService, tmp_path: Path
) -> None:
    root = await tree(service, tmp_path)
    everything = sorted([*NAMES, "a/link", *(e.path for e in root.walk("samples/"))])
    assert [e.path for e in root.walk()] == everything  # files.* steps: the same walk
    for first in (1, 2, 3, 7, 100):
        assert await paged(service, None, first) == everything, first
    for prefix in ("a", "a/", "a/c", "b/c/", "b/c/d/e", "nothing/", "samples/"):
        expected = [p for p in everything if p.startswith(prefix)]
        for first in (1, 2, 100):
            assert await paged(service, prefix, first) == expected, (prefix, first)


async def test_a_changed_file_gets_its_new_content_type(service: FileService) -> None:
    root = root_of(service)
    (root.real / "doc").write_text("plain words")
    assert (await service.get("doc")).content_type == "text/plain"
    assert (await service.list("doc", 10, None)).items[0].content_type == "text/plain"
    (root.real / "doc").write_bytes(PDF)
    assert (await service.list("doc", 10, None)).items[0].content_type == "application/pdf"


async def test_a_file_gone_or_swapped_after_it_was_found_is_not_found(
    service: FileService, tmp_path: Path
) -> None:
    root = root_of(service)
    storage = LocalStorage(root)
    for name in ("gone.txt", "swapped.txt", "cached.txt"):
        (root.real / name).write_text(name)
    (tmp_path / "elsewhere.txt").write_text("not yours")
    gone, swapped = storage.file("gone.txt"), storage.file("swapped.txt")
    assert (await service.get("cached.txt")).size == len("cached.txt")  # its type is cached
    # What a listing page or a download meets when the file changes after it was found.
    (root.real / "gone.txt").unlink()
    for name in ("swapped.txt", "cached.txt"):
        (root.real / name).unlink()
        (root.real / name).symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(NotFound), files.domain_errors():
        files._opened(storage, "gone.txt")[1].close()
    for entry in (gone, swapped):  # found before, not cached: opened again, refused
        with pytest.raises((NotFound, ValidationFailed)), files.domain_errors():
            files._describe(storage, entry)
    for path in ("swapped.txt", "cached.txt"):  # a symlink out is never read
        with pytest.raises(ValidationFailed, match="leads outside"):
            await service.get(path)
    os.symlink(root.real / "missing", root.real / "dangling")
    with pytest.raises(NotFound):
        await service.get("dangling")
