"""One training process per run folder: `distilshot train` holds an exclusive flock on <run>/.lock while
it trains. The kernel drops the lock when the process ends, however it ends (kill -9 included), so a lock
file left behind by a dead process blocks nothing."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distilshot.errors import ConfigError

LOCK_FILE = ".lock"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Holds the run folder's lock for the block; raises ConfigError, naming the holder, if another
    process holds it."""
    with open(Path(run_dir) / LOCK_FILE, "a+") as handle:  # closing it releases the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(
                f"{run_dir} is being trained by {holder}; wait for it to finish, or stop it and then resume"
            ) from None
        handle.truncate(0)
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
