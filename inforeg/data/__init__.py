"""Datasets. Every loader returns `Splits` of `TensorDataset`s that yield `Batch`es."""
from __future__ import annotations

from dataclasses import replace

from .base import Batch, Splits, TensorDataset, from_arrays
from .teaching import SPECS, ModalitySpec, TeachingSpec, generate, with_knobs

__all__ = ["Batch", "Splits", "TensorDataset", "from_arrays", "ModalitySpec", "TeachingSpec", "generate",
           "with_knobs", "load"]


def load(data_cfg, run_seed: int) -> Splits:
    """The splits a `DataConfig` describes; the data seed defaults to the run's seed."""
    if data_cfg.name not in SPECS:
        raise ValueError(f"unknown dataset {data_cfg.name!r}; known: {', '.join(SPECS)}")
    spec = with_knobs(SPECS[data_cfg.name], dim=data_cfg.dim, scale=data_cfg.scale,
                      informative_frac=data_cfg.informative_frac, amplitude=data_cfg.amplitude)
    sizes = {k: v for k, v in (("n_train", data_cfg.n_train), ("n_test", data_cfg.n_test)) if v is not None}
    seed = run_seed if data_cfg.seed is None else data_cfg.seed
    splits = generate(replace(spec, **sizes), seed=seed, n_val=data_cfg.n_val)
    if data_cfg.modalities is not None:
        splits = splits.select(tuple(data_cfg.modalities))
    return splits
