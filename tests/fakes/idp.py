"""A fake identity provider for tests: its key set (JWKS) on a real HTTP socket, tokens minted
with PyJWT from keys generated here with `cryptography`.

The test chooses which keys the JWKS publishes (rotation), can take it down (503) or slow it
down, and counts the requests it served.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "wfs-api"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class FakeIdentityProvider:
    def __init__(self, audience: str = AUDIENCE) -> None:
        self.audience = audience
        self.keys: dict[str, PrivateKey] = {}
        self.published: list[str] = []
        self.requests = 0
        self.down = False
        self.delay = 0.0  # seconds before each answer
        self.gate = threading.Event()  # cleared: every answer waits until it is set again
        self.gate.set()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                idp.requests += 1
                time.sleep(idp.delay)
                idp.gate.wait(30)
                if idp.down or self.path != "/jwks":
                    self.send_response(503 if idp.down else 404)
                    self.end_headers()
                    return
                body = json.dumps(idp.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = self.url + "/"
        self.jwks_url = self.url + "/jwks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    def add_key(self, kid: str, alg: str = "RS256", *, publish: bool = True) -> None:
        if alg == "RS256":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        if publish:
            self.published.append(kid)

    def publish(self, *kids: str) -> None:
        """Serve exactly these keys from now on (the others are dropped: rotation)."""
        self.published = list(kids)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            public = self.keys[kid].public_key()
            if isinstance(public, rsa.RSAPublicKey):
                jwk = RSAAlgorithm.to_jwk(public, as_dict=True) | {"alg": "RS256"}
            else:
                jwk = ECAlgorithm.to_jwk(public, as_dict=True) | {"alg": "ES256"}
            keys.append(jwk | {"kid": kid, "use": "sig"})
        return {"keys": keys}

    def claims(self, tenant: str | None, role: Any = "viewer", **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": f"user-{uuid.uuid4().hex[:8]}",
            "iat": now,
            "exp": now + 300,
            "tenant": tenant,
            "role": role,
        }
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self,
        tenant: str | None,
        role: Any = "viewer",
        *,
        kid: str | None = None,
        headers: dict[str, Any] | None = None,
        **extra: Any,
    ) -> str:
        """A token signed with `kid` (default: the first published key); `extra` claims set to
        None are left out."""
        kid = kid or self.published[0]
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(
            self.claims(tenant, role, **extra),
            key,
            algorithm=alg,
            headers={"kid": kid} | (headers or {}),
        )
