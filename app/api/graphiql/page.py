"""GraphiQL served from the service's own files, under a strict Content-Security-Policy.

GET /graphql from a browser (Strawberry decides: GET, no `query` parameter, Accept with
text/html or */*) answers `GraphiQLSite.page`: a page with no inline script that loads React,
GraphiQL, the explorer plugin and graphql-ws from /graphiql/<package>@<version>/... (files
that fetch.py downloaded into vendor/) and our own page.js/page.css from /graphiql/wfs-<hash>/.
Every asset URL carries its version or content hash, so assets are cached as immutable.
Nothing comes from a CDN: without the vendor files the page says how to get them (503).

site/page.js explains the API key parameter (`#apiKey=` / `?apiKey=`) and how subscriptions
authenticate.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

from app.api.graphiql.fetch import PACKAGES, VENDOR, is_complete, wanted_files

SITE = Path(__file__).resolve().parent / "site"
SITE_FILES = ("page.js", "page.css")
SITE_FOLDER = (
    "wfs-"
    + hashlib.sha256(b"".join((SITE / name).read_bytes() for name in SITE_FILES)).hexdigest()[:12]
)
IMMUTABLE = "public, max-age=31536000, immutable"
# A Host header we can put into the policy as it is (host, IPv4/IPv6 and port); any other
# value leaves connect-src at 'self'.
HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")

_AT = {package.name: package.folder for package in PACKAGES}  # "graphiql" -> "graphiql@4.1.2"
STYLES = (
    f"{_AT['graphiql']}/graphiql.min.css",
    f"{_AT['@graphiql/plugin-explorer']}/dist/style.css",
)
SCRIPTS = (  # in this order: each needs the globals of those before it
    f"{_AT['react']}/umd/react.production.min.js",
    f"{_AT['react-dom']}/umd/react-dom.production.min.js",
    f"{_AT['graphiql']}/graphiql.min.js",
    f"{_AT['@graphiql/plugin-explorer']}/dist/index.umd.js",
    f"{_AT['graphql-ws']}/umd/graphql-ws.min.js",
)

PAGE = """<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>workflow-service GraphiQL</title>
    <link rel="icon" href="data:,">
{links}
{scripts}
  </head>
  <body>
    <div id="graphiql">Loading…</div>
  </body>
</html>
"""

MISSING = """<!doctype html>
<html lang="en">
  <head><meta charset="utf-8"><title>GraphiQL is not installed</title></head>
  <body>
    <h1>GraphiQL's files are not installed</h1>
    <p>This service serves GraphiQL from its own files, never from a CDN, and they are
    missing.</p>
    <p>Get them with <code>make install</code>, or
    <code>python -m app.api.graphiql.fetch</code> (downloads the pinned npm packages and checks
    their sha512), and reload this page. The API itself works without them: POST your queries
    to this URL.</p>
  </body>
</html>
"""


def content_security_policy(request: Request) -> str:
    host = request.headers.get("host", "")
    sockets = f" ws://{host} wss://{host}" if HOST.match(host) else ""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",  # GraphiQL's CSS draws some icons as data: URLs
            "font-src 'self' data:",  # and embeds its fonts
            f"connect-src 'self'{sockets}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def page_html() -> str:
    """The page; asset URLs are relative to /graphql, so a path prefix (root_path) works."""
    links = "\n".join(
        f'    <link rel="stylesheet" href="graphiql/{href}">'
        for href in (*STYLES, f"{SITE_FOLDER}/page.css")
    )
    scripts = "\n".join(
        f'    <script defer src="graphiql/{src}"></script>'
        for src in (*SCRIPTS, f"{SITE_FOLDER}/page.js")
    )
    return PAGE.format(links=links, scripts=scripts)


class GraphiQLSite:
    """The page (for GraphQLApp.render_graphql_ide) and GET /graphiql/{path}, over the npm
    files in `vendor` (fetch.py's folder unless told)."""

    def __init__(self, vendor: Path = VENDOR) -> None:
        self.vendor = vendor
        # Only these files are served: no path is ever joined from the URL.
        self.files = {name: vendor / name for name in wanted_files()}
        self.files.update({f"{SITE_FOLDER}/{name}": SITE / name for name in SITE_FILES})

    def page(self, request: Request) -> Response:
        headers = {
            "Content-Security-Policy": content_security_policy(request),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",  # no URL of this page travels on as a Referer
            "X-Content-Type-Options": "nosniff",
        }
        if not is_complete(self.vendor):  # checked each time: a fetch later needs no restart
            return HTMLResponse(MISSING, status_code=503, headers=headers)
        return HTMLResponse(page_html(), headers=headers)

    async def asset(self, request: Request) -> Response:
        path = self.files.get(request.path_params["path"])
        if path is None or not path.is_file():
            return PlainTextResponse("Not Found", status_code=404)
        headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
        return FileResponse(path, headers=headers)
