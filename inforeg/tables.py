"""Tables of results: one row per run, and mean / spread over seeds."""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from .train import RunResult


def runs_frame(runs: Mapping[str, Sequence[RunResult]]) -> pd.DataFrame:
    """One row per run: name, seed, overall test accuracy, and per modality the split-head and probe
    accuracies (in %, after the last epoch)."""
    rows = []
    for name, results in runs.items():
        for r in results:
            row = {"run": name, "seed": r.config["seed"], "overall": 100 * r.test_acc}
            for m, a in r.test_acc_by_modality.items():
                row[f"{m} split"] = 100 * a
            for m, a in r.probe_acc_by_modality.items():
                row[f"{m} probe"] = 100 * a
            rows.append(row)
    return pd.DataFrame(rows)


def mean_std(frame: pd.DataFrame, by: str = "run", decimals: int = 1) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every numeric column, as 'mean ± std' strings, runs in
    their original order."""
    cols = [c for c in frame.columns if c not in (by, "seed")]
    order = list(dict.fromkeys(frame[by]))
    g = frame.groupby(by, sort=False)[cols]
    mean, std = g.mean().loc[order], g.std(ddof=0).loc[order]
    text = mean.round(decimals).astype(str) + " ± " + std.round(decimals).astype(str)
    return text.where(mean.notna(), "-")
