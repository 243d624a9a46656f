"""Wall time of training runs that may have been interrupted and resumed."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


def log_span(run: Path) -> float:
    """Wall time of a run (and of any stage folders under it) from its train logs: each training session
    (a log line "training ...") counts from its first to its last line, so the time between an
    interruption and the resume is not."""
    total = 0.0
    for log in run.rglob("train.log"):
        first = last = None
        for line in log.read_text().splitlines():
            if not line[:4].isdigit():
                continue
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            if first and " INFO training " in line:  # a new session: close the previous one
                total += (last - first).total_seconds()
                first = None
            first, last = first or stamp, stamp
        if first:
            total += (last - first).total_seconds()
    return total
