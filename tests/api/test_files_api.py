"""The files API on a real API server: multipart uploads (httpx `files=`), listing and paging,
signed download URLs, and every refusal (roles, tenants, paths, quota, size, forged URLs)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from app.files import signing
from app.settings import Settings
from app.tenants.service import TenantService
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient, own_service

KIB = 1024
MAX_UPLOAD = 256 * KIB
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 4
SAMPLE_PATHS = ["samples/contract.txt", "samples/customers.csv", "samples/invoice.txt"]

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
# The example documents of graphql/operations (tests/api/test_operations.py counts them here).
UPLOAD, FILES, FILE, DELETE = (
    (OPS / f"{name}.graphql").read_text() for name in ("UploadFile", "Files", "File", "DeleteFile")
)


LIMITS: dict[str, Any] = {
    "max_upload_bytes": MAX_UPLOAD,
    "storage_quota_bytes": {"free": 64 * KIB, "pro": 10 * 2**20},
    "max_uploads_in_flight": 2,
}


@pytest.fixture(scope="module")
def files_settings(settings: Settings) -> Settings:
    return settings.model_copy(update=LIMITS)


@pytest.fixture(scope="module")
async def api(settings: Settings, sessions: Any) -> AsyncIterator[str]:
    """An API of its own with small upload and quota limits (FILE_URL_SECRET unset: made in
    the state dir on first use, as in `wfs dev`); no worker is needed."""
    async with own_service(settings, **LIMITS) as url:
        yield url


async def upload(
    api: str,
    key: str | None,
    path: str,
    content: bytes,
    *,
    name: str = "upload.bin",
    overwrite: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One uploadFile as the GraphQL multipart request spec sends it."""
    operations = {
        "query": UPLOAD,
        "variables": {"file": None, "path": path, "overwrite": overwrite},
    }
    sent = dict(headers or {})
    if key:
        sent["Authorization"] = f"Bearer {key}"
    async with httpx.AsyncClient(base_url=api, timeout=60) as http:
        return await http.post(
            "/graphql",
            data={
                "operations": json.dumps(operations),
                "map": json.dumps({"0": ["variables.file"]}),
            },
            files={"0": (name, content, "application/octet-stream")},
            headers=sent,
        )


async def uploaded(api: str, key: str, path: str, content: bytes, **kw: Any) -> dict[str, Any]:
    resp = await upload(api, key, path, content, **kw)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert not body.get("errors"), body
    return dict(body["data"]["uploadFile"])


async def storage_of(sessions: Any, settings: Settings, keys: TenantKeys) -> Path:
    async with sessions() as session:
        tenant = await TenantService(session).get_by_name(keys.name)
    return settings.files_root / str(tenant.id)


async def first_line(api: str, request: bytes) -> bytes:
    """Send `request` as it is on a socket of its own; the answer's status line."""
    reader, writer = await asyncio.open_connection(urlsplit(api).hostname, urlsplit(api).port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 30)
    finally:
        writer.close()


def no_part_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".wfs-part-")]


async def test_upload_list_download_delete(
    api: str, tenant: TenantKeys, sessions: Any, files_settings: Settings
) -> None:
    done = await uploaded(api, tenant.operator, "docs/report.pdf", PDF, name="x.txt")
    assert done["__typename"] == "File" and done["path"] == "docs/report.pdf"
    # Sniffed from the bytes: neither the part's name nor its declared type counts.
    assert done["size"] == len(PDF) and done["contentType"] == "application/pdf"
    csv = await uploaded(api, tenant.admin, "docs/people.csv", b"id,name\n1,Ada\n")
    assert csv["contentType"] == "text/csv"
    root = await storage_of(sessions, files_settings, tenant)
    assert (root / "docs/report.pdf").read_bytes() == PDF  # where the files.* steps read it
    assert no_part_files(root)

    client = GraphQLClient(api, tenant.viewer)  # viewers read
    listed = (await client.data(FILES, {}))["files"]["edges"]
    assert [e["node"]["path"] for e in listed] == [
        "docs/people.csv",
        "docs/report.pdf",
        *SAMPLE_PATHS,  # every tenant's storage starts with them
    ]
    got = (await client.data(FILE, {"path": "docs/report.pdf"}))["file"]
    assert got["contentType"] == "application/pdf" and got["size"] == len(PDF)
    async with httpx.AsyncClient(timeout=30) as http:  # no key: the URL is the credential
        resp = await http.get(got["url"])
    assert resp.status_code == 200 and resp.content == PDF
    assert resp.headers["content-type"] == "application/pdf"
    assert resp.headers["content-disposition"] == "attachment; filename*=UTF-8''report.pdf"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "no-store" in resp.headers["cache-control"]

    operator = GraphQLClient(api, tenant.operator)
    gone = (await operator.data(DELETE, {"path": "docs/report.pdf"}))["deleteFile"]
    assert gone == {"__typename": "DeletedFile", "path": "docs/report.pdf"}
    assert (await client.data(FILE, {"path": "docs/report.pdf"}))["file"] is None
    again = (await operator.data(DELETE, {"path": "docs/report.pdf"}))["deleteFile"]
    assert again["code"] == "NOT_FOUND"
    async with httpx.AsyncClient(timeout=30) as http:  # a URL outlives no file
        assert (await http.get(got["url"])).status_code == 404


