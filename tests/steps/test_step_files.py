"""files.* activities on a real temporary storage root: confinement, streaming, retention.

Tests marked BOTH run on each storage backend: a local root, and S3 (moto's server, a key
prefix per test); symlinks, mtimes set by hand and folders made by hand are local only."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from app.settings import Settings
from app.steps import StepInputError
from app.steps.backends import open_storage
from app.steps.s3_storage import S3Storage
from app.steps.storage import Quota
from tests.steps.conftest import MakeContext
from tests.steps.step_support import run_step

# Every tenant's storage holds the sample files from its first use (app/steps/storage.py).
SAMPLE_PATHS = ["samples/contract.txt", "samples/customers.csv", "samples/invoice.txt"]


def tenant_dir(settings: Settings, tenant: str = "tenant-a") -> Path:
    return settings.files_root / tenant


def no_part_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".wfs-part-")]


BOTH = pytest.mark.parametrize("backend", ["local", "s3"])
UNLIMITED = Quota(2**40, "test")


def _put(settings: Settings, path: str, data: bytes, tenant: str) -> None:
    writer = open_storage(settings, tenant).create(path, len(data), UNLIMITED, overwrite=True)
    writer.write(data)
    writer.commit()


async def put(settings: Settings, path: str, data: bytes, tenant: str = "tenant-a") -> None:
    """Store a file as a tool would, past the steps (on either backend)."""
    await asyncio.to_thread(_put, settings, path, data, tenant)


def _stored(settings: Settings, path: str, tenant: str) -> bytes | None:
    storage = open_storage(settings, tenant)
    if storage.stat(path) is None:
        return None
    _, src = storage.open_read(path)
    with src:
        return src.read()


async def stored(settings: Settings, path: str, tenant: str = "tenant-a") -> bytes | None:
    """The bytes stored at `path`, None when there is no file."""
    return await asyncio.to_thread(_stored, settings, path, tenant)


def _nothing_left(settings: Settings, tenant: str) -> bool:
    storage = open_storage(settings, tenant)
    if isinstance(storage, S3Storage):
        return storage.multipart_uploads() == []
    return no_part_files(tenant_dir(settings, tenant))


async def nothing_left(settings: Settings, tenant: str = "tenant-a") -> bool:
    """No part file (local) and no multipart upload (S3) left behind."""
    return await asyncio.to_thread(_nothing_left, settings, tenant)


@BOTH
async def test_write_then_read_in_every_form(make_ctx: MakeContext) -> None:
    ctx = make_ctx()
    out = await run_step("files.write", {"path": "in/note.txt", "content": "héllo"}, ctx)
    assert out == {
        "path": "in/note.txt",
        "size": 6,
        "sha256": hashlib.sha256("héllo".encode()).hexdigest(),
    }
    read = await run_step("files.read", {"path": "in/note.txt"}, ctx)
    assert read == {"path": "in/note.txt", "size": 6, "content": "héllo"}
    raw = bytes(range(256))
    await run_step(
        "files.write", {"path": "bin", "content_base64": base64.b64encode(raw).decode()}, ctx
    )
    got = await run_step("files.read", {"path": "./bin", "as": "base64"}, ctx)
    assert base64.b64decode(got["content"]) == raw and got["path"] == "bin"
    with pytest.raises(StepInputError, match="not UTF-8 text"):
        await run_step("files.read", {"path": "bin"}, ctx)
    await run_step("files.write", {"path": "d.json", "content": '{"a": [1]}'}, ctx)
    assert (await run_step("files.read", {"path": "d.json", "as": "json"}, ctx))["content"] == {
        "a": [1]
    }
    await run_step("files.write", {"path": "d.csv", "content": "a,b\n1,2\n"}, ctx)
    rows = (await run_step("files.read", {"path": "d.csv", "as": "csv"}, ctx))["content"]
    assert rows == [{"a": "1", "b": "2"}]
    with pytest.raises(StepInputError, match="larger than max_bytes"):
        await run_step("files.read", {"path": "d.csv", "max_bytes": 3}, ctx)
    with pytest.raises(StepInputError, match="no such file"):
        await run_step("files.read", {"path": "missing.txt"}, ctx)


@BOTH
async def test_write_refuses_to_clobber_but_a_retry_of_the_same_write_succeeds(
    make_ctx: MakeContext, backend: str
) -> None:
    ctx = make_ctx()
    await run_step("files.write", {"path": "a.txt", "content": "one"}, ctx)
    again = await run_step("files.write", {"path": "a.txt", "content": "one"}, ctx)
    assert again["size"] == 3
    with pytest.raises(StepInputError, match="already exists"):
        await run_step("files.write", {"path": "a.txt", "content": "two"}, ctx)
    await run_step("files.write", {"path": "a.txt", "content": "two", "overwrite": True}, ctx)
    assert (await run_step("files.read", {"path": "a.txt"}, ctx))["content"] == "two"
    if backend == "local":
        with pytest.raises(StepInputError, match="a parent is a file"):
            await run_step("files.write", {"path": "a.txt/b.txt", "content": "x"}, ctx)
    else:  # S3 has no folders: a file and a "folder" may share a name (docs/storage.md)
        await run_step("files.write", {"path": "a.txt/b.txt", "content": "x"}, ctx)
        assert (await run_step("files.read", {"path": "a.txt"}, ctx))["content"] == "two"
    with pytest.raises(StepInputError, match="is valid under each of"):
        await run_step("files.write", {"path": "x", "content": "a", "content_base64": "YQ=="}, ctx)


@BOTH
@pytest.mark.parametrize(
    "path", ["../escape.txt", "/etc/passwd", "a/../../escape.txt", "..", "a\\..\\b", "a\x00b"]
)
async def test_traversal_is_refused(make_ctx: MakeContext, path: str) -> None:
    for name, input in (
        ("files.read", {"path": path}),
        ("files.write", {"path": path, "content": "x"}),
        ("files.delete", {"path": path}),
        ("files.copy", {"source": "a.txt", "target": path}),
    ):
        ctx = make_ctx()
        await run_step("files.write", {"path": "a.txt", "content": "x", "overwrite": True}, ctx)
        with pytest.raises(StepInputError, match="relative path|absolute|'\\.\\.'"):
            await run_step(name, input, ctx)
    with pytest.raises(StepInputError, match="relative path|absolute|'\\.\\.'"):
        await run_step("files.list", {"prefix": path + "/"}, make_ctx())


async def test_symlinks_leading_outside_are_refused(
    make_ctx: MakeContext, step_settings: Settings, tmp_path: Path
) -> None:
    ctx = make_ctx()
    await run_step("files.write", {"path": "inside.txt", "content": "in"}, ctx)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    root = tenant_dir(step_settings)
    (root / "out-dir").symlink_to(outside, target_is_directory=True)
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "alias.txt").symlink_to(root / "inside.txt")  # stays inside: fine
    for input in ({"path": "out-dir/secret.txt"}, {"path": "passwd"}):
        with pytest.raises(StepInputError, match="leads outside the storage"):
            await run_step("files.read", input, ctx)
    with pytest.raises(StepInputError, match="leads outside the storage"):
        await run_step("files.write", {"path": "out-dir/new.txt", "content": "x"}, ctx)
    with pytest.raises(StepInputError, match="leads outside the storage"):
        await run_step("files.archive", {"paths": ["passwd"], "target": "a.zip"}, ctx)
    assert (await run_step("files.read", {"path": "alias.txt"}, ctx))["content"] == "in"
    listed = [e["path"] for e in await run_step("files.list", {}, ctx)]
    assert listed == ["alias.txt", "inside.txt", *SAMPLE_PATHS]
    assert not (outside / "new.txt").exists()
    # Deleting a link removes the link, never what it points to.
    deleted = await run_step("files.delete", {"paths": ["passwd", "out-dir"]}, ctx)
    assert deleted["deleted"] == ["out-dir", "passwd"]
    assert (outside / "secret.txt").read_text() == "secret" and not (root / "out-dir").exists()


@BOTH
async def test_tenants_cannot_reach_each_other(
    make_ctx: MakeContext, step_settings: Settings
) -> None:
    a, b = make_ctx("tenant-a"), make_ctx("tenant-b")
    await run_step("files.write", {"path": "secret.txt", "content": "a's"}, a)
    with pytest.raises(StepInputError, match="no such file"):
        await run_step("files.read", {"path": "secret.txt"}, b)
    with pytest.raises(StepInputError, match="'\\.\\.'"):
        await run_step("files.read", {"path": "../tenant-a/secret.txt"}, b)
    with pytest.raises(StepInputError, match="cannot name a storage directory"):
        await run_step("files.read", {"path": "secret.txt"}, make_ctx("../tenant-a"))
    assert [e["path"] for e in await run_step("files.list", {}, b)] == SAMPLE_PATHS
    assert await stored(step_settings, "secret.txt", "tenant-a") == b"a's"


@BOTH
async def test_copy_streams_in_chunks_with_heartbeats(
    make_ctx: MakeContext, step_settings: Settings
) -> None:
    beats: list[dict[str, int]] = []
    ctx = make_ctx(heartbeat=beats.append)
    data = os.urandom(3 * 1024 * 1024 + 5)
    await put(step_settings, "big.bin", data)
    out = await run_step("files.copy", {"source": "big.bin", "target": "copy/big.bin"}, ctx)
    assert out == {
        "path": "copy/big.bin",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert await stored(step_settings, "copy/big.bin") == data
    assert [b["bytes_done"] for b in beats] == [1 << 20, 2 << 20, 3 << 20, len(data)]
    assert beats[-1]["bytes_total"] == len(data)
    again = await run_step("files.copy", {"source": "big.bin", "target": "copy/big.bin"}, ctx)
    assert again["sha256"] == out["sha256"]  # a retried copy finds its own result
    await run_step("files.write", {"path": "other.txt", "content": "x"}, ctx)
    with pytest.raises(StepInputError, match="already exists"):
        await run_step("files.copy", {"source": "big.bin", "target": "other.txt"}, ctx)


@BOTH
async def test_cancelled_copy_stops_between_chunks_and_leaves_nothing(
    make_ctx: MakeContext, step_settings: Settings
) -> None:
    beats: list[dict[str, int]] = []
    ctx = make_ctx(heartbeat=beats.append, cancelled=lambda: len(beats) >= 2)
    await put(step_settings, "big.bin", b"x" * (5 * 1024 * 1024))
    with pytest.raises(asyncio.CancelledError):
        await run_step("files.copy", {"source": "big.bin", "target": "copy.bin"}, ctx)
    assert len(beats) == 2
    assert await stored(step_settings, "copy.bin") is None
    assert await nothing_left(step_settings)


@BOTH
async def test_list_by_prefix_and_pattern(make_ctx: MakeContext) -> None:
    ctx = make_ctx()
    for path in ("reports/2024-01.csv", "reports/2024-02.csv", "reports/old/x.txt", "top.csv"):
        await run_step("files.write", {"path": path, "content": path}, ctx)
    everything = await run_step("files.list", {}, ctx)
    assert [e["path"] for e in everything] == [
        "reports/2024-01.csv",
        "reports/2024-02.csv",
        "reports/old/x.txt",
        *SAMPLE_PATHS,
        "top.csv",
    ]
    assert everything[0]["size"] == len("reports/2024-01.csv")
    assert everything[0]["modified"].endswith("Z")
    by_prefix = await run_step("files.list", {"prefix": "reports/2024"}, ctx)
    assert [e["path"] for e in by_prefix] == ["reports/2024-01.csv", "reports/2024-02.csv"]
    by_pattern = await run_step("files.list", {"pattern": "*.csv"}, ctx)
    assert len(by_pattern) == 4  # `*` spans folders (samples/customers.csv too)
    assert await run_step("files.list", {"prefix": "nothing/here"}, ctx) == []
    with pytest.raises(StepInputError, match="more than limit 2"):
        await run_step("files.list", {"limit": 2}, ctx)


async def test_retention_keeps_the_newest(make_ctx: MakeContext, step_settings: Settings) -> None:
    ctx = make_ctx()
    root = tenant_dir(step_settings)
    for day in range(1, 6):
        await run_step("files.write", {"path": f"backups/b-{day}.zip", "content": "x"}, ctx)
        os.utime(root / f"backups/b-{day}.zip", (1_700_000_000 + day, 1_700_000_000 + day))
    os.utime(root / "backups/b-1.zip", (1_800_000_000, 1_800_000_000))  # touched last: newest
    await run_step("files.write", {"path": "keep-me.txt", "content": "x"}, ctx)
    out = await run_step("files.delete", {"pattern": "backups/*.zip", "keep_newest": 2}, ctx)
    assert out == {
        "deleted": ["backups/b-2.zip", "backups/b-3.zip", "backups/b-4.zip"],
        "kept": ["backups/b-1.zip", "backups/b-5.zip"],
    }
    left = sorted(e["path"] for e in await run_step("files.list", {}, ctx))
    assert left == ["backups/b-1.zip", "backups/b-5.zip", "keep-me.txt", *SAMPLE_PATHS]


@BOTH
async def test_delete_checks_every_path_first(make_ctx: MakeContext) -> None:
    ctx = make_ctx()
    await run_step("files.write", {"path": "a.txt", "content": "x"}, ctx)
    with pytest.raises(StepInputError):
        await run_step("files.delete", {"paths": ["a.txt", "../b.txt"]}, ctx)
    assert (await run_step("files.read", {"path": "a.txt"}, ctx))["content"] == "x"
    out = await run_step("files.delete", {"paths": ["a.txt", "gone.txt"]}, ctx)
    assert out == {"deleted": ["a.txt"], "kept": []}
    await run_step("files.write", {"path": "dir/f.txt", "content": "x"}, ctx)
    with pytest.raises(StepInputError, match="is a directory"):
        await run_step("files.delete", {"path": "dir"}, ctx)


@BOTH
@pytest.mark.parametrize("target", ["out/backup.zip", "out/backup.tar.gz"])
async def test_archive_checksum_matches_the_file_and_members_round_trip(
    make_ctx: MakeContext, step_settings: Settings, target: str
) -> None:
    beats: list[dict[str, int]] = []
    ctx = make_ctx(heartbeat=beats.append)
    contents = {
        "docs/a.txt": b"alpha",
        "docs/sub/b.bin": os.urandom(1024 * 1024 + 100),
        "docs/empty": b"",
    }
    for path, data in contents.items():
        await run_step(
            "files.write", {"path": path, "content_base64": base64.b64encode(data).decode()}, ctx
        )
    await run_step("files.write", {"path": "other.txt", "content": "not included"}, ctx)
    out = await run_step("files.archive", {"prefix": "docs/", "target": target}, ctx)
    produced = await stored(step_settings, target)
    assert produced is not None
    assert out["path"] == target
    assert out["sha256"] == hashlib.sha256(produced).hexdigest()
    assert out["size"] == len(produced)
    assert out["files"] == sorted(contents)
    assert beats and beats[0]["bytes_total"] == sum(len(d) for d in contents.values())
    if target.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(produced)) as zf:
            assert zf.testzip() is None
            unpacked = {name: zf.read(name) for name in zf.namelist()}
    else:
        with tarfile.open(fileobj=io.BytesIO(produced), mode="r:gz") as tf:
            members = tf.getmembers()
            unpacked = {m.name: tf.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    assert unpacked == contents
    with pytest.raises(StepInputError, match="already exists"):
        await run_step("files.archive", {"prefix": "docs/", "target": target}, ctx)
    assert await nothing_left(step_settings)


@BOTH
async def test_archive_of_its_own_folder_skips_itself_and_refuses_bad_targets(
    make_ctx: MakeContext,
) -> None:
    ctx = make_ctx()
    await run_step("files.write", {"path": "a.txt", "content": "a"}, ctx)
    first = await run_step("files.archive", {"prefix": "", "target": "all.zip"}, ctx)
    assert first["files"] == ["a.txt", *SAMPLE_PATHS]
    again = await run_step(
        "files.archive", {"prefix": "", "target": "all.zip", "overwrite": True}, ctx
    )
    assert again["files"] == ["a.txt", *SAMPLE_PATHS]
    with pytest.raises(StepInputError, match=r"\$.target: 'a.rar' does not match"):
        await run_step("files.archive", {"paths": ["a.txt"], "target": "a.rar"}, ctx)
    with pytest.raises(StepInputError, match="no files to archive"):
        await run_step("files.archive", {"prefix": "none/", "target": "n.zip"}, ctx)


@BOTH
async def test_cancelled_archive_leaves_nothing(
    make_ctx: MakeContext, step_settings: Settings
) -> None:
    beats: list[dict[str, int]] = []
    ctx = make_ctx(heartbeat=beats.append, cancelled=lambda: len(beats) >= 1)
    await put(step_settings, "big.bin", b"y" * (3 * 1024 * 1024))
    with pytest.raises(asyncio.CancelledError):
        await run_step("files.archive", {"paths": ["big.bin"], "target": "big.tar.gz"}, ctx)
    assert await stored(step_settings, "big.tar.gz") is None
    assert await nothing_left(step_settings)


async def test_every_tenant_gets_the_sample_files_once(
    make_ctx: MakeContext, step_settings: Settings
) -> None:
    """A tenant's first use of its storage seeds samples/ (so the standard templates' example
    params work for any tenant); a root that exists without samples/ (a tenant from before)
    gets them too; deleted sample files stay deleted and changed ones are not overwritten."""
    ctx = make_ctx("tenant-new")
    read = await run_step("files.read", {"path": "samples/customers.csv", "as": "csv"}, ctx)
    assert read["content"][0]["email"]
    old = tenant_dir(step_settings, "tenant-old")
    (old / "mine").mkdir(parents=True)
    (old / "mine" / "a.txt").write_text("a")
    listed = [e["path"] for e in await run_step("files.list", {}, make_ctx("tenant-old"))]
    assert listed == ["mine/a.txt", *SAMPLE_PATHS]
    await run_step("files.delete", {"path": "samples/invoice.txt"}, ctx)
    await run_step(
        "files.write", {"path": "samples/contract.txt", "content": "mine", "overwrite": True}, ctx
    )
    listed = [e["path"] for e in await run_step("files.list", {}, ctx)]
    assert listed == ["samples/contract.txt", "samples/customers.csv"]
    assert (tenant_dir(step_settings, "tenant-new") / "samples/contract.txt").read_text() == "mine"
    assert no_part_files(tenant_dir(step_settings, "tenant-new"))


async def test_steps_opening_a_new_storage_at_once_all_find_the_samples(
    make_ctx: MakeContext,
) -> None:
    """Parallel first steps of a new tenant (data-sync reads a sample while listing): none may
    see the samples folder half seeded (it failed 2 runs in 3 before the folder was renamed into
    place whole). Local only: on S3 each opener puts every missing sample before it goes on."""
    for tenant in range(20):  # the window is short: many new tenants, six reads each
        reads = [
            run_step("files.read", {"path": "samples/customers.csv"}, make_ctx(f"fresh-{tenant}"))
            for _ in range(6)
        ]
        assert {r["size"] for r in await asyncio.gather(*reads)} == {187}
