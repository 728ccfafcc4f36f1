"""A production Temporal: TLS, mTLS and API keys (TEMPORAL_TLS_*, TEMPORAL_API_KEY), search
attributes registered by `wfs migrate` and only checked by workers, and the workers' probe
endpoints and graceful shutdown (WORKER_HEALTH_PORT, WORKER_GRACEFUL_SHUTDOWN_SECONDS).

The dev server has no TLS: tests/fakes/tls_temporal.py puts a TLS proxy with certificates made
here in front of it, so the real client's handshake, certificates and headers are checked.
What stays untested here: a server that refuses the operator API (Temporal Cloud's answer to a
namespace API key); `register_search_attributes` turns it into instructions, by status code.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from google.protobuf.duration_pb2 import Duration
from pydantic import SecretStr, ValidationError
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, TLSConfig

from app.cli.dev_roles import handover
from app.cli.runner import run_worker
from app.settings import Settings
from app.temporal import (
    SEARCH_ATTRIBUTES,
    SearchAttributeError,
    check_search_attributes,
    connect,
    register_search_attributes,
    tls_config,
)
from tests.fakes.tls_temporal import SERVER_NAME, Pki, TlsTemporalProxy, make_pki
from tests.support import free_port
from workers.health import health_app
from workers.main import build_webhook_worker

ROOT = Path(__file__).resolve().parents[2]
WFS = Path(sys.executable).parent / "wfs"
API_KEY = "wfs-test-temporal-key-0123456789"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def secured(settings: Settings, address: str, pki: Pki, **overrides: object) -> Settings:
    fields: dict[str, object] = {
        "temporal_address": address,
        "temporal_tls_ca_file": pki.ca,
        "temporal_tls_cert_file": pki.client_cert,
        "temporal_tls_key_file": pki.client_key,
        "temporal_tls_server_name": SERVER_NAME,
        "temporal_api_key": API_KEY,
    }
    fields.update(overrides)
    return Settings(_env_file=None, **{k: v for k, v in fields.items() if v is not None})  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# TLS, mTLS and API keys


async def test_mtls_and_api_key_reach_a_secured_temporal(settings: Settings, pki: Pki) -> None:
    proxy = TlsTemporalProxy(pki, settings.temporal_address or "")
    address = await proxy.start()
    try:
        config = secured(settings, address, pki)
        client = await connect(config)
        await check_search_attributes(client)  # an operator RPC through the TLS connection
    finally:
        await proxy.close()
    assert proxy.client_subjects and set(proxy.client_subjects) == {"wfs-worker"}
    paths = [r.get(":path", "") for r in proxy.requests]
    assert any(p.endswith("OperatorService/ListSearchAttributes") for p in paths), paths
    assert {r.get("authorization") for r in proxy.requests} == {f"Bearer {API_KEY}"}
    assert API_KEY not in repr(config) and API_KEY not in str(config.model_dump())


async def test_without_the_client_certificate_mtls_refuses(settings: Settings, pki: Pki) -> None:
    proxy = TlsTemporalProxy(pki, settings.temporal_address or "")
    address = await proxy.start()
    try:
        config = secured(
            settings, address, pki, temporal_tls_cert_file=None, temporal_tls_key_file=None
        )
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(connect(config), 60)
        # The system roots do not know our CA: the server certificate is refused too.
        untrusted = secured(settings, address, pki, temporal_tls_ca_file=None)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(connect(untrusted), 60)
    finally:
        await proxy.close()
    assert not proxy.requests, "no request may pass a refused handshake"


def test_tls_settings_are_whole_and_an_api_key_implies_tls(pki: Pki, tmp_path: Path) -> None:
    plain = Settings(_env_file=None)  # type: ignore[call-arg]
    assert tls_config(plain) is False
    keyed = Settings(_env_file=None, temporal_api_key="k")  # type: ignore[call-arg]
    assert isinstance(tls_config(keyed), TLSConfig), "an API key never travels in clear text"
    full = secured(plain, "h:7233", pki)
    config = tls_config(full)
    assert isinstance(config, TLSConfig)
    assert config.client_cert == pki.client_cert.read_bytes()
    assert config.server_root_ca_cert == pki.ca.read_bytes()
    assert config.domain == SERVER_NAME
    with pytest.raises(ValidationError, match="go together"):
        Settings(_env_file=None, temporal_tls_cert_file=pki.client_cert)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="not a readable file"):
        Settings(_env_file=None, temporal_tls_ca_file=tmp_path / "nope.pem")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="TEMPORAL_API_KEY is empty"):
        Settings(_env_file=None, temporal_api_key="")  # type: ignore[call-arg]


# ----------------------------------------------------------------------------------------------
# Search attributes: `wfs migrate` registers, workers check


async def _fresh_namespace(address: str) -> str:
    """A namespace without our search attributes, once the frontend serves it."""
    name = f"wfs-sa-{uuid.uuid4().hex[:8]}"
    admin = await Client.connect(address)
    await admin.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=name, workflow_execution_retention_period=Duration(seconds=86400)
        )
    )
    async with asyncio.timeout(60):
        while True:
            try:
                await admin.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=name)
                )
                return name
            except RPCError:
                await asyncio.sleep(0.2)


async def _until_checked(client: Client) -> None:
    """The dev server lists added attributes after a moment."""
    async with asyncio.timeout(60):
        while True:
            try:
                return await check_search_attributes(client)
            except SearchAttributeError:
                await asyncio.sleep(0.2)


async def test_workers_check_and_wfs_migrate_registers_search_attributes(
    settings: Settings,
) -> None:
    namespace = await _fresh_namespace(settings.temporal_address or "")
    own = settings.model_copy(update={"temporal_namespace": namespace})
    client = await connect(own)
    with pytest.raises(SearchAttributeError) as missing:
        await check_search_attributes(client)
    message = str(missing.value)
    assert all(name in message for name in SEARCH_ATTRIBUTES), message
    assert "wfs migrate" in message and "tcld namespace search-attributes add" in message

    # A worker refuses to start on it, saying the same, and registers nothing itself.
    with pytest.raises(SearchAttributeError, match="wfs migrate"):
        await asyncio.wait_for(run_worker(own, asyncio.Event()), 60)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "DATABASE_"))} | {
        "DATABASE_URL": own.database_url or "",
        "TEMPORAL_ADDRESS": own.temporal_address or "",
        "TEMPORAL_NAMESPACE": namespace,
        "STATE_DIR": str(own.state_dir),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [str(WFS), "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "migrated to head" in done.stdout
    assert f"namespace {namespace}: added {', '.join(sorted(SEARCH_ATTRIBUTES))}" in done.stdout
    await _until_checked(client)
    assert await register_search_attributes(client) == []  # idempotent


# ----------------------------------------------------------------------------------------------
# Worker probes and graceful shutdown


async def test_worker_serves_liveness_and_readiness(settings: Settings, sessions) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    own = settings.model_copy(
        update={"worker_health_port": port, "webhook_task_queue": f"hc-{uuid.uuid4().hex[:8]}"}
    )
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(own, stop, own.webhook_task_queue))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with asyncio.timeout(60):
                while True:
                    try:
                        ready = await http.get("/readyz")
                        if ready.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
            assert ready.json() == {
                "status": "ok",
                "worker": "running",
                "task_queue": own.webhook_task_queue,
            }
            assert (await http.get("/healthz")).status_code == 200
    finally:
        stop.set()
        await running
    with pytest.raises(httpx.TransportError):  # the endpoint goes with the worker
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/healthz")


async def test_probe_states_follow_the_worker(settings: Settings, sessions) -> None:  # type: ignore[no-untyped-def]
    client = await connect(settings)
    own = settings.model_copy(
        update={
            "webhook_task_queue": f"hs-{uuid.uuid4().hex[:8]}",
            "worker_graceful_shutdown_seconds": 7,
        }
    )
    worker = build_webhook_worker(client, sessions, own)
    # Running activities get WORKER_GRACEFUL_SHUTDOWN_SECONDS (60 unless set) once it stops.
    assert worker.config()["graceful_shutdown_timeout"] == timedelta(seconds=7)
    assert Settings.model_fields["worker_graceful_shutdown_seconds"].default == 60
    stop = asyncio.Event()
    transport = httpx.ASGITransport(app=health_app(worker, stop))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as http:

        async def states() -> tuple[int, int, str]:
            live, ready = await http.get("/healthz"), await http.get("/readyz")
            return live.status_code, ready.status_code, ready.json()["worker"]

        assert await states() == (200, 503, "starting")
        async with worker:
            async with asyncio.timeout(30):  # its run task starts on the next turns of the loop
                while (now := await states())[2] == "starting":
                    await asyncio.sleep(0.05)
            assert now == (200, 200, "running")
        # Shut down while nobody asked: not alive, the kubelet restarts the pod.
        assert await states() == (503, 503, "stopped")
        stop.set()
        assert await states() == (200, 503, "stopping")


def test_wfs_dev_hands_the_secrets_to_its_role_processes(settings: Settings) -> None:
    """`wfs dev`'s children read the settings from a JSON line: a masked key would be sent to
    Temporal as `**********` (and the length-checked secrets refused outright)."""
    own = settings.model_copy(
        update={
            "temporal_api_key": SecretStr(API_KEY),
            "webhook_secret_key": SecretStr("w" * 44),
            "file_url_secret": SecretStr("f" * 40),
        }
    )
    child = Settings.model_validate_json(handover(own))
    assert child.temporal_api_key is not None and child.webhook_secret_key is not None
    assert child.temporal_api_key.get_secret_value() == API_KEY
    assert child.webhook_secret_key.get_secret_value() == "w" * 44
    assert child == own
