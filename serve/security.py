"""What stands between the HTTP API (and the demo) and a hostile network: API keys with two scopes, a
Host allow-list (DNS rebinding), a cross-site check on state-changing requests (CSRF), limits on the
request body's size and arrival time, and a token-bucket rate limit on writes.

Keys are `scope:key` entries (scope `read` or `admin`; admin implies read), from a file or the
DISTILSHOT_API_KEYS variable, one per line or separated by commas; `#` starts a comment line. Only
their SHA-256 digests are kept, and a presented key is compared with every one of them in constant
time. Nothing here logs or echoes a key.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distilshot.errors import DistilshotError
from distilshot.serve.http_errors import error_response

KEYS_ENV = "DISTILSHOT_API_KEYS"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
SCOPES = ("read", "admin")
MIN_KEY_CHARS = 16
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_RATE_CLIENTS = 10_000  # buckets kept; the least recently used go first

ScopeName = Literal["read", "admin"]
_HOST_NAME = re.compile(r"\*|(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\]")
_KEY = re.compile(rf"[A-Za-z0-9._~+/=-]{{{MIN_KEY_CHARS},}}")  # RFC 6750 token characters


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The accepted keys and their scopes."""

    def __init__(self, entries: list[tuple[ScopeName, str]]) -> None:
        if not entries:
            raise DistilshotError("no API keys given")
        self._digests = [(scope, _digest(key)) for scope, key in entries]

    @classmethod
    def parse(cls, text: str, source: str) -> ApiKeys:
        """Keys from `scope:key` entries; errors name `source` and the entry, never the key."""
        entries: list[tuple[ScopeName, str]] = []
        seen: set[str] = set()
        items = [item.strip() for line in text.splitlines() for item in line.split(",")]
        for number, item in enumerate((i for i in items if i and not i.startswith("#")), start=1):
            scope, colon, key = item.partition(":")
            if not colon or scope not in SCOPES:
                raise DistilshotError(f"{source}, entry {number}: expected read:KEY or admin:KEY")
            if not _KEY.fullmatch(key):
                raise DistilshotError(
                    f"{source}, entry {number}: a key must be at least {MIN_KEY_CHARS} characters of "
                    "A-Z a-z 0-9 - . _ ~ + / ="
                )
            if key in seen:
                raise DistilshotError(f"{source}, entry {number}: the key is given twice")
            seen.add(key)
            entries.append((scope, key))  # type: ignore[arg-type]  # checked against SCOPES above
        if not entries:
            raise DistilshotError(f"{source} holds no API keys")
        return cls(entries)

    @classmethod
    def load(cls, file: Path | None, environ: Mapping[str, str]) -> ApiKeys | None:
        """Keys from `file` or from DISTILSHOT_API_KEYS in `environ` (not both), or None if neither."""
        value = environ.get(KEYS_ENV)
        if file is not None and value is not None:
            raise DistilshotError(f"give API keys with --api-keys or {KEYS_ENV}, not both")
        if file is not None:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise DistilshotError(f"cannot read the API key file {file}: {error}") from None
            return cls.parse(text, f"API key file {file}")
        return None if value is None else cls.parse(value, KEYS_ENV)

    def check(self, presented: str) -> tuple[ScopeName, int] | None:
        """(scope, key number) of a valid key, else None. Digests have one length, and every key is
        compared, so the time taken says nothing about which key, if any, came close."""
        digest = _digest(presented)
        found = None
        for number, (scope, known) in enumerate(self._digests):
            if hmac.compare_digest(digest, known) and found is None:
                found = (scope, number)
        return found

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self)} keys)"


def grants(scope: str, needed: ScopeName) -> bool:
    return scope == "admin" or scope == needed


@dataclass(frozen=True)
class Security:
    """The server's security settings; the defaults suit a loopback server without keys."""

    keys: ApiKeys | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # Host header names; "*" allows any
    cors_origins: tuple[str, ...] = ()  # origins allowed to read responses cross-site
    writes_per_minute: int | None = None  # per key (per client without keys); None: unlimited
    body_timeout_s: float | None = 120.0  # the whole request body must arrive within this

    def __post_init__(self) -> None:
        for origin in self.cors_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise DistilshotError(f"CORS origin {origin!r} must look like https://host[:port]")
        for host in self.allowed_hosts:
            if not _HOST_NAME.fullmatch(host):
                raise DistilshotError(
                    f"allowed host {host!r} must be a host name (*.example.com for subdomains), "
                    "an IP address ([::1] for IPv6) or *, without scheme or port"
                )
        if self.writes_per_minute is not None and self.writes_per_minute < 1:
            raise DistilshotError(
                f"the write limit must be at least 1 per minute, not {self.writes_per_minute}"
            )
        if self.body_timeout_s is not None and not self.body_timeout_s > 0:
            raise DistilshotError(f"the request timeout must be positive, not {self.body_timeout_s}")

    def host_allowed(self, host_header: str) -> bool:
        """Whether a Host header (name and optional port) names this server."""
        if "*" in self.allowed_hosts:
            return True
        host = host_header.strip().lower()
        name = host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]
        if not name:
            return False
        return any(
            name == allowed or (allowed.startswith("*.") and name.endswith(allowed[1:]))
            for allowed in self.allowed_hosts
        )

    def valid_bearer(self, headers: Headers) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return (
            self.keys is not None
            and scheme.lower() == "bearer"
            and self.keys.check(token.strip()) is not None
        )


