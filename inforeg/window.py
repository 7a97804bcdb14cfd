"""Prime-learning-window rules: is the window open before epoch t, given the Tr F of earlier epochs?

Both rules take the per-epoch traces of one modality (oldest first, epochs 0..t-1) and return
(open, statistic). The statistic is the quantity compared with the threshold, for plots and logs.
"""
from __future__ import annotations

import math
from typing import Sequence


def paper_window(traces: Sequence[float], K: float = 0.04, min_epoch: int = 2) -> tuple[bool, float]:
    """Eq. 11: r = (T[t-1] - T[t-2]) / T[t-1]; open while r > K. Epochs before `min_epoch` (and any epoch
    with fewer than two traces) are never open."""
    t = len(traces)
    if t < max(min_epoch, 2):
        return False, math.nan
    last, before = traces[-1], traces[-2]
    if last <= 0:
        return False, math.nan
    r = (last - before) / last
    return r > K, r


def official_window(traces: Sequence[float], threshold: float = 0.05, span: int = 10) -> tuple[bool, float]:
    """The official code: the trace list starts with `span` zeros; k = (mean(L[-span:]) - mean(L[-span-1:-1]))
    / mean(L[-span:]), k = 1 while that mean is 0 (epoch 0); open while k > threshold."""
    padded = [0.0] * span + list(traces)
    recent = sum(padded[-span:]) / span
    if recent == 0:
        return 1.0 > threshold, 1.0
    previous = sum(padded[-span - 1:-1]) / span
    k = (recent - previous) / recent
    return k > threshold, k


def window_state(rule: str, traces: dict[str, list[float]], modalities: Sequence[str], K: float,
                 min_epoch: int, threshold: float, span: int, watch: str | None) -> dict[str, tuple[bool, float]]:
    """The window of every modality before the next epoch.

    `paper`: each modality's own rule on its own trace. `official`: one verdict for all, from the trace
    of `watch` (default: the first modality, the official code's audio).
    """
    epoch = len(traces[modalities[0]])
    if rule == "paper":
        return {m: paper_window(traces[m], K, min_epoch) for m in modalities}
    if rule == "official":
        watched = watch or modalities[0]
        if watched not in traces:
            raise ValueError(f"window.watch={watched!r} is not a modality of this run ({list(modalities)})")
        state = official_window(traces[watched], threshold, span)
        if epoch < min_epoch:
            state = (False, state[1])
        return {m: state for m in modalities}
    raise ValueError(f"unknown window rule {rule!r}; known: paper, official")


# Reading a run's history: in which epochs was the window open, or the modality regulated? (the notebooks' tables)

def epochs_on(history: Sequence[dict], key: str, m: str) -> list[int]:
    """The epochs whose record has `key` on for modality m: "window" (the prime learning window open) or
    "reg_frac" (at least one of the epoch's batches regulated)."""
    if key not in ("window", "reg_frac"):
        raise ValueError(f"epochs_on: key must be 'window' or 'reg_frac', got {key!r}")
    return [h["epoch"] for h in history if h[key][m] > 0]


def epoch_range(history: Sequence[dict], key: str, m: str) -> str:
    """The first and last of `epochs_on`, as "first-last" ("none" if there are none); gaps are not shown."""
    on = epochs_on(history, key, m)
    return f"{on[0]}-{on[-1]}" if on else "none"


def epoch_pattern(history: Sequence[dict], key: str, m: str) -> str:
    """One character per epoch. key "window": 'o' open, '.' closed. key "reg_frac": '#' regulated on at least
    half of the epoch's batches, '+' on fewer, '.' on none."""
    if key == "window":
        return "".join("o" if h["window"][m] else "." for h in history)
    if key == "reg_frac":
        return "".join("#" if h["reg_frac"][m] >= 0.5 else "+" if h["reg_frac"][m] > 0 else "." for h in history)
    raise ValueError(f"epoch_pattern: key must be 'window' or 'reg_frac', got {key!r}")
