"""Running the HTTP service for tests: in a thread of the test process, or as a `distilshot serve`
subprocess, always on a free loopback port, always over real HTTP."""

from __future__ import annotations

import io
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

import uvicorn
from fastapi import FastAPI
from PIL import Image

from distilshot.demo.cli import listen

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
    """`distilshot serve ... --port 0` in a subprocess; `url` is read from its first line of output."""

    def __init__(self, *args: str | Path, cwd: Path | None = None) -> None:
        command = [str(Path(sys.executable).parent / "distilshot"), "serve", "--port", "0", *map(str, args)]
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        self.output: list[str] = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line:
                raise AssertionError(f"the server exited: {''.join(self.output)}")
            self.output.append(line)
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found.group(1)
                return
        raise AssertionError(f"the server did not start: {''.join(self.output)}")

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
        if self.process.stdout:
            self.process.stdout.close()


def png(rgb: tuple[int, int, int], size: tuple[int, int] = (20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, "PNG")
    return buffer.getvalue()


def files(*images: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart `images` fields for httpx."""
    return [("images", (name, data, "application/octet-stream")) for name, data in images]
