"""Session-wide test environment: real data from the shared read-only copy, never a download, and one
decoded-array cache for the whole run (and later runs) so each dataset is decoded only once. Set
DISTILSHOT_CACHE yourself to share your own cache instead; tests that need an empty cache use a tmp_path."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("DISTILSHOT_DATA", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("DISTILSHOT_CACHE", str(REPO / ".pytest_cache" / "distilshot-cache"))
os.environ["DISTILSHOT_OFFLINE"] = "1"