async def test_overwrite_only_when_asked(api: str, tenant: TenantKeys) -> None:
    await uploaded(api, tenant.operator, "a.txt", b"first")
    refused = await uploaded(api, tenant.operator, "a.txt", b"second")
    assert refused["__typename"] == "ConflictError" and "overwrite" in refused["message"]
    replaced = await uploaded(api, tenant.operator, "a.txt", b"second!", overwrite=True)
    assert replaced["size"] == 7
    folder = await uploaded(api, tenant.operator, "samples", b"x", overwrite=True)
    assert folder["__typename"] == "ValidationError" and "folder" in folder["message"]


async def test_listing_pages_by_cursor(
    api: str, tenant: TenantKeys, sessions: Any, files_settings: Settings
) -> None:
    root = await storage_of(sessions, files_settings, tenant)
    for i in range(5):
        await uploaded(api, tenant.operator, f"page/f{i}.txt", f"file {i}".encode())
    (root / "page" / "sub").mkdir()
    (root / "page" / "sub" / "deep.json").write_text('{"a": 1}')
    client = GraphQLClient(api, tenant.viewer)
    seen: list[str] = []
    after = None
    while True:
        page = (await client.data(FILES, {"prefix": "page/", "first": 2, "after": after}))["files"]
        seen += [e["node"]["path"] for e in page["edges"]]
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == [*(f"page/f{i}.txt" for i in range(5)), "page/sub/deep.json"]
    deep = (await client.data(FILES, {"prefix": "page/sub/"}))["files"]["edges"]
    assert [e["node"]["contentType"] for e in deep] == ["application/json"]
    for bad in ("not-a-cursor", "WzEsMl0="):  # garbage; a cursor of two numbers
        body = await client.raw(FILES, {"after": bad})
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED"
    body = await client.raw(FILES, {"first": 101})
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED"


async def test_signed_urls_refuse_forgery_expiry_and_escape(
    api: str,
    tenant: TenantKeys,
    other_tenant: TenantKeys,
    sessions: Any,
    files_settings: Settings,
) -> None:
    await uploaded(api, tenant.operator, "private.txt", b"secret")
    client = GraphQLClient(api, tenant.viewer)
    url = (await client.data(FILE, {"path": "private.txt"}))["file"]["url"]
    token = urlsplit(url).path.rsplit("/", 1)[-1]
    root = await storage_of(sessions, files_settings, tenant)
    victim = await storage_of(sessions, files_settings, other_tenant)
    payload, mac = token.split(".")
    forged = [
        f"{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{mac}",  # payload changed
        f"{payload}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",  # signature changed
        payload,  # no signature
        "x" * 10_000,
    ]
    other_secret = files_settings.model_copy(update={"file_url_secret": SecretStr("x" * 32)})
    forged.append(signing.sign(other_secret, root.name, "private.txt").token)
    expired = signing.sign(files_settings, root.name, "private.txt", now=time.time() - 301)
    # Signed with the server's own secret, still confined to the tenant named in the token.
    escape = signing.sign(files_settings, root.name, f"../{victim.name}/samples/invoice.txt")
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        assert (await http.get(f"/files/{token}")).content == b"secret"
        for bad in forged:
            resp = await http.get(f"/files/{bad}")
            assert resp.status_code == 403, bad
            assert resp.json()["errors"][0]["message"] == "invalid download URL"
        resp = await http.get(f"/files/{expired.token}")
        assert resp.status_code == 403 and "expired" in resp.text
        assert (await http.get(f"/files/{escape.token}")).status_code == 403
        for path in ("/files/..%2F..%2Fetc%2Fpasswd", "/files/../../etc/passwd", "/files/"):
            assert (await http.get(path)).status_code in (403, 404), path
    assert (root / "private.txt").read_bytes() == b"secret"
    with pytest.raises(ValidationError, match="at least 32"):
        Settings(_env_file=None, file_url_secret="short")  # type: ignore[call-arg]


