"""Where scrapbench keeps what it can rebuild: synthetic datasets, validation results."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$SCRAPBENCH_CACHE`` or ``~/.cache/scrapbench``."""
    return Path(os.environ.get("SCRAPBENCH_CACHE") or Path.home() / ".cache" / "scrapbench")
