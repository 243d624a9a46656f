"""The web app (examples/web_app) as a browser opens it: serve.mjs serving a folder with the app and a
bundle side by side, and the headless Chromium (Debian's) that loads it. Shared by the browser tests
(tests/test_web_app.py) and the edge benchmark (bench/bench_edge.py)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WEB_APP = Path(__file__).resolve().parents[1] / "examples" / "web_app"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]


@contextmanager
def served_web_app(bundle: Path, folder: Path) -> Iterator[str]:
    """serve.mjs on a free port, serving `folder`/site with the app (a link to examples/web_app) and the
    bundle beside it; yields the URL of the page with ?bundle= pointing at it."""
    site = folder / "site"
    site.mkdir()
    (site / "app").symlink_to(WEB_APP, target_is_directory=True)
    (site / "bundle").symlink_to(bundle, target_is_directory=True)
    server = subprocess.Popen(
        ["node", str(WEB_APP / "serve.mjs"), "--port", "0", "--root", str(site)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = server.stdout.readline() if server.stdout else ""
        match = re.search(r"at (http://\S+/)$", first.strip())
        if match is None:
            raise RuntimeError(f"serve.mjs did not say where it serves: {first!r}")
        yield f"{match.group(1)}app/?bundle=../bundle/"
    finally:
        server.terminate()
        server.wait(timeout=10)
