"""Real notification receivers on loopback: an SMTP server (aiosmtpd) and an HTTP server that
can be taken down and brought back on the same port (for webhooks and ntfy)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.gateway.server import free_port

WAIT = 30.0  # seconds a test waits for a notification before failing


class Inbox:
    """What arrived, and a condition to wait on."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._ready = threading.Condition()

    def add(self, item: Any) -> None:
        with self._ready:
            self.items.append(item)
            self._ready.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Any]:
        """At least `count` items (AssertionError after `timeout` seconds)."""
        with self._ready:
            if not self._ready.wait_for(lambda: len(self.items) >= count, timeout=timeout):
                raise AssertionError(f"{len(self.items)} of {count} notifications arrived")
            return list(self.items)


@dataclass(frozen=True)
class Request:
    """One HTTP request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


class HttpReceiver:
    """An HTTP server on loopback recording each POST; `stop` takes it down (connections
    refused), `start` brings it back on the same port. With `answer` cleared it records a
    request and then holds it unanswered until `answer` is set; with `drop` set it closes
    the connection without answering."""

    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = Inbox()
        self.answer = threading.Event()
        self.answer.set()
        self.drop = False
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        inbox, receiver = self.inbox, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                inbox.add(Request(self.path, dict(self.headers.items()), body))
                receiver.answer.wait(WAIT)
                if receiver.drop:
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class SmtpReceiver:
    """aiosmtpd on loopback; each message parsed into `inbox`. With `answer` cleared, the
    message is recorded and its end of DATA left unanswered until `answer` is set."""

    port: int = field(default_factory=free_port)
    inbox: Inbox = field(default_factory=Inbox)
    answer: threading.Event = field(default_factory=threading.Event)
    _controller: Controller | None = None

    def __post_init__(self) -> None:
        self.answer.set()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        inbox, answer = self.inbox, self.answer

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                message: Message = message_from_bytes(envelope.content)
                inbox.add((list(envelope.rcpt_tos), message))
                for _ in range(int(WAIT / 0.05)):
                    if answer.is_set():
                        break
                    await asyncio.sleep(0.05)
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def when(predicate: Callable[[], bool], step: Callable[[], object], *, limit: int = 200) -> None:
    """Run `step` until `predicate` holds (at most `limit` times): for in-process passes."""
    for _ in range(limit):
        if predicate():
            return
        step()
    raise AssertionError("the condition never held")
