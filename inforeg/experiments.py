"""Named groups of runs that several notebooks share, so that they ask the cache for the very same configs.

Every function takes the notebook parameters (profile, device, overrides) and returns configs; the
notebook then calls `get_or_run_grid` (or `runs.get_or_run_all`) on them.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from .config import RunConfig, make_config
from .runs import get_or_run_all


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


def get_or_run_grid(grid: Any, desc: str = "runs", **kwargs: Any) -> Any:
    """`runs.get_or_run_all` over every config in `grid`, a RunConfig or a (nested) dict, list or tuple of
    them; returns the same structure with a RunResult in place of each config.

    All missing runs of the grid train in one call, so the worker processes stay busy until the whole grid is
    done (a call per group of 3 seeds leaves a worker idle and restarts the workers for every group).
    `kwargs` go to `get_or_run_all` (cache_dir, progress, workers)."""
    flat: list[RunConfig] = []

    def gather(node: Any) -> None:
        if isinstance(node, RunConfig):
            flat.append(node)
        elif isinstance(node, Mapping):
            for value in node.values():
                gather(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                gather(value)
        else:
            raise TypeError(f"get_or_run_grid: expected RunConfigs in dicts, lists or tuples, got {type(node).__name__}")

    gather(grid)
    results = iter(get_or_run_all(flat, desc=desc, **kwargs))

    def rebuild(node: Any) -> Any:
        if isinstance(node, RunConfig):
            return next(results)
        if isinstance(node, Mapping):
            return {key: rebuild(value) for key, value in node.items()}
        return type(node)(rebuild(value) for value in node)

    return rebuild(grid)
