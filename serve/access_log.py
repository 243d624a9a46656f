"""One line per HTTP request: client, method, path, status and latency, on the `distilshot.access`
logger. The query string and the headers (Authorization among them) are never read, so no key or other
secret a client sends reaches the log; control characters in the path are escaped, so a request cannot
write lines of its own."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGER = logging.getLogger("distilshot.access")


class AccessLog:
    """ASGI middleware logging each HTTP request as its answer ends: before the answer's last part is
    sent, so the line is written by the time a client has the whole answer (status 500 if none came)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status, logged = 500, False

        def log() -> None:
            nonlocal logged
            if not logged:
                LOGGER.info(access_line(scope, status, time.perf_counter() - start))
                logged = True

        async def send_and_log(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                log()
            await send(message)

        try:
            await self.app(scope, receive, send_and_log)
        finally:
            log()


def access_line(scope: Scope, status: int, seconds: float) -> str:
    client = scope.get("client")
    address = client[0] if client else "-"
    return f"{address} {scope['method']} {printable(scope['path'])} {status} {1000 * seconds:.1f} ms"


def printable(text: str) -> str:
    """`text` with every non-printable character (newlines, escapes) written as a Python escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
