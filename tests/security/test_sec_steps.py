"""The standard steps as a hostile tenant would use them (issue 9): mail, storage and HTTP.

Each test runs the registered activity the way the worker does (its `run`, which validates the
input first) against real parts: PostgreSQL for tenants and counters, the session's mail sink
(aiosmtpd) or one of our own, local HTTP servers on 127.0.0.1 / 127.0.0.2, real DNS through
getaddrinfo (names that resolve without a DNS server: `localhost` and the numeric forms
`inet_aton` accepts, such as `2852039166` for 169.254.169.254), the real file system.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from app.embedded.mail import DevMailSink
from app.models.tenant import TenantEmailDay
from app.settings import Settings
from app.steps import StepContext, StepInputError, StepTransientError
from app.steps.base import StepInputRefused
from app.steps.http import pinned_request
from app.steps.http_policy import address_allowed, public_address
from app.tenants.service import TenantService
from tests.steps.step_support import run_step
from tests.support import MAX_LOOP_STALL, free_port, loop_watch

WFS = Path(sys.executable).parent / "wfs"


# -- helpers -------------------------------------------------------------------------------


def make_ctx(
    settings: Settings, sessions: Any, tenant_id: str, *, execution_id: str = "e1", step: str = "s1"
) -> StepContext:
    return StepContext(
        tenant_id=tenant_id,
        execution_id=execution_id,
        step_id=step,
        attempt=1,
        settings=settings,
        sessions=sessions,
    )


async def new_tenant(sessions: Any, tier: str) -> tuple[str, str]:
    """(id, name) of a fresh tenant of `tier`."""
    async with sessions() as session:
        t = await TenantService(session).create_tenant(f"steps-{uuid.uuid4().hex[:8]}", tier)
        await session.commit()
    return str(t.id), t.name


async def wfs(database_url: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    """The platform operator's CLI in its own process."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TEMPORAL_ADDRESS")}
    proc = await asyncio.create_subprocess_exec(
        str(WFS),
        *args,
        env={**env, "DATABASE_URL": database_url},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


# -- email -----------------------------------------------------------------------------------


@pytest.fixture
def mail_settings(settings: Settings, mail_sink: DevMailSink, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "smtp_port": mail_sink.port,
            "smtp_from": "Workflows <noreply@wfs.test>",
            "storage_root": tmp_path / "storage",
        }
    )


def received(sink: DevMailSink, subject: str) -> list[Any]:
    """Messages the sink holds with `subject` (a Maildir has no order)."""
    return [m for m in sink.messages() if m["Subject"] == subject]


async def test_from_is_the_default_or_a_sender_the_operator_verified(
    mail_settings: Settings,
    sessions: Any,
    mail_sink: DevMailSink,
    database_url: str,
    tmp_path: Path,
) -> None:
    tenant_id, name = await new_tenant(sessions, "pro")
    ctx = make_ctx(mail_settings, sessions, tenant_id)
    subject = f"Invoice {uuid.uuid4().hex}"
    message = {"to": "ada@example.com", "subject": subject, "text": "Pay now"}
    for spoofed in ("security@bank.example", "Bank <security@bank.example>", "NOREPLY@wfs.tes"):
        with pytest.raises(StepInputRefused, match="not a verified sender of this tenant"):
            await run_step("email.send", {**message, "from": spoofed}, ctx)
    assert received(mail_sink, subject) == []  # nothing left

    # The default (left out, or written out in any case) is always allowed.
    await run_step("email.send", message, ctx)
    await run_step("email.send", {**message, "from": "NoReply@WFS.test", "text": "2"}, ctx)

    code, out, err = await wfs(
        database_url, tmp_path, "tenant", "verify-sender", name, "News <News@Tenant.example>"
    )
    assert code == 0, err
    assert "news@tenant.example" in out
    sent = await run_step(
        "email.send", {**message, "from": "Tenant News <news@tenant.example>", "text": "3"}, ctx
    )
    assert sent["accepted"] == ["ada@example.com"]
    senders = sorted(m["From"] for m in received(mail_sink, subject))
    assert senders == [
        "NoReply@WFS.test",
        "Tenant News <news@tenant.example>",
        "Workflows <noreply@wfs.test>",
    ]
    # Another tenant does not inherit the verification.
    other_id, _ = await new_tenant(sessions, "pro")
    with pytest.raises(StepInputRefused, match="not a verified sender"):
        await run_step(
            "email.send",
            {**message, "from": "news@tenant.example"},
            make_ctx(mail_settings, sessions, other_id),
        )
    code, out, err = await wfs(
        database_url, tmp_path, "tenant", "verify-sender", name, "news@tenant.example", "--remove"
    )
    assert code == 0 and "(none)" in out, err
    with pytest.raises(StepInputRefused, match="not a verified sender"):
        await run_step("email.send", {**message, "from": "news@tenant.example", "text": "4"}, ctx)
    assert len(received(mail_sink, subject)) == 3