async def test_paths_are_confined(
    api: str, tenant: TenantKeys, sessions: Any, files_settings: Settings, tmp_path: Path
) -> None:
    root = await storage_of(sessions, files_settings, tenant)
    await uploaded(api, tenant.operator, "inside.txt", b"in")  # opens (creates) the root
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    for path in ("../escape.txt", "/etc/x", "a/../../x", "a\\..\\b", ".wfs-part-x", "out/x", ""):
        refused = await uploaded(api, tenant.operator, path, b"x")
        assert refused["__typename"] == "ValidationError", (path, refused)
    assert list(outside.iterdir()) == []
    client = GraphQLClient(api, tenant.operator)
    for query, variables in ((FILE, {"path": "../x"}), (FILES, {"prefix": "../"})):
        body = await client.raw(query, variables)
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED"
    assert (await client.data(DELETE, {"path": "out"}))["deleteFile"]["path"] == "out"
    assert outside.exists() and no_part_files(root)


async def test_storage_quota_refuses_an_upload_with_a_typed_error(
    api: str, sessions: Any, files_settings: Settings
) -> None:
    keys = await make_tenant(sessions, "free")  # 64 KiB here; the samples take 16
    first = await uploaded(api, keys.operator, "big-1.bin", b"\1" * 32 * KIB)
    assert first["__typename"] == "File"
    full = await uploaded(api, keys.operator, "big-2.bin", b"\2" * 32 * KIB)
    assert full["__typename"] == "QuotaExceededError" and full["code"] == "QUOTA_EXCEEDED"
    assert "the free tier stores at most" in full["message"]
    root = await storage_of(sessions, files_settings, keys)
    assert not (root / "big-2.bin").exists() and no_part_files(root)
    # Replacing a file in place adds nothing, so it still fits.
    same = await uploaded(api, keys.operator, "big-1.bin", b"\3" * 32 * KIB, overwrite=True)
    assert same["__typename"] == "File"


