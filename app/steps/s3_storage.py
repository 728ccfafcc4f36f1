"""Tenants' files in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...): STORAGE_BACKEND=s3.

Keys are `<S3_PREFIX><tenant id>/<path>`. Paths follow the local backend's rules
(`storage.path_parts`: no `..`, nothing absolute, no backslash or NUL, no part-file names) and
the tenant id its pattern, so a tenant's keys all start with its own prefix: S3 has no
symlinks, the prefix is the whole confinement. S3 has no folders either: a "folder" is a prefix
that other keys start with, and a file and a folder may share a name (`a` and `a/b`).

Client: boto3 (blocking, thread-safe clients), called from worker threads like the local
backend's disk I/O, never on the event loop. Credentials come from boto3's chain (the standard
AWS variables, a profile, an instance or pod role) and are never logged.

Writes: bytes are buffered up to PART_BYTES; a file that stays smaller is one PutObject, a
larger one a multipart upload of PART_BYTES parts (S3 wants >= 5 MiB but the last), so memory
stays bounded whatever the size. A write that may not overwrite sends `If-None-Match: *` with
PutObject or CompleteMultipartUpload: of two racing creates one wins and the other gets 412
PreconditionFailed (FileExists, CONFLICT). A discarded write (refused, failed, cancelled) aborts
its multipart upload, so neither an object nor stored parts stay behind; nothing is visible
before the commit.

Listing is ListObjectsV2 with Prefix and StartAfter, 1,000 keys a request, in key order (UTF-8
bytes, the same as the code-point order of the local backend). Quota: app/steps/shared_usage.py
(Redis, shared by every process, measured from a listing). Every change of a key (the commit
of a write, a delete) holds that key's lock in Redis and HEADs the key under it, so `used` moves
by exactly what changed even when two replicas delete or overwrite one path at once (see
shared_usage's docstring). A delete therefore HEADs each path under the lock (concurrently,
HEAD_THREADS at a time): sizes from an earlier listing may be stale by then. A commit whose
object is in place but whose settle in Redis fails reports success and drops the counter.

Samples are seeded once per tenant; a marker key (`.wfs-part-seeded`, a reserved name no path
can take) remembers it, so deleted samples stay deleted as on disk.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatchcase
from typing import Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from redis import Redis, RedisError

from app.settings import Settings
from app.steps.base import StepInputError, StepTransientError
from app.steps.shared_usage import KeyLock, SharedReservation, SharedUsage, redis_client
from app.steps.storage import (
    _TENANT_ID,
    PART_PREFIX,
    SAMPLES,
    SAMPLES_FOLDER,
    FileEntry,
    FileExists,
    NoSuchFile,
    Quota,
    charged,
    path_parts,
)
from app.steps.tenant_storage import FileWriter, TenantStorage

PART_BYTES = 8 * 1024 * 1024
MAX_KEY_BYTES = 1024  # S3's limit on a key, UTF-8
SEEDED_MARKER = f"{PART_PREFIX}seeded"
HEAD_THREADS = 8  # a delete's HEADs in flight at once
DELETE_BATCH = 1000  # DeleteObjects' limit, and the keys one lock call takes
_MISSING = {"404", "NoSuchKey", "NotFound"}
_TAKEN = {"PreconditionFailed", "ConditionalRequestConflict", "412"}

_CLIENTS: dict[tuple[str | None, str | None], Any] = {}
_CLIENTS_LOCK = threading.Lock()
_SEEDED: set[str] = set()  # storages this process saw seeded (bucket/prefix/tenant)


def s3_client(settings: Settings) -> Any:
    """One client per endpoint and region (boto3 clients are thread-safe; sessions are not,
    so clients are made under a lock). A custom endpoint (MinIO, ...) gets path-style URLs."""
    key = (settings.s3_endpoint_url, settings.s3_region)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            config = Config(
                max_pool_connections=32,
                retries={"mode": "standard", "max_attempts": 3},
                s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            )
            _CLIENTS[key] = boto3.session.Session().client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                config=config,
            )
        return _CLIENTS[key]


def check_bucket(settings: Settings) -> None:
    """RuntimeError naming what is wrong when the bucket cannot be used (credentials are never
    part of the message)."""
    if not settings.redis_url:
        raise RuntimeError("STORAGE_BACKEND=s3 keeps storage usage in Redis: set REDIS_URL")
    where = f"S3 bucket {settings.s3_bucket!r} at {settings.s3_endpoint_url or 'AWS'}"
    try:
        s3_client(settings).head_bucket(Bucket=settings.s3_bucket)
    except ClientError as exc:
        raise RuntimeError(f"{where} is not usable: {_code(exc) or exc}") from None
    except BotoCoreError as exc:  # no credentials, endpoint unreachable, ...
        raise RuntimeError(f"{where} is not usable: {type(exc).__name__}: {exc}") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Storage(TenantStorage):
    """One tenant's keys (`base` is `<S3_PREFIX><tenant id>/`) and its shared usage."""

    def __init__(self, client: Any, bucket: str, base: str, redis: Redis) -> None:
        self.client, self.bucket, self.base = client, bucket, base
        self.usage = SharedUsage(redis, f"{bucket}/{base}", self.measure)

    @classmethod
    def open(cls, settings: Settings, tenant_id: str, seed: bool = True) -> S3Storage:
        if not _TENANT_ID.fullmatch(tenant_id):
            raise StepInputError(f"tenant id {tenant_id!r} cannot name a storage directory")
        if not settings.redis_url:
            raise RuntimeError("STORAGE_BACKEND=s3 keeps storage usage in Redis: set REDIS_URL")
        base = f"{settings.s3_prefix}{tenant_id}/"
        storage = cls(
            s3_client(settings),
            cast(str, settings.s3_bucket),
            base,
            redis_client(settings.redis_url),
        )
        if seed:
            storage.ensure_samples()
        return storage

    # -- keys ------------------------------------------------------------------------------

    def _rel(self, path: str, what: str) -> str:
        """The canonical path (`./a//b` is `a/b`); refused when it names the root itself, or
        when its key would pass S3's 1,024 bytes."""
        rel = "/".join(path_parts(path, what))
        if not rel:
            raise StepInputError(f"{what} {path!r} is the storage itself, not a file")
        if len((self.base + rel).encode()) > MAX_KEY_BYTES:
            raise StepInputError(f"{what} {path!r} is too long for the storage")
        return rel

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise

    def _entry(self, rel: str, found: dict[str, Any], size: int | None = None) -> FileEntry:
        modified = found["LastModified"].timestamp()
        tag = f"{found['ETag']}:{modified}"
        return FileEntry(rel, found["ContentLength"] if size is None else size, modified, tag)

    # -- TenantStorage ---------------------------------------------------------------------

    def stat(self, path: str, what: str = "path", follow: bool = True) -> FileEntry | None:
        rel = self._rel(path, what)
        found = self._head(self.base + rel)
        if found is not None:
            return self._entry(rel, found)
        under = self.client.list_objects_v2(
            Bucket=self.bucket, Prefix=f"{self.base}{rel}/", MaxKeys=1
        )
        if under.get("KeyCount", 0):
            return FileEntry(rel, 0, 0.0, folder=True)
        return None

    def open_read(
        self, path: str, what: str = "path", length: int | None = None
    ) -> tuple[FileEntry, BinaryIO]:
        rel = self._rel(path, what)
        ranged = {"Range": f"bytes=0-{length - 1}"} if length else {}
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.base + rel, **ranged)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise NoSuchFile(f"{what} {path!r}: no such file") from exc
            if _code(exc) == "InvalidRange":  # a range of an empty object
                head = self._head(self.base + rel)
                if head is None:
                    raise NoSuchFile(f"{what} {path!r}: no such file") from exc
                return self._entry(rel, head), io.BytesIO(b"")
            raise
        size = None
        if "ContentRange" in found:  # bytes 0-8191/123456
            size = int(str(found["ContentRange"]).rsplit("/", 1)[1])
        return self._entry(rel, found, size), cast(BinaryIO, found["Body"])

    def create(
        self, path: str, size: int, quota: Quota, overwrite: bool = False, what: str = "path"
    ) -> FileWriter:
        rel = self._rel(path, what)
        replaced = 0
        if overwrite and (old := self._head(self.base + rel)) is not None:
            replaced = charged(old["ContentLength"])
        reservation = self.usage.reserve(charged(size), replaced, quota)
        return _S3Writer(self, rel, reservation, overwrite, size)

    def iter_files(
        self,
        prefix: str = "",
        pattern: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> Iterator[FileEntry]:
        found = self._listed(prefix, pattern, after, limit)
        return itertools.islice(found, limit)

    def _listed(
        self, prefix: str, pattern: str | None, after: str | None, limit: int | None
    ) -> Iterator[FileEntry]:
        if "/" in prefix:
            folder, tail = prefix.rsplit("/", 1)
            prefix = "/".join(path_parts(folder, "prefix")) + "/" + tail
        elif prefix:
            path_parts(prefix, "prefix")
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.base + prefix}
        if after is not None and after > prefix:
            args["StartAfter"] = self.base + after
        if limit is not None and not pattern:  # every key is a hit but the hidden marker
            args["PaginationConfig"] = {"PageSize": min(1000, limit + 1)}
        for page in self.client.get_paginator("list_objects_v2").paginate(**args):
            for found in page.get("Contents", []):
                rel = str(found["Key"])[len(self.base) :]
                if any(part.startswith(PART_PREFIX) for part in rel.split("/")):
                    continue  # the seeded marker (and nothing a path can name)
                if pattern and not fnmatchcase(rel, pattern):
                    continue
                modified = found["LastModified"].timestamp()
                yield FileEntry(rel, found["Size"], modified, f"{found['ETag']}:{modified}")

    def delete(self, paths: list[str]) -> list[str]:
        rels = list(dict.fromkeys(self._rel(path, "path") for path in paths))  # all checked first
        deleted: list[str] = []
        refused: list[dict[str, Any]] = []
        present = 0
        for start in range(0, len(rels), DELETE_BATCH):
            batch = rels[start : start + DELETE_BATCH]
            with self.usage.locked(batch) as lock:
                gone, errors, found = self._delete_locked(batch, lock)
            deleted += gone
            refused += errors
            present += found
        if refused:
            first = refused[0]
            raise StepTransientError(
                f"the storage refused to delete {len(refused)} of {present} files "
                f"({first.get('Code')}: {first.get('Message')})"
            )
        return deleted

    def _delete_locked(
        self, rels: list[str], lock: KeyLock
    ) -> tuple[list[str], list[dict[str, Any]], int]:
        """Delete what these keys hold now (HEAD under their locks) and subtract exactly that:
        a second delete of the same path finds nothing and subtracts nothing."""
        with ThreadPoolExecutor(min(HEAD_THREADS, len(rels))) as pool:
            heads = list(pool.map(lambda rel: self._head(self.base + rel), rels))
        found = {rel: head for rel, head in zip(rels, heads, strict=True) if head is not None}
        if not found:
            return [], [], 0
        batch = [{"Key": self.base + rel} for rel in found]
        done = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
        )
        refused = list(done.get("Errors", []))  # per key: AccessDenied, InternalError, ...
        kept = {str(error["Key"])[len(self.base) :] for error in refused}
        deleted = [rel for rel in found if rel not in kept]
        freed = sum(charged(found[rel]["ContentLength"]) for rel in deleted)
        try:
            self.usage.freed(freed, lock)
        except RedisError:  # the objects are gone: measure again rather than fail the delete
            self._drop_counter()
        return deleted, refused, len(found)

    def _drop_counter(self) -> None:
        try:
            self.usage.forget()
        except RedisError:  # Redis unreachable: `used` lapses within USAGE_TTL_SECONDS
            pass

    def usage_bytes(self) -> int:
        """Bytes the tenant holds as the quota counts them: the shared counter, measured
        (by one process at a time) when it is missing."""
        return self.usage.current()

    def seed_samples(self) -> list[str]:
        written = []
        for source in sorted(SAMPLES.iterdir()):
            rel = f"{SAMPLES_FOLDER}/{source.name}"
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.base + rel,
                    Body=source.read_bytes(),
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                if _code(exc) not in _TAKEN:
                    raise
                continue
            written.append(rel)
        self.client.put_object(Bucket=self.bucket, Key=self.base + SEEDED_MARKER, Body=b"")
        self.usage.forget()  # not reserved (a few KiB): measured again before the next write
        return written

    # -- backend specifics -----------------------------------------------------------------

    def ensure_samples(self) -> None:
        """Seed the samples unless this storage was seeded before (its marker key)."""
        name = f"{self.bucket}/{self.base}"
        if name in _SEEDED:
            return
        if self._head(self.base + SEEDED_MARKER) is None:
            self.seed_samples()
        _SEEDED.add(name)

    def measure(self) -> int:
        """The quota usage of every object of the tenant, from a listing."""
        total = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.base
        )
        for page in pages:
            for found in page.get("Contents", []):
                if not str(found["Key"]).endswith(SEEDED_MARKER):
                    total += charged(found["Size"])
        return total

    def multipart_uploads(self) -> list[str]:
        """Keys with a multipart upload in progress (or left behind) under this tenant."""
        listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.base)
        return [str(upload["Key"]) for upload in listed.get("Uploads", [])]


