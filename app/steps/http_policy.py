"""What `http.request` may reach: allowed hosts, ports and resolved addresses.

Checked before any connection and again on every redirect hop, so that nothing a tenant
writes reaches the worker's own network:
1. Host: `HTTP_ALLOWED_HOSTS` lists exact names or IPs, or `*.example.com` (any subdomain, not
   example.com itself). A wildcard never matches an IP literal.
2. Port: one of `HTTP_ALLOWED_PORTS` (default 80, 443), unless the matching entry names its
   port: `api.example.com:8443` allows that port only, `host:*` any port (IPv6: `[::1]:8080`).
3. Address: the host is resolved (off the event loop) and EVERY address it resolves to must be
   public: not private, loopback, link-local, shared, multicast, reserved, unspecified or a
   cloud metadata address, IPv4 and IPv6 alike (IPv4-mapped, 6to4 and NAT64 addresses are
   judged by the IPv4 address inside). Exceptions are the operator's: an IP literal listed
   exactly in HTTP_ALLOWED_HOSTS, or an address inside `HTTP_ALLOWED_NETWORKS` (CIDRs; these
   never open the metadata addresses). So a listed name whose DNS says 10.0.0.1 is refused.
`resolve_checked` returns the checked addresses: http.request connects to those only (DNS
pinning), so a name cannot resolve elsewhere between the check and the connection.
Refusals never say which address a name resolved to (that is logged).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

import httpx
import structlog

from app.settings import Settings
from app.steps.base import StepInputError, StepTransientError

log = structlog.get_logger(__name__)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_PORT = -1

# Cloud metadata services: never reachable through HTTP_ALLOWED_NETWORKS (AWS, GCP, Azure
# and OpenStack 169.254.169.254; AWS ECS; Alibaba; Oracle; Azure wireserver; AWS IPv6).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
        "fd00:ec2::254",
    )
)
# Besides what `ipaddress` calls private/reserved/...: ranges that are not the public internet
# (shared CGNAT space, benchmarking, 6to4 relays, IPv4-compatible IPv6, local-use NAT64, ...).
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/32",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_INTERNAL = "private, loopback, link-local, multicast, reserved or cloud metadata"


def _allow_entry(raw: str) -> tuple[str, int | None] | None:
    """An HTTP_ALLOWED_HOSTS entry as (host pattern, port): None = HTTP_ALLOWED_PORTS,
    ANY_PORT for `host:*`. Forms: `host`, `host:443`, `host:*`, `[v6]`, `[v6]:443`, bare v6.
    A malformed port makes the entry match nothing."""
    entry = raw.strip().lower()
    port: str | None = None
    if entry.startswith("["):
        entry, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif entry.count(":") == 1:
        entry, port = entry.split(":")
    host = entry.rstrip(".")
    if port is None:
        return host, None
    if port == "*":
        return host, ANY_PORT
    if port.isdigit() and 0 < int(port) < 65536:
        return host, int(port)
    return None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_matches(host: str, pattern: str) -> bool:
    if host == pattern:
        return True
    # Internal or not, an IP literal must be listed exactly: a wildcard never matches one.
    return (
        not is_ip_literal(host)
        and pattern.startswith("*.")
        and len(pattern) > 2
        and host.endswith(pattern[1:])
    )


def _entries_for(host: str, allowed: Sequence[str]) -> list[int | None]:
    """The ports of the HTTP_ALLOWED_HOSTS entries that match `host`."""
    host = host.lower().rstrip(".")
    parsed = [e for e in map(_allow_entry, allowed) if e is not None]
    return [port for pattern, port in parsed if _host_matches(host, pattern)]


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """True when `host` is listed exactly, or is a DNS name under a `*.suffix` entry."""
    return bool(_entries_for(host, allowed))


def port_allowed(host: str, port: int, settings: Settings) -> bool:
    """True when an entry matching `host` names `port` (or `*`), or names no port and `port`
    is one of HTTP_ALLOWED_PORTS."""
    ports = _entries_for(host, settings.http_allowed_hosts)
    return any(
        p == ANY_PORT or p == port or (p is None and port in settings.http_allowed_ports)
        for p in ports
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to (IPv4-mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def public_address(ip: IPAddress) -> bool:
    """True for an address of the public internet that is no cloud metadata service."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return public_address(inner)
    if ip in METADATA_ADDRESSES or any(ip in net for net in _NOT_PUBLIC):
        return False
    special = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
    return ip.is_global and not (special or ip.is_reserved or ip.is_unspecified)


