"""Figures: one paper style, one colour per modality, deterministic files under figures/."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib as mpl
import seaborn as sns

from .paths import figures_dir

_PALETTE = sns.color_palette("colorblind")
# The teaching data's A, B, C take the colours of the roles they play: audio, video, text.
MODALITY_COLORS = {"A": _PALETTE[0], "B": _PALETTE[1], "C": _PALETTE[2], "audio": _PALETTE[0],
                   "video": _PALETTE[1], "visual": _PALETTE[1], "vision": _PALETTE[1], "text": _PALETTE[2],
                   "all": (0.35, 0.35, 0.35)}
METHOD_COLORS = {"joint": _PALETTE[7], "inforeg": _PALETTE[3], "alone": _PALETTE[4]}


def modality_color(name: str, index: int = 0):
    """The colour of a modality in every figure (falls back on the palette by position)."""
    return MODALITY_COLORS.get(name, _PALETTE[(index + 4) % len(_PALETTE)])


def set_paper_style() -> None:
    """Seaborn's paper context, TrueType fonts in PDFs, fixed SVG ids, modest inline resolution."""
    sns.set_theme(context="paper", style="ticks", palette="colorblind", rc={
        "figure.dpi": 100, "savefig.dpi": 200, "pdf.fonttype": 42, "ps.fonttype": 42,
        "svg.hashsalt": "inforeg", "figure.constrained_layout.use": True,
        "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
        "ytick.labelsize": 8,
    })


def savefig(fig, name: str, formats: Sequence[str] = ("png", "pdf"), folder: str | Path | None = None) -> list[Path]:
    """Save `fig` as figures/<name>.<fmt>, byte-identical between runs of the same matplotlib."""
    out = Path(folder) if folder is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    meta = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None},
            "svg": {"Date": None}}
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        with mpl.rc_context({"svg.hashsalt": "inforeg"}):
            fig.savefig(path, format=fmt, metadata=meta.get(fmt, {}))
        paths.append(path)
    return paths


def shade_window(ax, history: list[dict], modality: str, color=None, label: str | None = None,
                 key: str = "window", alpha: float = 0.15) -> None:
    """Shade the epochs in which `modality`'s window was open (key="window") or it was regulated
    (key="reg_frac", any batch)."""
    color = color if color is not None else modality_color(modality)
    spans, start = [], None
    for h in history:
        on = bool(h[key][modality])
        if on and start is None:
            start = h["epoch"]
        if not on and start is not None:
            spans.append((start, h["epoch"]))
            start = None
    if start is not None:
        spans.append((start, history[-1]["epoch"] + 1))
    for i, (a, b) in enumerate(spans):
        ax.axvspan(a - 0.5, b - 0.5, color=color, alpha=alpha, lw=0, label=label if i == 0 else None)


def plot_series(ax, results, key: str, modality: str | None = None, color=None, label: str | None = None,
                **kwargs) -> None:
    """Mean over runs (seeds) of a history field per epoch, with a band from the lowest to the highest run."""
    import numpy as np

    curves = np.array([r.series(key, modality) for r in results], dtype=float)
    epochs = np.arange(curves.shape[1])
    mean = curves.mean(0)
    ax.plot(epochs, mean, color=color, label=label, **kwargs)
    if len(curves) > 1:
        ax.fill_between(epochs, curves.min(0), curves.max(0), color=color, alpha=0.2, lw=0)
