"""Running the HTTP service for tests: in a thread of the test process, or as a `distilshot serve`
subprocess, always on a free loopback port, always over real HTTP."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from PIL import Image

from distilshot.serve.http_server import listen

STARTUP_TIMEOUT_S = 120  # the CPU may be shared; a server that is not up by then has failed


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """Serves `app` from a thread on a free loopback port; yields its base URL."""
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class ServerProcess:
    """`distilshot serve ... --port 0` in a subprocess; `url` is read from its first line of output (a
    server listening on every interface is reached on 127.0.0.1)."""

    def __init__(self, *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        command = [str(Path(sys.executable).parent / "distilshot"), "serve", "--port", "0", *map(str, args)]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        self.output: list[str] = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line:
                raise AssertionError(f"the server exited: {''.join(self.output)}")
            self.output.append(line)
            found = re.search(r"on http://(127\.0\.0\.1|0\.0\.0\.0):(\d+)", line)
            if found:
                self.url = f"http://127.0.0.1:{found.group(2)}"
                # keep reading: the server logs every request, and a full pipe would block it
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return
        raise AssertionError(f"the server did not start: {''.join(self.output)}")

    def _drain(self) -> None:
        for line in self.process.stdout or ():
            self.output.append(line)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._drainer.join(timeout=30)  # the pipe ends with the process
        if self.process.stdout:
            self.process.stdout.close()


def png(rgb: tuple[int, int, int], size: tuple[int, int] = (20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, "PNG")
    return buffer.getvalue()


def files(*images: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart `images` fields for httpx."""
    return [("images", (name, data, "application/octet-stream")) for name, data in images]


def file_data(path: str | Path) -> dict[str, object]:
    """A Gradio FileData value naming `path`, as an API client sends it."""
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def gradio_call(
    client: httpx.Client, api_name: str, data: list[object], prefix: str = "/demo"
) -> tuple[str, Any]:
    """Calls a demo event through Gradio's HTTP API; returns the final event ("complete" or "error")
    and its data."""
    r = client.post(f"{prefix}/gradio_api/call/{api_name}", json={"data": data})
    assert r.status_code == 200, r.text
    stream = client.get(f"{prefix}/gradio_api/call/{api_name}/{r.json()['event_id']}").text
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, flags=re.MULTILINE)
    final = [(event, json.loads(payload)) for event, payload in events if event in ("complete", "error")]
    assert final, stream
    return final[-1]
