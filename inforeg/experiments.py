"""Named groups of runs that several notebooks share, so that they ask the cache for the very same configs.

Every function takes the notebook parameters (profile, device, overrides) and returns configs; the
notebook then calls `runs.get_or_run_all` on them.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from .config import RunConfig, make_config


def over_seeds(method: str = "joint", seeds: Iterable[int] = range(5), dataset: str = "teaching",
               preset: str = "paper", profile: str = "ci", device: str = "cpu",
               overrides: Mapping[str, Any] | None = None, **fields: Any) -> list[RunConfig]:
    """One config per seed. `fields` are extra config keys with `__` for the dot (`data__modalities=("B",)`);
    they win over `overrides`."""
    extra = {k.replace("__", "."): v for k, v in fields.items()}
    return [make_config(dataset=dataset, method=method, preset=preset, seed=s, profile=profile, device=device,
                        overrides={**(overrides or {}), **extra}) for s in seeds]


def alone_joint_inforeg(seeds: Iterable[int] = range(5), dataset: str = "teaching", **kwargs: Any
                        ) -> dict[str, list[RunConfig]]:
    """Each modality trained alone, joint training and InfoReg (paper preset), over seeds: the runs of
    00_quickstart, which later notebooks reuse from the cache. Keys: "<m> alone", "joint", "InfoReg"."""
    seeds = list(seeds)
    modalities = {"teaching": ("A", "B"), "teaching3": ("A", "B", "C")}[dataset]
    runs = {f"{m} alone": over_seeds("joint", seeds, dataset, data__modalities=(m,), **kwargs) for m in modalities}
    runs["joint"] = over_seeds("joint", seeds, dataset, **kwargs)
    runs["InfoReg"] = over_seeds("inforeg", seeds, dataset, **kwargs)
    return runs
