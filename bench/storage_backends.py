"""The two storage backends through the one interface the steps and the files API use
(app/steps/tenant_storage.py): small writes (quota reservation + create + commit), overwrites
of them, a large streamed write and read, listing pages, and one delete of all the small files,
on a local folder and on S3 (where every commit and delete also holds its keys' locks in Redis,
app/steps/shared_usage.py).

S3 here is moto's server (`moto_server`, a process of its own on this machine): the wire
protocol, not AWS's latency or bandwidth, and moto's own speed (it is a Python mock that keeps
objects in memory). The figures show the service's cost per operation (boto3 calls, the Redis
quota script) and that a large write holds bounded memory (tracemalloc peak of this process
while 64 MiB stream through in 1 MiB chunks: one 8 MiB multipart part at most on S3), not what
a real bucket will do. Redis: REDIS_URL, else an embedded Valkey.

    .venv/bin/python -m bench.storage_backends [small_files]
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

from app.settings import Settings
from app.steps.backends import open_storage
from app.steps.storage import Quota
from app.steps.tenant_storage import TenantStorage
from bench.harness import percentile

CHUNK = 1024 * 1024
LARGE_MIB = 64
QUOTA = Quota(2**40, "bench")


def _timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def measure(storage: TenantStorage, small: int) -> dict[str, str]:
    payload = os.urandom(4096)

    def write_small(i: int) -> None:
        writer = storage.create(f"small/{i:06d}.bin", len(payload), QUOTA)
        writer.write(payload)
        writer.commit()

    writes = [_timed(lambda i=i: write_small(i)) for i in range(small)]

    def overwrite_small(i: int) -> None:
        writer = storage.create(f"small/{i:06d}.bin", len(payload), QUOTA, overwrite=True)
        writer.write(payload)
        writer.commit()

    overwrites = [_timed(lambda i=i: overwrite_small(i)) for i in range(min(small, 100))]
    chunk = os.urandom(CHUNK)

    def write_large() -> None:
        writer = storage.create("large.bin", LARGE_MIB * CHUNK, QUOTA)
        for _ in range(LARGE_MIB):
            writer.write(chunk)
        writer.commit()

    tracemalloc.start()
    large_ms = _timed(write_large)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    def read_large() -> None:
        _, src = storage.open_read("large.bin")
        with src:
            while src.read(CHUNK):
                pass

    read_ms = _timed(read_large)
    pages = [_timed(lambda: list(storage.iter_files("small/", limit=21))) for _ in range(20)]
    everything = _timed(lambda: storage.walk("small/"))
    names = [e.path for e in storage.walk("small/")]
    deleted = _timed(lambda: storage.delete(names))
    return {
        "small write p50 ms": f"{percentile(writes, 50):.2f}",
        "small write p95 ms": f"{percentile(writes, 95):.2f}",
        "overwrite p50 ms": f"{percentile(overwrites, 50):.2f}",
        f"{LARGE_MIB} MiB write MiB/s": f"{LARGE_MIB / (large_ms / 1000):.0f}",
        "write peak MiB": f"{peak / 2**20:.1f}",
        f"{LARGE_MIB} MiB read MiB/s": f"{LARGE_MIB / (read_ms / 1000):.0f}",
        "page of 20 p50 ms": f"{percentile(pages, 50):.2f}",
        f"list {small} ms": f"{everything:.1f}",
        f"delete {small} ms": f"{deleted:.0f}",
    }


def _wait_for(host: str, port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("moto_server did not start")


def main() -> None:
    small = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    from app.embedded import EmbeddedValkey
    from tests.support import free_port

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with tempfile.TemporaryDirectory() as tmp:
        valkey = None
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            valkey = EmbeddedValkey(Path(tmp) / "valkey")
            redis_url = valkey.start()
        host, port = "127.0.0.1", free_port()
        moto = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", host, "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(host, port)
            local = Settings(_env_file=None, storage_root=Path(tmp) / "storage")  # type: ignore[call-arg]
            s3 = Settings(  # type: ignore[call-arg]
                _env_file=None,
                storage_backend="s3",
                s3_endpoint_url=f"http://{host}:{port}",
                s3_bucket="wfs-bench",
                s3_region="us-east-1",
                s3_prefix=f"b-{uuid.uuid4().hex[:8]}",
                redis_url=redis_url,
            )
            import boto3

            boto3.client(
                "s3", endpoint_url=s3.s3_endpoint_url, region_name="us-east-1"
            ).create_bucket(Bucket="wfs-bench")
            rows = {
                name: measure(open_storage(cfg, "bench"), small)
                for name, cfg in (("local", local), ("s3 (moto)", s3))
            }
        finally:
            moto.terminate()
            moto.wait(10)
            if valkey is not None:
                valkey.stop()
    print(
        f"storage backends, {small} small files of 4 KiB; {platform.python_version()}, "
        f"{os.cpu_count()} cpus"
    )
    metrics = list(next(iter(rows.values())))
    print(f"| backend | {' | '.join(metrics)} |")
    print(f"|---|{'---|' * len(metrics)}")
    for name, row in rows.items():
        print(f"| {name} | {' | '.join(row[m] for m in metrics)} |")


if __name__ == "__main__":
    main()