class SiteGuard:
    """ASGI middleware refusing requests for other host names (400) and state-changing requests that a
    browser sent from another site without a key (403): an `Origin` other than the Host's own or an
    allowed CORS origin, or `Sec-Fetch-Site: cross-site | same-site` without an Origin."""

    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not self.security.host_allowed(host):
            detail = f"Host {host[:100]!r} is not a name of this server (see --allowed-host)"
            await error_response(400, detail, "InvalidHost")(scope, receive, send)
            return
        if scope["method"] in UNSAFE_METHODS and not self.security.valid_bearer(headers):
            refusal = self._cross_site(headers, host)
            if refusal is not None:
                await error_response(403, refusal, "CrossSiteRequest")(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _cross_site(self, headers: Headers, host: str) -> str | None:
        origin = headers.get("origin")
        if origin is not None:
            same = urlsplit(origin).netloc.lower() == host.lower() and origin != "null"
            if same or origin in self.security.cors_origins:
                return None
            return f"a state-changing request from origin {origin[:100]!r} needs an API key"
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "a state-changing request from another site needs an API key"
        return None


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the limit of {limit} bytes")


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"the request body did not arrive within {seconds:g} s")


class BodyLimits:
    """ASGI middleware limiting each request body by size (`limit_for(path)` bytes: a declared
    Content-Length is refused before anything is read, a streamed body when it passes the limit) and by
    time (all of it within `timeout_s`, against clients that trickle a body to hold a worker)."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], timeout_s: float | None) -> None:
        self.app = app
        self.limit_for = limit_for
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:  # h11 refuses a malformed one itself
            await error_response(413, BodyTooLarge(limit).detail)(scope, receive, send)
            return
        deadline = None if self.timeout_s is None else anyio.current_time() + self.timeout_s
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:  # after the body: waiting for a disconnect has no deadline
                return await receive()
            if deadline is None:
                message = await receive()
            else:
                with anyio.move_on_after(deadline - anyio.current_time()) as timer:
                    message = await receive()
                if timer.cancelled_caught:
                    raise BodyTimeout(self.timeout_s or 0)
            received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class RateLimiter:
    """Token buckets, one per caller: `per_minute` tokens at most, refilled at per_minute / 60 a second."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # who -> (tokens, when)
        self._lock = threading.Lock()

    def acquire(self, who: str) -> float:
        """Takes a token for `who`: 0 if there was one, else the seconds until there is."""
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.pop(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[who] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > MAX_RATE_CLIENTS:
                self._buckets.popitem(last=False)
            return wait


@dataclass(frozen=True)
class Caller:
    scope: ScopeName
    identity: str  # whom the rate limit counts: a key's number, or the client's address without keys


BEARER = HTTPBearer(auto_error=False, description="an API key of scope read, or admin (which implies read)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def access_dependencies(security: Security) -> tuple[Callable[..., Caller], ...]:
    """FastAPI dependencies (read, admin, write): write is admin plus the rate limit. Without keys every
    caller is admin, and the OpenAPI document declares no security scheme."""
    limiter = None if security.writes_per_minute is None else RateLimiter(security.writes_per_minute)
    keys = security.keys

    def check(
        request: Request, credentials: HTTPAuthorizationCredentials | None, needed: ScopeName, limited: bool
    ) -> Caller:
        if keys is None:
            caller = Caller("admin", f"client {request.client.host if request.client else 'unknown'}")
        else:
            challenge = {"WWW-Authenticate": "Bearer"}
            if credentials is None:
                raise HTTPException(401, "this needs an API key: Authorization: Bearer KEY", challenge)
            found = keys.check(credentials.credentials)
            if found is None:
                raise HTTPException(401, "the API key is not valid", challenge)
            scope, number = found
            if not grants(scope, needed):
                raise HTTPException(403, f"this needs a key of scope {needed}; this one is {scope}")
            caller = Caller(scope, f"key {number}")
        wait = 0.0 if limiter is None or not limited else limiter.acquire(caller.identity)
        if wait > 0:
            seconds = str(math.ceil(wait))
            raise HTTPException(429, f"too many writes; retry in {seconds} s", {"Retry-After": seconds})
        return caller

    def dependency(needed: ScopeName, limited: bool) -> Callable[..., Caller]:
        if keys is None:

            def open_access(request: Request) -> Caller:
                return check(request, None, needed, limited)

            return open_access

        def keyed_access(request: Request, credentials: Credentials) -> Caller:
            return check(request, credentials, needed, limited)

        return keyed_access

    return dependency("read", False), dependency("admin", False), dependency("admin", True)
