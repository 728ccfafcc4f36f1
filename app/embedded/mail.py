"""A development mail catcher for `wfs dev`: an SMTP server (aiosmtpd) that stores every
message it receives in a Maildir under the state dir instead of delivering it, so the email
steps of the standard templates run end to end on a laptop. Started only when nothing listens
on SMTP_HOST:SMTP_PORT already (a real relay or another catcher wins)."""

from __future__ import annotations

import mailbox
import socket
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class DevMailSink:
    def __init__(self, maildir: Path, host: str = "127.0.0.1", port: int = 1025) -> None:
        self.maildir = maildir
        self.host, self.port = host, port
        self._controller: Controller | None = None

    def start(self) -> str:
        self.maildir.parent.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(Mailbox(self.maildir), hostname=self.host, port=self.port)
        self._controller.start()
        return f"smtp://{self.host}:{self.port} -> {self.maildir}"

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[mailbox.MaildirMessage]:
        return list(mailbox.Maildir(self.maildir, create=False)) if self.maildir.exists() else []