async def test_forged_identity_headers_are_refused(mail_settings: Settings, sessions: Any) -> None:
    tenant_id, _ = await new_tenant(sessions, "pro")
    ctx = make_ctx(mail_settings, sessions, tenant_id)
    for header in ("Resent-From", "DKIM-Signature", "Received", "ARC-Seal", "Sender"):
        with pytest.raises(StepInputError, match="cannot be set by a template"):
            await run_step(
                "email.send",
                {"to": "a@example.com", "subject": "s", "text": "t", "headers": {header: "x"}},
                ctx,
            )


async def test_recipients_are_capped_after_deduplication(
    mail_settings: Settings, sessions: Any, mail_sink: DevMailSink
) -> None:
    tenant_id, _ = await new_tenant(sessions, "pro")
    ctx = make_ctx(mail_settings, sessions, tenant_id)
    people = [f"p{i}@example.com" for i in range(51)]
    before = len(mail_sink.messages())
    spread = {"to": people[:20], "cc": people[20:40], "bcc": people[40:]}
    with pytest.raises(StepInputRefused, match="51 recipients .* at most 50"):
        await run_step("email.send", {**spread, "subject": "s", "text": "t"}, ctx)
    assert len(mail_sink.messages()) == before
    # Fifty distinct addresses, repeated across to/cc/bcc, are one message to fifty.
    fifty = {"to": people[:50], "cc": people[:10], "bcc": people[40:50]}
    sent = await run_step("email.send", {**fifty, "subject": "s", "text": "t"}, ctx)
    assert len(sent["accepted"]) == 50


async def sent_today(sessions: Any, tenant_id: str) -> int:
    async with sessions() as session:
        row = await session.scalar(
            select(TenantEmailDay.sent).where(
                TenantEmailDay.tenant_id == uuid.UUID(tenant_id),
                TenantEmailDay.day == datetime.now(UTC).date(),
            )
        )
    return row or 0


async def test_daily_quota_counts_each_send_once_and_says_when_it_resets(
    mail_settings: Settings, sessions: Any, mail_sink: DevMailSink
) -> None:
    settings = mail_settings.model_copy(update={"email_daily_quota": {"free": 2}})
    tenant_id, _ = await new_tenant(sessions, "free")
    first = {"to": "a@example.com", "subject": "1", "text": "one"}
    # Attempt 1 of the first send meets a relay that is down: counted, not sent.
    down = settings.model_copy(update={"smtp_port": free_port()})
    with pytest.raises(StepTransientError, match="mail relay unavailable"):
        await run_step("email.send", first, make_ctx(down, sessions, tenant_id))
    assert await sent_today(sessions, tenant_id) == 1
    # Attempt 2 of the same send (same execution, step and input) is not counted again...
    before = len(mail_sink.messages())
    await run_step("email.send", first, make_ctx(settings, sessions, tenant_id))
    assert await sent_today(sessions, tenant_id) == 1
    # ...so the quota of 2 still has room for a second message, and then none.
    second = {"to": "b@example.com", "subject": "2", "text": "two"}
    await run_step("email.send", second, make_ctx(settings, sessions, tenant_id))
    third = {"to": "c@example.com", "subject": "3", "text": "three"}
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    with pytest.raises(StepInputError) as refused:
        await run_step("email.send", third, make_ctx(settings, sessions, tenant_id))
    assert not isinstance(refused.value, StepTransientError)
    assert "daily email quota reached" in str(refused.value)
    assert "at most 2 messages" in str(refused.value) and f"{tomorrow}T00:00:00Z" in str(
        refused.value
    )
    assert len(mail_sink.messages()) == before + 2
    assert await sent_today(sessions, tenant_id) == 2
    # A rerun of a send that went out is answered from its record, without a charge.
    again = await run_step("email.send", second, make_ctx(settings, sessions, tenant_id))
    assert again["deduplicated"] is True


