"""A secured Temporal frontend for tests: TLS (and mTLS) in front of the plaintext dev server.

The dev server (`temporal server start-dev`) has no TLS options, so this proxy terminates TLS
with certificates made here (a CA, a server certificate, a client certificate) and relays the
HTTP/2 bytes to the dev server unchanged, negotiating `h2` by ALPN as a gRPC server must. It
decodes (HPACK) the request headers the client sends, so a test can see what reached the
server (e.g. `authorization: Bearer <API key>`), and records the client certificate of each
accepted handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import hpack
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVER_NAME = "temporal.wfs.test"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS, CONTINUATION = 0x1, 0x9
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, the server's certificate for SERVER_NAME and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def make_pki(folder: Path, client_name: str = "wfs-worker") -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())

    def issue(
        subject: str, key: ec.EllipticCurvePrivateKey, *, ca: bool = False
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name("wfs test CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            )
        else:
            names = [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    def write_cert(path: Path, cert: x509.Certificate) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    folder.mkdir(parents=True, exist_ok=True)
    return Pki(
        ca=write_cert(folder / "ca.pem", issue("wfs test CA", ca_key, ca=True)),
        server_cert=write_cert(folder / "server.pem", issue(SERVER_NAME, server_key)),
        server_key=_write_key(folder / "server-key.pem", server_key),
        client_cert=write_cert(folder / "client.pem", issue(client_name, client_key)),
        client_key=_write_key(folder / "client-key.pem", client_key),
    )


@dataclass
class TlsTemporalProxy:
    """TLS on 127.0.0.1:<port>, relayed to the plaintext Temporal frontend at `upstream`."""

    pki: Pki
    upstream: str
    require_client_cert: bool = True
    port: int = 0
    client_subjects: list[str] = field(default_factory=list)  # CN of each accepted client
    requests: list[dict[str, str]] = field(default_factory=list)  # decoded request headers
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def _context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        context.set_alpn_protocols(["h2"])
        if self.require_client_cert:
            context.load_verify_locations(self.pki.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def start(self) -> str:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", 0, ssl=self._context(), ssl_handshake_timeout=10
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # Closing the sockets ends the relays (a cancelled handler task would be logged
            # as an error by asyncio's stream callback).
            for writer in list(self._writers):
                writer.close()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        ssl_object = writer.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        if peer:
            subject = dict(item[0] for item in peer["subject"])
            self.client_subjects.append(subject.get("commonName", ""))
        host, port = self.upstream.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, self._headers_reader()),
                self._pipe(up_reader, writer, None),
            )
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.close()
            self._tasks.discard(task)

    def _headers_reader(self) -> _HeaderDecoder:
        return _HeaderDecoder(self.requests)

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, decoder: _HeaderDecoder | None
    ) -> None:
        while data := await source.read(65536):
            if decoder is not None:
                decoder.feed(data)
            sink.write(data)
            await sink.drain()
        with contextlib.suppress(Exception):
            sink.write_eof()


class _HeaderDecoder:
    """Follows the client's side of an HTTP/2 connection and decodes each header block."""

    def __init__(self, out: list[dict[str, str]]) -> None:
        self._out = out
        self._buffer = b""
        self._preface_seen = False
        self._block = b""
        self._hpack = hpack.Decoder()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if not self._preface_seen:
            if len(self._buffer) < len(PREFACE):
                return
            assert self._buffer.startswith(PREFACE), "not an HTTP/2 client"
            self._buffer, self._preface_seen = self._buffer[len(PREFACE) :], True
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            kind, flags = self._buffer[3], self._buffer[4]
            if len(self._buffer) < 9 + length:
                return
            payload, self._buffer = self._buffer[9 : 9 + length], self._buffer[9 + length :]
            if kind == HEADERS:
                pad = payload[0] if flags & PADDED else 0
                start = (1 if flags & PADDED else 0) + (5 if flags & PRIORITY else 0)
                self._block = payload[start : len(payload) - pad]
            elif kind == CONTINUATION:
                self._block += payload
            else:
                continue
            if flags & END_HEADERS:
                headers = self._hpack.decode(self._block)
                self._out.append({str(k): str(v) for k, v in headers})
                self._block = b""
