"""Running the fake: `FakeLLMServer` (uvicorn in a background thread) and the `main` CLI.

The socket is bound before uvicorn starts, so the port is known (and free) up front. Stopping
first releases scripted hangs, then asks uvicorn to exit, with a bounded grace period.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import uvicorn

from app.ai.fake_llm.app import create_app
from app.ai.fake_llm.script import FakeLLM

_START_TIMEOUT_S = 10.0
_GRACE_S = 1  # uvicorn cancels requests still running this long after shutdown began


class FakeLLMServer:
    """A fake LLM server on a real socket; `with FakeLLMServer() as server:` starts and stops it.

    `server.fake` is the `FakeLLM` to script and inspect from the test (same process).
    """

    def __init__(
        self,
        fake: FakeLLM | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str | None = None,
    ) -> None:
        """`port` 0 picks a free port; read it back from `base_url` after `start()`.

        `log_level` None leaves logging alone (the host process may run its own uvicorn and
        logging setup); a level installs uvicorn's log config, as the CLI does."""
        self.fake = fake if fake is not None else FakeLLM()
        self.host = host
        self.port = port
        self.log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """http://host:port (the Anthropic SDK's base_url)."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """http://host:port/v1 (the OpenAI SDK's base_url)."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """http://host:port (the Anthropic SDK adds /v1 itself)."""
        return self.base_url

    def _bind(self) -> tuple[uvicorn.Server, socket.socket]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(2048)  # connections queue from now on, before uvicorn accepts them
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        log_options: dict[str, Any] = {"log_level": self.log_level}
        if self.log_level is None:
            log_options["log_config"] = None
        config = uvicorn.Config(
            create_app(self.fake),
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=_GRACE_S,
            **log_options,
        )
        return uvicorn.Server(config), sock

    def start(self) -> str:
        """Serve in a daemon thread; returns `base_url` once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the fake LLM server is already running")
        server, sock = self._bind()
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fake-llm", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the fake LLM server did not start on {self.base_url}")
            time.sleep(0.01)
        return self.base_url

    def stop(self, timeout: float = 5.0) -> None:
        """End scripted waits, stop uvicorn and join its thread (bounded by `timeout`)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.fake.release_sleepers()
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():  # something still hangs: stop waiting for it
            server.force_exit = True
            thread.join(timeout)
        self._server = self._thread = None

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (uvicorn handles the signals)."""
        server, sock = self._bind()
        self._server = server
        print(
            f"fake LLM server: openai base_url {self.openai_base_url}, "
            f"anthropic base_url {self.anthropic_base_url}",
            flush=True,
        )
        try:
            server.run(sockets=[sock])
        finally:
            self._server = None

    def __enter__(self) -> FakeLLMServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m app.ai.fake_llm [--host H] [--port P] [--key K ...]`: serve until stopped."""
    parser = argparse.ArgumentParser(
        prog="python -m app.ai.fake_llm",
        description="A local fake of the OpenAI and Anthropic APIs, scriptable over /_fake/*.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8400, help="0 picks a free port")
    parser.add_argument(
        "--key",
        action="append",
        dest="keys",
        help="an accepted API key (repeatable); without any, every non-empty key is accepted",
    )
    parser.add_argument("--hang-s", type=float, default=120.0, help="longest scripted hang")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    fake = FakeLLM(valid_keys=args.keys, hang_s=args.hang_s)
    FakeLLMServer(fake, host=args.host, port=args.port, log_level=args.log_level).serve_forever()
    return 0