def _networks(settings: Settings) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for raw in settings.http_allowed_networks:
        try:
            nets.append(ipaddress.ip_network(raw.strip(), strict=False))
        except ValueError:
            log.warning("step.http_bad_allowed_network", network=raw)
    return nets


def address_allowed(ip: IPAddress, settings: Settings) -> bool:
    """Whether http.request may connect to `ip` that a host name resolved to: a public
    address, or one inside HTTP_ALLOWED_NETWORKS (which never opens a metadata address)."""
    if public_address(ip):
        return True
    inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    candidates = [a for a in (ip, inner) if a is not None]
    if any(a in METADATA_ADDRESSES for a in candidates):
        return False
    return any(a in net for net in _networks(settings) for a in candidates)


def parse_url(raw: str | httpx.URL) -> httpx.URL:
    """`raw` as an absolute http(s) URL with a host (else StepInputError)."""
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise StepInputError(f"invalid url {str(raw)!r}: {exc}") from exc
    if url.scheme not in _DEFAULT_PORTS or not url.host:
        raise StepInputError(f"url {str(raw)!r} must be an absolute http(s) URL")
    return url


def url_port(url: httpx.URL) -> int:
    """The port `url` connects to: its own, or its scheme's default."""
    return url.port or _DEFAULT_PORTS[url.scheme]


def checked_url(raw: str | httpx.URL, settings: Settings) -> httpx.URL:
    """`raw` as a URL whose scheme, host and port may be reached (addresses come later)."""
    url = parse_url(raw)
    if not host_allowed(url.host, settings.http_allowed_hosts):
        raise StepInputError(
            f"host {url.host!r} is not allowed; the operator lists reachable hosts in "
            "HTTP_ALLOWED_HOSTS"
        )
    port = url_port(url)
    if not port_allowed(url.host, port, settings):
        raise StepInputError(
            f"port {port} is not allowed for host {url.host!r}; the operator lists ports in "
            "HTTP_ALLOWED_PORTS, or as host:port in HTTP_ALLOWED_HOSTS"
        )
    return url


async def resolve_checked(url: httpx.URL, settings: Settings) -> tuple[str, ...]:
    """The addresses `url`'s host resolves to, every one of them allowed (else StepInputError):
    the only addresses the request may then connect to."""
    host = url.host.lower().rstrip(".")
    if is_ip_literal(host):
        ip = ipaddress.ip_address(host)
        # Listed exactly in HTTP_ALLOWED_HOSTS, an IP literal is the operator's call (a
        # wildcard never matches one).
        if address_allowed(ip, settings) or host_allowed(host, settings.http_allowed_hosts):
            return (str(ip),)
        raise StepInputError(f"url names an internal address ({_INTERNAL})")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            url.raw_host.decode("ascii"), url_port(url), type=socket.SOCK_STREAM
        )
    except UnicodeError as exc:
        # The IDNA codec refuses an empty label (`a..com`) or one over 63 characters: the
        # name can never resolve, so it is the input's fault, not the network's.
        raise StepInputError(f"host {url.host!r} is not a valid host name") from exc
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise StepInputError(f"host {url.host!r} does not resolve") from exc
        raise StepTransientError(f"host {url.host!r} could not be resolved for now") from exc
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = [a for a in addresses if not address_allowed(ipaddress.ip_address(a), settings)]
    if refused or not addresses:
        log.info("step.http_address_refused", host=url.host, addresses=refused)
        raise StepInputError(
            f"host {url.host!r} resolves to an internal address ({_INTERNAL}); the operator "
            "opens internal networks in HTTP_ALLOWED_NETWORKS"
        )
    return addresses
