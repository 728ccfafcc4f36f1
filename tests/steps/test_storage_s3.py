"""What only the S3 backend has to prove, against moto's S3 server and the suite's Redis:
replicas sharing one quota, conditional creates racing, multipart uploads aborted on cancel,
tenants confined to their key prefix, samples seeded once per tenant."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from app.embedded import EmbeddedValkey
from app.seed import seed_sample_files
from app.settings import Settings
from app.steps import StepInputError
from app.steps.backends import open_storage
from app.steps.s3_storage import PART_BYTES, SEEDED_MARKER, S3Storage
from app.steps.shared_usage import SharedUsage
from app.steps.storage import FileExists, Quota, StorageFull, charged
from tests.steps.conftest import MakeContext
from tests.steps.step_support import run_step
from tests.support import free_port

pytestmark = pytest.mark.parametrize("backend", ["s3"])
KIB = 1024
SAMPLE_PATHS = ["samples/contract.txt", "samples/customers.csv", "samples/invoice.txt"]


def s3(settings: Settings, tenant: str = "tenant-a") -> S3Storage:
    storage = open_storage(settings, tenant)
    assert isinstance(storage, S3Storage)
    return storage


def _write(storage: S3Storage, path: str, size: int, quota: Quota, gate: threading.Barrier) -> str:
    """One write as a replica does it; all writers reserve before any commits."""
    try:
        writer = storage.create(path, size, quota)
    except StorageFull:
        gate.wait()
        return "full"
    try:
        writer.write(b"r" * size)
        gate.wait()
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    return "stored"


async def test_two_replicas_writing_for_one_tenant_stay_within_the_quota(
    step_settings: Settings,
) -> None:
    """Two storage instances (what two API or worker replicas hold) reserve against one usage
    in Redis: of eight concurrent 12 KiB writes into 64 KiB (samples take 12) four fit."""
    replicas = [s3(step_settings), s3(step_settings)]
    samples = replicas[0].measure()
    quota = Quota(64 * KIB, "free")
    assert samples == 12 * KIB
    gate = threading.Barrier(8, timeout=60)
    # Threads of their own: the default executor has fewer workers than the barrier waits for.
    with ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(_write, replicas[i % 2], f"w/{i}.bin", 12 * KIB, quota, gate)
            for i in range(8)
        ]
        outcomes = [await asyncio.wrap_future(f) for f in futures]
    assert sorted(outcomes) == ["full"] * 4 + ["stored"] * 4
    measured = replicas[1].measure()
    assert measured == samples + 4 * 12 * KIB <= quota.limit
    assert replicas[0].usage.used() == measured  # the shared counter agrees with the listing
    # A delete by one replica makes room for the other; a discarded write gives its bytes back.
    stored = [e.path for e in replicas[0].iter_files("w/")]
    assert await asyncio.to_thread(replicas[0].delete, stored[:1]) == stored[:1]
    held = await asyncio.to_thread(replicas[1].create, "x.bin", 12 * KIB, quota)
    with pytest.raises(StorageFull, match="the free tier stores at most"):
        await asyncio.to_thread(replicas[0].create, "y.bin", 5 * KIB, quota)
    await asyncio.to_thread(held.discard)
    fits = await asyncio.to_thread(replicas[0].create, "y.bin", 12 * KIB, quota)
    await asyncio.to_thread(fits.discard)
    # A lost counter (Redis flushed, or expired) is measured again from the bucket.
    await asyncio.to_thread(replicas[0].usage.forget)
    again = await asyncio.to_thread(replicas[1].create, "z.bin", 1, quota)
    await asyncio.to_thread(again.discard)
    assert replicas[0].usage.used() == samples + 3 * 12 * KIB


def _put(storage: S3Storage, path: str, size: int, quota: Quota, gate: threading.Barrier) -> None:
    writer = storage.create(path, size, quota, overwrite=True)
    try:
        writer.write(b"o" * size)
        gate.wait()
        writer.commit()
    except BaseException:
        writer.discard()
        raise


def _delete(storage: S3Storage, path: str, gate: threading.Barrier) -> list[str]:
    gate.wait()
    return storage.delete([path])


async def test_concurrent_deletes_and_overwrites_keep_the_shared_usage_exact(
    step_settings: Settings,
) -> None:
    """The review's reproduction (a quota bypass): two replicas deleting one path at once both
    subtracted its size, and two overwrites of one path both subtracted the replaced object,
    so `used` fell to 0 while the bucket held megabytes. Under the per-key locks the counter
    stays equal to a listing after every round, and exactly one delete reports the file."""
    replicas = [s3(step_settings), s3(step_settings)]
    quota = Quota(2**30, "test")
    base = replicas[0].measure()
    with ThreadPoolExecutor(2) as pool:
        for _ in range(8):
            await asyncio.to_thread(
                _put, replicas[0], "x.bin", 64 * KIB, quota, threading.Barrier(1)
            )
            gate = threading.Barrier(2, timeout=30)
            done = [pool.submit(_delete, r, "x.bin", gate) for r in replicas]
            reported = [await asyncio.wrap_future(f) for f in done]
            assert replicas[1].usage.used() == replicas[1].measure() == base
            assert sorted(reported) == [[], ["x.bin"]]
        for _ in range(8):
            gate = threading.Barrier(2, timeout=30)
            done = [
                pool.submit(_put, r, "y.bin", size, quota, gate)
                for r, size in zip(replicas, (10, 256 * KIB), strict=True)
            ]
            for f in done:
                await asyncio.wrap_future(f)
            assert replicas[0].usage.used() == replicas[0].measure()
            assert replicas[0].measure() in (base + charged(10), base + 256 * KIB)
    assert replicas[0].multipart_uploads() == []


async def test_a_settle_whose_lock_lapsed_drops_the_counter_and_one_process_measures(
    step_settings: Settings,
) -> None:
    """Fencing: a change whose key lock lapsed (a stalled process) does not apply its
    difference but drops `used`, measured again before the next write. A missing `used` is
    measured by one of the processes asking at once; the others wait for its result."""
    storage = s3(step_settings)
    usage = storage.usage
    usage.current()
    with usage.locked(["p.bin"]) as lock:
        usage.client.delete(lock.keys[0])  # lapsed, as after LOCK_SECONDS
        assert usage.settle("-", -4096, lock) is False
    assert usage.used() is None
    assert usage.current() == storage.measure()
    calls: list[int] = []

    def slow_measure() -> int:
        calls.append(1)
        threading.Event().wait(0.3)  # a long listing
        return 12345

    shared = SharedUsage(usage.client, f"measure-once/{storage.base}", slow_measure)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(shared.current) for _ in range(6)]
        seen = [await asyncio.wrap_future(f) for f in futures]
    assert seen == [12345] * 6 and len(calls) == 1
    shared.forget()


async def test_a_commit_whose_counter_update_fails_still_succeeds(
    step_settings: Settings, tmp_path: Path
) -> None:
    """The object is in place when the counter update fails (here: a Valkey of its own,
    stopped by a botocore hook just before the PutObject is sent, after the key's lock was
    taken): the write reports success, and with Redis back (its own persistence restores the
    counter as it was, without the lost settle) this process drops the counter and measures
    it again from the bucket before its next write."""
    valkey = EmbeddedValkey(tmp_path / "valkey", port=free_port())
    url = await asyncio.to_thread(valkey.start)
    try:
        own = redis.Redis.from_url(url, socket_timeout=10)
        client = boto3.session.Session().client(
            "s3", endpoint_url=step_settings.s3_endpoint_url, region_name="us-east-1"
        )

        def redis_goes_away(**_: Any) -> None:
            own.shutdown(nosave=True)  # the counter, the reservation and the lock are lost

        client.meta.events.register("before-send.s3.PutObject", redis_goes_away)
        base = f"{step_settings.s3_prefix}{uuid.uuid4()}/"
        storage = S3Storage(client, str(step_settings.s3_bucket), base, own)
        quota = Quota(2**20, "test")
        assert storage.usage.current() == 0
        writer = storage.create("kept.bin", 5000, quota)
        writer.write(b"k" * 5000)
        await asyncio.to_thread(writer.commit)  # no exception: the file is stored
        client.meta.events.unregister("before-send.s3.PutObject", redis_goes_away)
        assert storage.file("kept.bin").size == 5000
        assert await asyncio.to_thread(valkey.start) == url
        again = storage.create("next.bin", 1, quota)
        again.discard()
        assert storage.usage.used() == storage.measure() == charged(5000)
    finally:
        await asyncio.to_thread(valkey.stop)


async def test_no_overwrite_race_one_create_wins_the_other_is_a_conflict(
    step_settings: Settings,
) -> None:
    """Both creates found the path free; `If-None-Match: *` lets the first commit win, on
    PutObject and on CompleteMultipartUpload alike, and the loser leaves no upload behind."""
    storage, quota = s3(step_settings), Quota(2**40, "test")
    small = storage.create("race.bin", 3, quota)
    large = storage.create("race.bin", PART_BYTES + 5, quota)
    small.write(b"one")
    await asyncio.to_thread(large.write, b"2" * (PART_BYTES + 5))  # one part sent already
    assert storage.multipart_uploads() == [storage.base + "race.bin"]
    small.commit()
    with pytest.raises(FileExists, match="already exists"):
        await asyncio.to_thread(large.commit)
    assert storage.multipart_uploads() == []
    _, src = storage.open_read("race.bin")
    assert src.read() == b"one"
    # The other order: the multipart upload wins, the small put is refused.
    large = storage.create("race-2.bin", PART_BYTES + 5, quota)
    small = storage.create("race-2.bin", 3, quota)
    await asyncio.to_thread(large.write, b"2" * (PART_BYTES + 5))
    await asyncio.to_thread(large.commit)
    small.write(b"one")
    with pytest.raises(FileExists):
        small.commit()
    entry = storage.file("race-2.bin")
    assert entry.size == PART_BYTES + 5
    assert storage.usage.used() == storage.measure()  # the loser's reservation was released
    assert charged(PART_BYTES + 5) + charged(3) + 12 * KIB == storage.measure()


async def test_a_cancelled_large_copy_aborts_its_multipart_upload(
    make_ctx: MakeContext, step_settings: Settings
) -> None:
    beats: list[dict[str, int]] = []
    ctx = make_ctx(heartbeat=beats.append, cancelled=lambda: len(beats) >= 10)
    storage = s3(step_settings)
    writer = storage.create("big.bin", 12 * 2**20, Quota(2**40, "test"))
    await asyncio.to_thread(writer.write, b"b" * (12 * 2**20))
    await asyncio.to_thread(writer.commit)
    with pytest.raises(asyncio.CancelledError):
        await run_step("files.copy", {"source": "big.bin", "target": "copy.bin"}, ctx)
    assert beats[-1]["bytes_done"] == 10 * 2**20  # past PART_BYTES: a part had been sent
    assert storage.stat("copy.bin") is None and storage.multipart_uploads() == []


async def test_tenants_are_confined_to_their_key_prefix(
    make_ctx: MakeContext, step_settings: Settings
) -> None:
    """`acme2` starts with `acme`: the `/` after the tenant id keeps them apart; crafted paths
    are refused, or stay under the caller's own prefix."""
    acme, acme2 = make_ctx("acme"), make_ctx("acme2")
    await run_step("files.write", {"path": "secret.txt", "content": "acme2's"}, acme2)
    for path in ("../acme2/secret.txt", "/acme2/secret.txt", "a/../../acme2/secret.txt"):
        with pytest.raises(StepInputError, match="absolute|'\\.\\.'"):
            await run_step("files.read", {"path": path}, acme)
    for path in ("acme2/secret.txt", "./acme2/secret.txt", "secret.txt"):
        with pytest.raises(StepInputError, match="no such file"):
            await run_step("files.read", {"path": path}, acme)
    with pytest.raises(StepInputError, match="cannot name a storage directory"):
        await run_step("files.read", {"path": "secret.txt"}, make_ctx("acme2/.."))
    for path, why in ((".", "the storage itself"), ("d/" * 510 + "x", "too long")):
        with pytest.raises(StepInputError, match=why):
            await run_step("files.write", {"path": path, "content": "x"}, acme)
    await run_step("files.write", {"path": "acme2/secret.txt", "content": "mine"}, acme)
    assert [e["path"] for e in await run_step("files.list", {}, acme)] == [
        "acme2/secret.txt",
        *SAMPLE_PATHS,
    ]
    assert [e["path"] for e in await run_step("files.list", {"prefix": "sec"}, acme)] == []
    storage = s3(step_settings, "acme2")
    _, src = storage.open_read("secret.txt")
    assert src.read() == b"acme2's"
    keys = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=storage.base)
    assert sorted(k["Key"][len(storage.base) :] for k in keys["Contents"]) == sorted(
        [SEEDED_MARKER, "secret.txt", *SAMPLE_PATHS]
    )


