"""Who may call each route of the HTTP API: the dependencies of security.py per kind of access, with the
error statuses the OpenAPI document declares for each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends

from distilshot.serve.http_errors import error_responses
from distilshot.serve.security import Caller, Security, access_dependencies

BODY = (408, 413)  # what a route that reads a request body may also answer


@dataclass(frozen=True)
class Access:
    """Route options (`dependencies`, `responses`) for reads, admin-only reads and writes."""

    read: Callable[..., Caller]
    admin: Callable[..., Caller]
    write: Callable[..., Caller]  # admin plus the write rate limit
    auth: tuple[int, ...]  # errors of any route behind keys
    writes: tuple[int, ...]  # errors of any write

    @classmethod
    def of(cls, security: Security) -> Access:
        read, admin, write = access_dependencies(security)
        auth = (401, 403) if security.keys is not None else ()
        # a cross-site write is a 403 with or without keys
        writes = (*auth, 403, 429) if security.writes_per_minute is not None else (*auth, 403)
        return cls(read, admin, write, auth, writes)

    def reading(self, *statuses: int, content: str | None = None) -> dict[str, Any]:
        return _options(self.read, (*self.auth, *statuses), content)

    def administering(self, *statuses: int, content: str | None = None) -> dict[str, Any]:
        return _options(self.admin, (*self.auth, *statuses), content)

    def writing(self, *statuses: int) -> dict[str, Any]:
        return _options(self.write, (*self.writes, *statuses), None)


def _options(
    dependency: Callable[..., Caller], statuses: tuple[int, ...], content: str | None
) -> dict[str, Any]:
    """`content`: the media type of a successful answer that is not JSON."""
    success = {} if content is None else {200: {"content": {content: {}}}}
    return {"dependencies": [Depends(dependency)], "responses": success | error_responses(*statuses)}
