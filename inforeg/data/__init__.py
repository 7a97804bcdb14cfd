"""Datasets. Every loader returns `Splits` of datasets that yield `Batch`es: `TensorDataset` in memory
(teaching data, CMU-MOSI), `cache.CachedDataset` memory-mapped (CREMA-D, Kinetics-Sounds, prepared first)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .base import Batch, DataError, Splits, TensorDataset, from_arrays
from .teaching import SPECS, ModalitySpec, TeachingSpec, generate, with_knobs

__all__ = ["Batch", "DataError", "Splits", "TensorDataset", "from_arrays", "ModalitySpec", "TeachingSpec",
           "generate", "with_knobs", "load", "REAL", "data_root", "check_prepared", "is_synthetic"]

REAL = ("cremad", "kinetics_sounds", "mosi")  # prepared with `python -m inforeg prepare NAME ...`
_TEACHING_KNOBS = ("dim", "scale", "informative_frac", "amplitude")


def data_root(data_cfg) -> Path:
    """Where a real dataset's prepared cache is: `data.root`, else $INFOREG_DATA_DIR/<name> or data/<name>."""
    from ..paths import data_dir

    return Path(data_cfg.root) if data_cfg.root is not None else data_dir() / data_cfg.name


def check_prepared(name: str, root: str | Path) -> str:
    """One line on the prepared cache of a real dataset in `root` (its counts), or DataError naming what is
    missing: the folder, its manifest, or a file the manifest promises."""
    from .cache import FrameRecipe, read_manifest

    manifest = read_manifest(root, name)
    splits = _load_real_from(name, root, FrameRecipe())  # opens every array against the manifest
    sizes = ", ".join(f"{len(d)} {s}" for s, d in (("train", splits.train), ("val", splits.val),
                                                   ("test", splits.test)) if d is not None)
    note = "; SYNTHETIC: random content, for dry runs only" if is_synthetic(manifest) else ""
    return f"{sizes} in {root}{note}"


def is_synthetic(manifest: dict) -> bool:
    """Whether a prepared cache was written by `inforeg.data.synthetic` (random content) rather than from media."""
    return "synthetic" in manifest.get("recipe", {})


def _load_real_from(name: str, root: Path, recipe) -> Splits:
    if name == "mosi":
        from .mosi import load as load_mosi

        return load_mosi(root)
    from .cache import load_cache

    return load_cache(root, name, recipe)


def _load_real(data_cfg) -> Splits:
    from .cache import FrameRecipe

    return _load_real_from(data_cfg.name, data_root(data_cfg),
                           FrameRecipe(data_cfg.frames, data_cfg.image_size, test_pick=data_cfg.test_frames))


def _sized(splits: Splits, data_cfg, seed: int) -> Splits:
    """A real dataset cut to n_val (drawn from train), n_train and n_test samples, drawn with `seed`.
    A dataset with its own validation split (CMU-MOSI) keeps it whatever n_val says."""
    g = torch.Generator().manual_seed(seed)

    def draw(data, n: int, key: str):
        if not 0 < n <= len(data):
            raise ValueError(f"data.{key}={n}: the split has {len(data)} samples")
        return data.subset(torch.randperm(len(data), generator=g)[:n].sort().values)

    train, test, val = splits.train, splits.test, splits.val
    if data_cfg.n_val and val is None:
        if not 0 < data_cfg.n_val < len(train):
            raise ValueError(f"data.n_val={data_cfg.n_val}: the train split has {len(train)} samples")
        order = torch.randperm(len(train), generator=g)
        val = train.subset(order[:data_cfg.n_val].sort().values)
        train = train.subset(order[data_cfg.n_val:].sort().values)
    if data_cfg.n_train is not None:
        train = draw(train, data_cfg.n_train, "n_train")
    if data_cfg.n_test is not None:
        test = draw(test, data_cfg.n_test, "n_test")
    return Splits(train, test, splits.num_classes, val)


def load(data_cfg, run_seed: int) -> Splits:
    """The splits a `DataConfig` describes; the data seed defaults to the run's seed."""
    seed = run_seed if data_cfg.seed is None else data_cfg.seed
    if data_cfg.name == "tabular":  # TAB1; its population split: inforeg.data.tabular.population
        from .tabular import load as load_tabular

        return load_tabular(data_cfg, run_seed)
    if data_cfg.name in REAL:
        knobs = [k for k in _TEACHING_KNOBS if getattr(data_cfg, k) is not None]
        if knobs:
            raise ValueError(f"data.{knobs[0]} applies to the teaching datasets only, not to {data_cfg.name}")
        splits = _sized(_load_real(data_cfg), data_cfg, seed)
        return splits.select(tuple(data_cfg.modalities)) if data_cfg.modalities is not None else splits
    if data_cfg.name not in SPECS:
        raise ValueError(f"unknown dataset {data_cfg.name!r}; known: {', '.join((*SPECS, 'tabular', *REAL))}")
    spec = with_knobs(SPECS[data_cfg.name], dim=data_cfg.dim, scale=data_cfg.scale,
                      informative_frac=data_cfg.informative_frac, amplitude=data_cfg.amplitude)
    sizes = {k: v for k, v in (("n_train", data_cfg.n_train), ("n_test", data_cfg.n_test)) if v is not None}
    splits = generate(replace(spec, **sizes), seed=seed, n_val=data_cfg.n_val)
    if data_cfg.modalities is not None:
        splits = splits.select(tuple(data_cfg.modalities))
    return splits