async def test_oversize_uploads_are_refused_without_reading_them(
    api: str, tenant: TenantKeys, sessions: Any, files_settings: Settings
) -> None:
    root = await storage_of(sessions, files_settings, tenant)
    # A file one byte over MAX_UPLOAD_BYTES (its body fits the multipart cap): a typed error.
    over = await uploaded(api, tenant.operator, "over.bin", b"x" * (MAX_UPLOAD + 1))
    assert over["__typename"] == "ValidationError" and str(MAX_UPLOAD) in over["message"]
    # A declared length over the cap is answered before a byte of the body is sent.
    head = (
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n" % tenant.operator.encode()
    )
    status = await first_line(api, head + b"Content-Length: 10000000000\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413"), status
    # Chunked (no length): counted as it streams, refused once past the cap, although the
    # body never ends (its last chunk is never sent).
    cap = files_settings.max_upload_bytes + files_settings.max_request_bytes
    body = b'--b\r\nContent-Disposition: form-data; name="0"; filename="f"\r\n\r\n'
    body += b"x" * (cap + 64 * KIB)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 8192]), body[i : i + 8192])
        for i in range(0, len(body), 8192)
    )
    status = await first_line(api, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
    assert status.startswith(b"HTTP/1.1 413"), status
    assert not (root / "over.bin").exists() and no_part_files(root)


async def test_multipart_needs_a_header_a_form_cannot_send(api: str) -> None:
    """CSRF: a page on another site can POST multipart/form-data without a preflight, but it
    cannot add Authorization (nor Apollo-Require-Preflight) to it."""
    resp = await upload(api, None, "x.txt", b"x")
    assert resp.status_code == 400 and "Authorization" in resp.text
    assert resp.json()["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED"
    anonymous = await upload(api, None, "x.txt", b"x", headers={"Apollo-Require-Preflight": "1"})
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_uploads_without_a_writer_key_are_refused_before_the_body_is_read(
    api: str, tenant: TenantKeys, sessions: Any, files_settings: Settings
) -> None:
    """Starlette spools a body while parsing it, before any resolver: before, only the presence
    of an Authorization header was checked, so anyone could make the server spool 50 MiB."""
    root = await storage_of(sessions, files_settings, tenant)

    def head(authorization: str) -> bytes:
        return (
            b"POST /graphql HTTP/1.1\r\nHost: x\r\n%s\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
            % authorization.encode()
        )

    for authorization, status in (
        ("Authorization: Bearer wfs_not_a_key", b"401"),
        ("Apollo-Require-Preflight: 1", b"401"),
        (f"Authorization: Bearer {tenant.viewer}", b"403"),
    ):
        line = await first_line(api, head(authorization))  # the body is never sent
        assert line.startswith(b"HTTP/1.1 " + status), (authorization, line)
    viewer = await upload(api, tenant.viewer, "v.txt", b"x")
    assert viewer.status_code == 403
    assert viewer.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert not (root / "v.txt").exists()


async def test_uploads_over_the_in_flight_cap_are_refused(api: str, tenant: TenantKeys) -> None:
    """MAX_UPLOADS_IN_FLIGHT (2 here) uploads whose bodies never end hold their places; one
    more is answered 503 with Retry-After; once they go, uploads are taken again."""
    host, port = urlsplit(api).hostname, urlsplit(api).port
    start = (
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="operations"\r\n\r\n{'
        % tenant.operator.encode()
    )
    stalled: list[tuple[asyncio.Task[bytes], asyncio.StreamWriter]] = []

    async def stall() -> tuple[asyncio.Task[bytes], asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(start)
        await writer.drain()
        return asyncio.create_task(reader.read(1)), writer  # done once the server answers

    try:
        stalled = [await stall() for _ in range(LIMITS["max_uploads_in_flight"])]
        async with asyncio.timeout(30):
            while True:
                # A stalled upload that came after one of ours found no place and was answered
                # (503): it holds nothing, so open another in its stead.
                for i, (answered, writer) in enumerate(stalled):
                    if answered.done():
                        writer.close()
                        stalled[i] = await stall()
                busy = await upload(api, tenant.operator, "cap.txt", b"x")
                if busy.status_code == 503:
                    break
                await asyncio.sleep(0.05)  # the stalled ones are not admitted yet
        assert busy.headers["Retry-After"] == "1"
        assert busy.json()["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
    finally:
        for answered, writer in stalled:
            answered.cancel()
            writer.close()
    async with asyncio.timeout(30):  # their places come back when their requests end
        while (
            await upload(api, tenant.operator, "cap.txt", b"x", overwrite=True)
        ).status_code != 200:
            await asyncio.sleep(0.05)


async def test_malformed_multipart_is_a_400(api: str, tenant: TenantKeys) -> None:
    headers = {"Authorization": f"Bearer {tenant.operator}"}
    part = 'Content-Disposition: form-data; name="{}"\r\n\r\n{}\r\n'
    bodies = {
        "no boundary": ("multipart/form-data", b"--x\r\n"),
        "cut short": ("multipart/form-data; boundary=b", b"--b\r\nContent-Disp"),
        "operations not JSON": (
            "multipart/form-data; boundary=b",
            f"--b\r\n{part.format('operations', '{not json')}--b--\r\n".encode(),
        ),
        "map names no file": (
            "multipart/form-data; boundary=b",
            (
                f"--b\r\n{part.format('operations', json.dumps({'query': UPLOAD}))}"
                f"--b\r\n{part.format('map', json.dumps({'0': ['variables.file']}))}--b--\r\n"
            ).encode(),
        ),
    }

    # Otherwise valid requests past the form limits: one file, two fields (operations and
    # map), a field no larger than MAX_REQUEST_BYTES (Starlette's defaults: 1,000 files and
    # fields, fields of 1 MiB, held in memory).
    def form(operations: dict[str, Any], fields: int = 0, files: int = 0) -> bytes:
        body = f"--b\r\n{part.format('operations', json.dumps(operations))}"
        body += f"--b\r\n{part.format('map', '{}')}"
        body += "".join(f"--b\r\n{part.format(f'extra{i}', 'x')}" for i in range(fields))
        file = 'Content-Disposition: form-data; name="{}"; filename="f"\r\n\r\nx\r\n'
        body += "".join(f"--b\r\n{file.format(i)}" for i in range(files))
        return (body + "--b--\r\n").encode()

    typename = {"query": "{ __typename }"}
    padded = typename | {"variables": {"pad": "x" * 256 * KIB}}
    multipart = "multipart/form-data; boundary=b"
    bodies |= {
        "two files": (multipart, form(typename, files=2)),
        "a third field": (multipart, form(typename, fields=1)),
        "operations over MAX_REQUEST_BYTES": (multipart, form(padded)),
    }
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        fits = await http.post(
            "/graphql",
            content=form(typename, files=1),
            headers=headers | {"Content-Type": multipart},
        )
        assert fits.status_code == 200 and fits.json()["data"] == {"__typename": "Query"}
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        for what, (content_type, body) in bodies.items():
            sent = headers | {"Content-Type": content_type}
            resp = await http.post("/graphql", content=body, headers=sent)
            assert resp.status_code == 400, (what, resp.status_code, resp.text)


async def test_viewer_cannot_upload_or_delete(api: str, tenant: TenantKeys) -> None:
    denied = await upload(api, tenant.viewer, "v.txt", b"x")  # refused before its body is read
    assert denied.status_code == 403
    client = GraphQLClient(api, tenant.viewer)
    gone = (await client.data(DELETE, {"path": "samples/invoice.txt"}))["deleteFile"]
    assert gone["__typename"] == "ForbiddenError"
    assert (await client.data(FILE, {"path": "samples/invoice.txt"}))["file"] is not None
    assert (await client.data(FILE, {"path": "v.txt"}))["file"] is None


async def test_another_tenant_sees_nothing(
    api: str, tenant: TenantKeys, other_tenant: TenantKeys
) -> None:
    name = f"mine-{uuid.uuid4().hex[:6]}.txt"
    await uploaded(api, tenant.operator, name, b"tenant a's")
    other = GraphQLClient(api, other_tenant.admin)
    listed = (await other.data(FILES, {}))["files"]["edges"]
    assert [e["node"]["path"] for e in listed] == SAMPLE_PATHS
    assert (await other.data(FILE, {"path": name}))["file"] is None
    assert (await other.data(DELETE, {"path": name}))["deleteFile"]["code"] == "NOT_FOUND"
    assert (await GraphQLClient(api, tenant.viewer).data(FILE, {"path": name}))["file"]


async def test_a_string_is_not_a_file(api: str, tenant: TenantKeys) -> None:
    body = await GraphQLClient(api, tenant.operator).raw(
        UPLOAD, {"file": "not a file", "path": "s.txt"}
    )
    assert body["data"]["uploadFile"]["__typename"] == "ValidationError"


async def test_the_readme_curl_upload_works(api: str, tenant: TenantKeys, tmp_path: Path) -> None:
    """README, "Files": the curl command as printed, pointed at this API."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    readme = (OPS.parents[1] / "README.md").read_text()
    found = re.search(r"\n## Files\n.*?```sh\n(.*?)```", readme, re.S)
    assert found is not None
    (tmp_path / "report.pdf").write_bytes(PDF)
    command = found.group(1).replace("http://127.0.0.1:8000", api)
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "KEY": tenant.operator},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert json.loads(out)["data"]["uploadFile"] == {
        "__typename": "File",
        "path": "in/report.pdf",
        "size": len(PDF),
        "contentType": "application/pdf",
    }
