"""Uploading and downloading from a real Chromium: the frontend guide's `fetch` + FormData
upload (docs/frontend.md, "Uploading a file") runs as written, and its signed URL downloads
the file; a plain HTML form posted from another site is refused before anything is stored."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings
from app.tenants.service import TenantService
from tests.browser.conftest import PageServer
from tests.conftest import TenantKeys, make_tenant
from tests.support import own_service

ROOT = Path(__file__).resolve().parents[2]
GUIDE_UPLOAD = next(
    block
    for block in re.findall(r"```js\n(.*?)```", (ROOT / "docs/frontend.md").read_text(), re.S)
    if "async function uploadFile" in block
)
UPLOAD_FILE = (ROOT / "graphql/operations/UploadFile.graphql").read_text()
FILE = (ROOT / "graphql/operations/File.graphql").read_text()

# The guide's function, then a File made in the page, uploaded and downloaded by its URL.
UPLOAD_AND_DOWNLOAD = (
    "async ([UPLOAD_FILE, FILE, key]) => {\n"
    + GUIDE_UPLOAD
    + """
  const file = new File(["a report, from a browser\\n"], "report.txt", {type: "text/html"});
  const uploaded = await uploadFile(file, "browser/report.txt", key);
  const asked = await fetch("/graphql", {
    method: "POST",
    headers: {"Content-Type": "application/json", Authorization: `Bearer ${key}`},
    body: JSON.stringify({query: FILE, variables: {path: "browser/report.txt"}}),
  });
  const {url} = (await asked.json()).data.file;
  const download = await fetch(url);
  return {
    uploaded,
    status: download.status,
    text: await download.text(),
    disposition: download.headers.get("content-disposition"),
  };
}"""
)

# A page on another site posting a multipart form to the API: no preflight, no headers.
FORM_POST = """(action) => {
  const form = document.createElement("form");
  form.method = "POST";
  form.enctype = "multipart/form-data";
  form.action = action;
  for (const [name, value] of [
    ["operations", JSON.stringify({query: "mutation($f: Upload!) { uploadFile(file: $f, " +
      "path: \\"forged.txt\\") { __typename } }", variables: {f: null}})],
    ["map", JSON.stringify({0: ["variables.f"]})],
  ]) {
    const input = document.createElement("input");
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }
  document.body.appendChild(form);
  form.submit();
}"""


@pytest.fixture(scope="module")
async def api(settings: Settings, sessions: Any) -> AsyncIterator[str]:
    async with own_service(settings, anonymous_rate_limit_per_minute=10_000) as url:
        yield url


@pytest.fixture(scope="module")
async def keys(sessions: Any) -> TenantKeys:
    return await make_tenant(sessions, "pro")


async def storage(sessions: Any, settings: Settings, keys: TenantKeys) -> Path:
    async with sessions() as session:
        tenant = await TenantService(session).get_by_name(keys.name)
    return settings.files_root / str(tenant.id)


async def test_the_guides_upload_runs_in_a_browser_and_its_url_downloads(
    browser: Any, api: str, keys: TenantKeys, sessions: Any, settings: Settings
) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{api}/healthz")  # the API's own origin: the guide posts to /graphql
        answer = await page.evaluate(UPLOAD_AND_DOWNLOAD, [UPLOAD_FILE, FILE, keys.operator])
    finally:
        await context.close()
    uploaded = answer["uploaded"]
    # The browser's declared text/html is not what the file is said to be.
    assert uploaded["__typename"] == "File" and uploaded["contentType"] == "text/plain"
    assert uploaded["path"] == "browser/report.txt" and uploaded["size"] == 25
    assert answer["status"] == 200 and answer["text"] == "a report, from a browser\n"
    assert answer["disposition"] == "attachment; filename*=UTF-8''report.txt"
    root = await storage(sessions, settings, keys)
    assert (root / "browser/report.txt").read_text() == "a report, from a browser\n"


async def test_a_form_on_another_site_cannot_upload(
    browser: Any,
    api: str,
    foreign_site: PageServer,
    keys: TenantKeys,
    sessions: Any,
    settings: Settings,
) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(foreign_site.origin + "/")
        async with page.expect_response(f"{api}/graphql") as answered:
            await page.evaluate(FORM_POST, f"{api}/graphql")
        response = await answered.value
        assert response.status == 400
        assert "Authorization" in await response.text()
    finally:
        await context.close()
    assert not (await storage(sessions, settings, keys) / "forged.txt").exists()