async def test_a_fan_out_stops_exactly_at_the_quota(
    mail_settings: Settings, sessions: Any, mail_sink: DevMailSink
) -> None:
    settings = mail_settings.model_copy(update={"email_daily_quota": {"free": 5}})
    tenant_id, _ = await new_tenant(sessions, "free")
    before = len(mail_sink.messages())

    async def item(i: int) -> str:
        ctx = make_ctx(settings, sessions, tenant_id, step=f"notify[{i}]")
        message = {"to": f"user{i}@example.com", "subject": "Hello", "text": "t"}
        try:
            await run_step("email.send", message, ctx)
        except StepInputError as exc:
            return str(exc)
        return "sent"

    outcomes = await asyncio.gather(*(item(i) for i in range(20)))
    assert outcomes.count("sent") == 5
    assert all("daily email quota reached" in o for o in outcomes if o != "sent")
    assert len(mail_sink.messages()) == before + 5
    assert await sent_today(sessions, tenant_id) == 5


class ChattyRelay:
    """aiosmtpd handler that refuses like a real relay, naming itself in its replies."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.startswith("later"):
            return "451 4.3.0 mx7.corp.internal [10.9.8.7]: try again later"
        return "550 5.7.1 <relay-03.corp.internal[10.9.8.7]:2525>: Relay access denied"


@pytest.fixture
def chatty_relay() -> Iterator[int]:
    port = free_port()
    controller = Controller(ChattyRelay(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()


async def test_step_errors_never_name_the_relay(
    mail_settings: Settings, sessions: Any, chatty_relay: int
) -> None:
    tenant_id, _ = await new_tenant(sessions, "pro")
    internals = ("corp.internal", "10.9.8.7", "2525", "mx7", "relay-03")
    relay = mail_settings.model_copy(update={"smtp_port": chatty_relay})
    for to, kind in (("a@example.com", StepInputError), ("later@example.com", StepTransientError)):
        with pytest.raises(kind) as caught:
            await run_step(
                "email.send",
                {"to": to, "subject": "s", "text": "t"},
                make_ctx(relay, sessions, tenant_id),
            )
        text = str(caught.value)
        assert text.split(":")[0] in ("every recipient was refused", "recipients refused for now")
        assert not any(secret in text for secret in internals), text
    # A relay that is down: neither its host nor its port.
    port = free_port()
    hidden = mail_settings.model_copy(update={"smtp_host": "localhost", "smtp_port": port})
    with pytest.raises(StepTransientError) as caught:
        await run_step(
            "email.send",
            {"to": "a@example.com", "subject": "s", "text": "t"},
            make_ctx(hidden, sessions, tenant_id),
        )
    assert str(caught.value).startswith("mail relay unavailable")
    assert "localhost" not in str(caught.value) and str(port) not in str(caught.value)


# -- storage ---------------------------------------------------------------------------------

KIB = 1024


@pytest.fixture
def storage_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "storage_root": tmp_path / "storage",
            "storage_quota_bytes": {"free": 64 * KIB, "pro": 1024 * KIB},
        }
    )


async def test_storage_quota_refuses_the_write_that_passes_it(
    storage_settings: Settings, sessions: Any
) -> None:
    tenant_id, _ = await new_tenant(sessions, "free")
    ctx = make_ctx(storage_settings, sessions, tenant_id)
    root = storage_settings.files_root / tenant_id
    block = "x" * (4 * KIB)
    # The sample files every storage starts with take 16 KiB (3 files and their folder).
    for i in range(10):  # 40 KiB more: 56 KiB
        await run_step("files.write", {"path": f"f{i}.txt", "content": block}, ctx)
    # A write that ends exactly at the quota fits (a folder is a block too: 56 + 4 + 4 = 64).
    await run_step("files.write", {"path": "sub/last.txt", "content": block}, ctx)
    for step, input in (
        ("files.write", {"path": "one-more.txt", "content": "x"}),  # an empty file costs a block
        ("files.write", {"path": "empty.txt", "content": ""}),
        ("files.copy", {"source": "f0.txt", "target": "f0-copy.txt"}),
        ("files.archive", {"paths": ["f1.txt"], "target": "a.zip"}),
    ):
        with pytest.raises(StepInputError, match=r"storage quota exceeded: the free tier"):
            await run_step(step, input, ctx)
    names = sorted(p.name for p in root.rglob("*"))
    assert "one-more.txt" not in names and "f0-copy.txt" not in names and "a.zip" not in names
    assert not [n for n in names if n.startswith(".wfs-part-")]
    # Overwriting in place adds nothing; deleting gives room back.
    await run_step("files.write", {"path": "f2.txt", "content": block, "overwrite": True}, ctx)
    await run_step("files.delete", {"paths": ["f3.txt", "f4.txt"]}, ctx)
    await run_step("files.copy", {"source": "f0.txt", "target": "f0-copy.txt"}, ctx)
    await run_step("files.write", {"path": "one-more.txt", "content": "x"}, ctx)
    with pytest.raises(StepInputError, match="storage quota exceeded"):
        await run_step("files.write", {"path": "too-many.txt", "content": "x"}, ctx)


async def test_storage_quota_follows_the_tier_and_counts_archives(
    storage_settings: Settings, sessions: Any
) -> None:
    tenant_id, _ = await new_tenant(sessions, "pro")
    ctx = make_ctx(storage_settings, sessions, tenant_id)
    await run_step("files.write", {"path": "a.txt", "content": "x" * 200 * KIB}, ctx)
    await run_step("files.copy", {"source": "a.txt", "target": "b.txt"}, ctx)
    # The archive reserves its worst case (~480 KiB) while written, then counts what it is.
    packed = await run_step(
        "files.archive", {"paths": ["a.txt", "b.txt"], "target": "ab.tar.gz"}, ctx
    )
    assert packed["size"] < 4 * KIB
    for target in ("c.txt", "d.txt", "e.txt"):  # 16 + 404 + 3 x 200 KiB = 1020 KiB of 1024
        await run_step("files.copy", {"source": "a.txt", "target": target}, ctx)
    with pytest.raises(StepInputError, match="the pro tier stores at most 1.0 MiB"):
        await run_step("files.copy", {"source": "a.txt", "target": "f.txt"}, ctx)


async def test_storage_usage_walk_does_not_stall_the_event_loop(
    storage_settings: Settings, sessions: Any
) -> None:
    tenant_id, _ = await new_tenant(sessions, "pro")
    settings = storage_settings.model_copy(update={"storage_quota_bytes": {"pro": 10 * 2**30}})
    root = settings.files_root / tenant_id
    for d in range(60):  # many small files, as a tenant could leave them
        folder = root / f"d{d}"
        folder.mkdir(parents=True)
        for i in range(1000):
            (folder / f"f{i}").write_bytes(b"")
    ctx = make_ctx(settings, sessions, tenant_id)
    async with loop_watch() as watch:
        await run_step("files.write", {"path": "new.txt", "content": "x"}, ctx)  # walks 60,000
    assert watch.ticks > 0 and watch.worst < MAX_LOOP_STALL, watch


# -- http ------------------------------------------------------------------------------------


class Seen(BaseHTTPRequestHandler):
    """Records each request's path, Host header and the address it arrived on."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.seen.append(  # type: ignore[attr-defined]
            {
                "path": self.path,
                "host": self.headers.get("Host"),
                "local": self.connection.getsockname()[0],
            }
        )
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"reached"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Site:
    def __init__(self, host: str, port: int = 0) -> None:
        self.httpd = ThreadingHTTPServer((host, port), Seen)
        self.httpd.seen = []  # type: ignore[attr-defined]
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def seen(self) -> list[dict[str, Any]]:
        return self.httpd.seen  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site("127.0.0.1")
    yield s
    s.close()