class _S3Writer(FileWriter):
    """PutObject for a small file, a multipart upload past PART_BYTES; see the module doc."""

    def __init__(
        self,
        storage: S3Storage,
        rel: str,
        reservation: SharedReservation,
        overwrite: bool,
        size: int,
    ) -> None:
        self.storage, self.path, self.reservation = storage, rel, reservation
        self.key = storage.base + rel
        self.overwrite, self.expected, self.size = overwrite, size, 0
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.ended = False

    def _send_part(self, data: bytes) -> None:
        client, bucket = self.storage.client, self.storage.bucket
        if self.upload_id is None:
            started = client.create_multipart_upload(Bucket=bucket, Key=self.key)
            self.upload_id = str(started["UploadId"])
        number = len(self.parts) + 1
        sent = client.upload_part(
            Bucket=bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        self.parts.append({"ETag": sent["ETag"], "PartNumber": number})

    def write(self, chunk: bytes) -> None:
        self.buffer += chunk
        self.size += len(chunk)
        while len(self.buffer) >= PART_BYTES:
            with memoryview(self.buffer) as view:  # one copy of the part, not two
                part = bytes(view[:PART_BYTES])
            del self.buffer[:PART_BYTES]
            self._send_part(part)

    def expect(self, size: int) -> None:
        if charged(size) != charged(self.expected):
            self.reservation.resize(
                self.reservation.written - charged(self.expected) + charged(size)
            )
        self.expected = size

    def commit(self) -> None:
        with contextlib.ExitStack() as stack:
            try:
                if self.upload_id is not None and self.buffer:  # the last part, before the lock
                    self._send_part(bytes(self.buffer))
                    self.buffer = bytearray()
                lock = stack.enter_context(self.storage.usage.locked([self.path]))
            except BaseException:
                self.discard()
                raise
            replaced = self._place()  # discards the write when it fails
            try:
                self.reservation.commit(self.size, replaced, lock)
            except RedisError:  # the file is in place: a settle that failed is no failure
                self.storage._drop_counter()
                self._release_quietly()

    def _release_quietly(self) -> None:
        try:
            self.reservation.release()
        except RedisError:  # the reservation lapses after RESERVATION_SECONDS
            pass

    def _place(self) -> int:
        """Put the object (under its key's lock); returns the charged size of the object it
        replaced, 0 when there was none."""
        client, bucket = self.storage.client, self.storage.bucket
        condition = {} if self.overwrite else {"IfNoneMatch": "*"}
        replaced = 0
        try:
            if self.overwrite and (old := self.storage._head(self.key)) is not None:
                replaced = charged(old["ContentLength"])
            if self.upload_id is None:
                client.put_object(Bucket=bucket, Key=self.key, Body=bytes(self.buffer), **condition)
            else:
                client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},
                    **condition,
                )
        except ClientError as exc:
            self.discard()
            if _code(exc) in _TAKEN:
                name = self.path.rsplit("/", 1)[-1]
                raise FileExists(
                    f"{name!r} already exists; set overwrite: true to replace it"
                ) from exc
            raise
        except BaseException:
            self.discard()
            raise
        self.ended = True
        self.buffer = bytearray()
        return replaced

    def discard(self) -> None:
        self.buffer = bytearray()
        if self.upload_id is not None and not self.ended:
            self.ended = True
            try:
                self.storage.client.abort_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.key, UploadId=self.upload_id
                )
            except ClientError as exc:
                if _code(exc) != "NoSuchUpload":
                    raise
        self.ended = True
        self.reservation.release()
