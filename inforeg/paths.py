"""Where results and figures go, independent of the working directory (papermill and nbval differ)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("INFOREG_ROOT", Path(__file__).resolve().parents[1]))


def cache_dir() -> Path:
    """The results cache: $INFOREG_CACHE_DIR, else <repo>/results/cache."""
    return Path(os.environ.get("INFOREG_CACHE_DIR", ROOT / "results" / "cache"))


def figures_dir() -> Path:
    """Saved figures: $INFOREG_FIG_DIR, else <repo>/figures."""
    return Path(os.environ.get("INFOREG_FIG_DIR", ROOT / "figures"))


def data_dir() -> Path:
    """Prepared real datasets, one folder each: $INFOREG_DATA_DIR, else <repo>/data."""
    return Path(os.environ.get("INFOREG_DATA_DIR", ROOT / "data"))