def http_settings(
    settings: Settings, hosts: list[str], networks: list[str] | None = None
) -> Settings:
    return settings.model_copy(
        update={"http_allowed_hosts": hosts, "http_allowed_networks": networks or []}
    )


async def get(settings: Settings, url: str) -> dict[str, Any]:
    ctx = make_ctx(settings, None, "tenant-http")
    return await run_step("http.request", {"method": "GET", "url": url}, ctx)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("2852039166", "169.254.169.254 (cloud metadata)"),
        ("167772161", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("localhost", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
    ],
)
async def test_listed_names_that_resolve_inside_are_refused(
    settings: Settings, site: Site, name: str, where: str
) -> None:
    """The operator listed the name; its DNS answer is internal: refused before connecting,
    without saying which address it resolved to."""
    listed = http_settings(settings, [f"{name}:*"])
    with pytest.raises(StepInputError, match="resolves to an internal address") as refused:
        await get(listed, f"http://{name}:{site.port}/secret")
    assert where.split()[0] not in str(refused.value)
    assert site.seen == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://[::ffff:7f00:1]:{port}/",
        "http://0.0.0.0:{port}/",
        "http://[::]:{port}/",
    ],
)
async def test_ip_literals_reach_only_what_is_listed_exactly(
    settings: Settings, site: Site, url: str
) -> None:
    # 127.0.0.1 is listed (the operator's test server); its other spellings are not it.
    listed = http_settings(settings, ["127.0.0.1:*", "*.example.com", "localhost:*"])
    with pytest.raises(StepInputError, match="is not allowed"):
        await get(listed, url.format(port=site.port))
    assert site.seen == []