async def test_a_new_tenant_gets_the_samples_once(
    make_ctx: MakeContext, step_settings: Settings
) -> None:
    ctx = make_ctx("tenant-new")
    read = await run_step("files.read", {"path": "samples/customers.csv", "as": "csv"}, ctx)
    assert read["content"][0]["email"]
    storage = s3(step_settings, "tenant-new")
    head: dict[str, Any] = storage.client.head_object(
        Bucket=storage.bucket, Key=storage.base + SEEDED_MARKER
    )
    assert head["ContentLength"] == 0
    await run_step("files.delete", {"path": "samples/invoice.txt"}, ctx)
    await run_step(
        "files.write", {"path": "samples/contract.txt", "content": "mine", "overwrite": True}, ctx
    )
    # Opening the storage again does not bring the deleted sample back (the marker says it
    # was seeded); seeding on purpose (as `wfs dev` does) puts back what is missing and keeps
    # what is there: If-None-Match refuses the other puts.
    listed = [e["path"] for e in await run_step("files.list", {}, make_ctx("tenant-new"))]
    assert listed == ["samples/contract.txt", "samples/customers.csv"]
    assert await asyncio.to_thread(seed_sample_files, step_settings, "tenant-new") == [
        "samples/invoice.txt"
    ]
    listed = [e["path"] for e in await run_step("files.list", {}, ctx)]
    assert listed == SAMPLE_PATHS
    assert (await run_step("files.read", {"path": "samples/contract.txt"}, ctx))[
        "content"
    ] == "mine"
