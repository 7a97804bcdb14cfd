"""inforeg: InfoReg (CVPR 2025) reproduced, with the prime learning window, exact Fisher information and
balanced-multimodal-learning baselines under one training loop."""
from __future__ import annotations

__version__ = "0.1.0"

from .config import ConfigError, RunConfig, make_config  # noqa: E402
from .train import RunResult, train  # noqa: E402

__all__ = ["ConfigError", "RunConfig", "make_config", "RunResult", "train", "get_or_run", "__version__"]


def get_or_run(cfg, **kwargs):
    """See `inforeg.runs.get_or_run`."""
    from .runs import get_or_run as _get_or_run

    return _get_or_run(cfg, **kwargs)