async def test_a_name_reaches_internal_addresses_only_inside_allowed_networks(
    settings: Settings, site: Site
) -> None:
    url = f"http://localhost:{site.port}/ok"
    with pytest.raises(StepInputError, match="internal address"):
        await get(http_settings(settings, ["localhost:*"]), url)
    with pytest.raises(StepInputError, match="internal address"):
        await get(http_settings(settings, ["localhost:*"], ["10.0.0.0/8"]), url)
    out = await get(http_settings(settings, ["localhost:*"], ["127.0.0.0/8"]), url)
    assert out["status"] == 200 and out["text"] == "reached" and out["url"] == url


async def test_ports_come_from_the_allow_lists(settings: Settings, site: Site) -> None:
    url = f"http://127.0.0.1:{site.port}/"
    for hosts in (["127.0.0.1"], [f"127.0.0.1:{site.port + 1}"], ["127.0.0.1:http"]):
        with pytest.raises(StepInputError, match=r"port \d+ is not allowed|is not allowed"):
            await get(http_settings(settings, hosts), url)
    assert site.seen == []
    assert (await get(http_settings(settings, [f"127.0.0.1:{site.port}"]), url))["status"] == 200
    ports = settings.model_copy(
        update={"http_allowed_hosts": ["127.0.0.1"], "http_allowed_ports": [site.port]}
    )
    assert (await get(ports, url))["status"] == 200


async def test_redirects_are_checked_by_address_too(settings: Settings, site: Site) -> None:
    listed = http_settings(settings, ["127.0.0.1:*", "2852039166:*"])
    url = f"http://127.0.0.1:{site.port}/redirect?to=http://2852039166:{site.port}/creds"
    with pytest.raises(StepInputError, match="internal address"):
        await get(listed, url)
    assert [s["path"] for s in site.seen] == [f"/redirect?to=http://2852039166:{site.port}/creds"]


async def test_the_request_goes_to_the_address_that_was_checked(settings: Settings) -> None:
    """DNS pinning: the connection is made to the checked IP, the Host header keeps the name.

    `localhost` resolves to 127.0.0.1 here; a request pinned to 127.0.0.2 reaches the server
    listening there only (on the same port nothing listens on 127.0.0.1), so the connection
    follows the pinned address, never a second lookup of the name."""
    pinned = Site("127.0.0.2")
    try:
        url = httpx.URL(f"http://localhost:{pinned.port}/pinned")
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.send(pinned_request(client, "GET", url, "127.0.0.2"))
        assert response.status_code == 200
        assert pinned.seen == [
            {"path": "/pinned", "host": f"localhost:{pinned.port}", "local": "127.0.0.2"}
        ]
        secure = httpx.URL("https://api.example.com/v1")
        async with httpx.AsyncClient(trust_env=False) as client:
            request = pinned_request(client, "GET", secure, "93.184.216.34")
        assert request.url.host == "93.184.216.34" and request.headers["host"] == "api.example.com"
        assert request.extensions["sni_hostname"] == "api.example.com"  # TLS checks the name
    finally:
        pinned.close()

    # Through the step: the address it connects to is the one the name resolves to.
    site = Site("127.0.0.1")
    try:
        resolved = {a[4][0] for a in socket.getaddrinfo("localhost", site.port)}
        allowed = http_settings(settings, ["localhost:*"], ["127.0.0.0/8", "::1/128"])
        await get(allowed, f"http://localhost:{site.port}/named")
        assert site.seen[0]["host"] == f"localhost:{site.port}"
        assert site.seen[0]["local"] in resolved
    finally:
        site.close()


PRIVATE_V4 = st.one_of(
    st.ip_addresses(network="10.0.0.0/8"),
    st.ip_addresses(network="127.0.0.0/8"),
    st.ip_addresses(network="169.254.0.0/16"),
    st.ip_addresses(network="172.16.0.0/12"),
    st.ip_addresses(network="192.168.0.0/16"),
    st.ip_addresses(network="100.64.0.0/10"),
    st.ip_addresses(network="0.0.0.0/8"),
    st.ip_addresses(network="224.0.0.0/4"),
    st.ip_addresses(network="240.0.0.0/4"),
)


@hsettings(max_examples=300, deadline=None)
@given(PRIVATE_V4)
def test_internal_ipv4_is_refused_in_every_ipv6_disguise(ip: ipaddress.IPv4Address) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    v = int(ip)
    disguises = [
        ip,
        ipaddress.IPv6Address(f"::ffff:{ip}"),  # IPv4-mapped
        ipaddress.IPv6Address((0x2002 << 112) | (v << 80)),  # 6to4
        ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | v),  # NAT64
        ipaddress.IPv6Address(v),  # IPv4-compatible
    ]
    for address in disguises:
        assert not public_address(address), address
        assert not address_allowed(address, settings), address


@hsettings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.ip_addresses(network="fc00::/7"),
        st.ip_addresses(network="fe80::/10"),
        st.ip_addresses(network="ff00::/8"),
        st.ip_addresses(network="2001:db8::/32"),
        st.sampled_from([ipaddress.IPv6Address("::1"), ipaddress.IPv6Address("::")]),
    )
)
def test_internal_ipv6_is_refused(ip: ipaddress.IPv6Address) -> None:
    assert not public_address(ip)


def test_metadata_stays_closed_when_its_network_is_opened() -> None:
    opened = Settings(  # type: ignore[call-arg]
        _env_file=None, http_allowed_networks=["169.254.0.0/16", "fd00::/8", "0.0.0.0/0"]
    )
    for raw in ("169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254", "168.63.129.16"):
        assert not address_allowed(ipaddress.ip_address(raw), opened), raw
    assert address_allowed(ipaddress.ip_address("169.254.1.1"), opened)
    assert address_allowed(ipaddress.ip_address("10.1.2.3"), opened)
    closed = Settings(_env_file=None)  # type: ignore[call-arg]
    for raw in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"):
        assert address_allowed(ipaddress.ip_address(raw), closed), raw


# -- work a step input may cause on the worker's event loop ------------------------------------


async def test_64000_recipients_are_refused_without_stalling_the_loop(
    mail_settings: Settings, sessions: Any, mail_sink: DevMailSink
) -> None:
    """1 MB of recipients, under the step input limit: before, 0.3 s of schema validation and
    2.9 s of address parsing ran on the worker's loop before the cap was checked."""
    tenant_id, _ = await new_tenant(sessions, "pro")
    ctx = make_ctx(mail_settings, sessions, tenant_id)
    many = [f"u{i}@ex.io" for i in range(64_000)]
    spread = {"to": many[:30_000], "cc": many[30_000:60_000], "bcc": many[60_000:]}
    same = {"to": ["ada@example.com"] * 30_000, "cc": ["Ada <ada@example.com>"] * 30_000}
    before = len(mail_sink.messages())
    async with loop_watch() as watch:
        with pytest.raises(StepInputRefused) as counted:
            await run_step("email.send", {"to": many, "subject": "s", "text": "t"}, ctx)
        with pytest.raises(StepInputRefused) as spread_out:
            await run_step("email.send", {**spread, "subject": "s", "text": "t"}, ctx)
        # Two distinct entries (within the cap), but 30,000 of each: the schema's ceiling.
        with pytest.raises(StepInputRefused) as repeated:
            await run_step("email.send", {**same, "subject": "s", "text": "t"}, ctx)
    assert str(counted.value) == (
        "64000 recipients (to, cc and bcc): a message goes to at most 50; "
        "split the list, e.g. with for_each"
    )
    assert str(spread_out.value).startswith("64000 recipients (to, cc and bcc)")
    # Cut in the middle: the instance's start and jsonschema's verdict at the end both show.
    assert re.fullmatch(
        r"invalid input for email\.send: \$\.cc: \['Ada <ada@example\.com>'.{200,300} is too long"
        r"; \$\.to: \['ada@example\.com'.{200,300} is too long",
        str(repeated.value),
    ), str(repeated.value)
    assert len(mail_sink.messages()) == before
    assert watch.ticks > 0 and watch.worst < MAX_LOOP_STALL, (
        f"event loop stalled {watch.worst * 1000:.0f} ms"
    )


async def test_reply_to_is_an_address_header(
    mail_settings: Settings, sessions: Any, mail_sink: DevMailSink
) -> None:
    """reply_to was parsed as unstructured text, so every address in it was refused."""
    tenant_id, _ = await new_tenant(sessions, "pro")
    ctx = make_ctx(mail_settings, sessions, tenant_id)
    subject = f"reply {uuid.uuid4().hex[:8]}"
    message = {"to": ["a@example.com", "a@example.com"], "subject": subject, "text": "t"}
    sent = await run_step("email.send", {**message, "reply_to": "Desk <desk@example.com>"}, ctx)
    assert sent["accepted"] == ["a@example.com"]
    (got,) = received(mail_sink, subject)
    assert (got["Reply-To"], got["To"]) == ("Desk <desk@example.com>", "a@example.com")


async def test_a_large_step_input_is_validated_off_the_event_loop(settings: Settings) -> None:
    """80,000 records (900 KB as JSON, under the step input limit) take about 0.25 s to
    validate against the data.aggregate schema: on the CPU pool, with the same answers."""
    ctx = make_ctx(settings, None, str(uuid.uuid4()))
    records = [{"n": i % 10} for i in range(80_000)]
    async with loop_watch() as watch:
        out = await run_step("data.aggregate", {"data": records, "fields": ["n"]}, ctx)
        with pytest.raises(StepInputRefused) as refused:
            await run_step("data.aggregate", {"data": [*records[1:], 5], "fields": ["n"]}, ctx)
    assert out == {"count": 80_000, "n": {"sum": 360_000, "min": 0, "max": 9, "avg": 4.5}}
    assert str(refused.value) == (
        "invalid input for data.aggregate: $.data[79999]: 5 is not of type 'object'"
    )
    assert watch.ticks > 0 and watch.worst < MAX_LOOP_STALL, (
        f"event loop stalled {watch.worst * 1000:.0f} ms"
    )


@pytest.mark.parametrize("channel", ["executions", "ai"])
async def test_events_publish_cannot_use_the_services_own_channels(
    settings: Settings, sessions: Any, channel: str
) -> None:
    """A template's message on `executions` or `ai` would reach the service's own readers
    (every executionsFeed re-reads PostgreSQL on each one)."""
    sent: list[str] = []

    async def publish(name: str, message: Any) -> bool:  # the worker's bus, recorded
        sent.append(name)
        return True

    ctx = replace(make_ctx(settings, sessions, str(uuid.uuid4())), publish=publish)
    with pytest.raises(StepInputRefused):
        await run_step("events.publish", {"channel": channel, "data": {"x": 1}}, ctx)
    await run_step("events.publish", {"channel": "notifications", "data": {}}, ctx)
    assert sent == [f"tenant:{ctx.tenant_id}:notifications"]
