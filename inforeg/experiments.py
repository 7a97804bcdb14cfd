"""Named groups of runs that several notebooks share, so that they ask the cache for the very same configs.

Every function takes the notebook parameters (profile, device, overrides) and returns configs; the
notebook then calls `get_or_run_grid` (or `runs.get_or_run_all`) on them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .config import PROFILES, ConfigError, RunConfig, make_config
from .data import REAL, SPECS
from .data.mosi import MODALITIES as MOSI_MODALITIES
from .data.tabular import TAB1
from .runs import get_or_run_all


def _names(specs) -> tuple[str, ...]:
    return tuple(spec.name for spec in specs)


# What each dataset is, for the notebooks: its modalities in model order, the one that leads joint training
# (the paper's audio) and the one it suppresses (the paper's video). Three-modality sets name the modality
# that leads and the weakest one alone.
DATASETS: dict[str, dict[str, Any]] = {
    "teaching": {"modalities": _names(SPECS["teaching"].modalities), "lead": "A", "weak": "B",
                 "title": "teaching data (A plays audio, B plays video)"},
    "teaching3": {"modalities": _names(SPECS["teaching3"].modalities), "lead": "A", "weak": "C",
                  "title": "three-modality teaching data"},
    "tabular": {"modalities": _names(TAB1.omics), "lead": "mRNA", "weak": "miRNA",
                "title": "TAB1, small noisy three-omics data"},
    "cremad": {"modalities": ("audio", "visual"), "lead": "audio", "weak": "visual", "title": "CREMA-D"},
    "kinetics_sounds": {"modalities": ("audio", "visual"), "lead": "audio", "weak": "visual",
                        "title": "Kinetics-Sounds"},
    "mosi": {"modalities": MOSI_MODALITIES, "lead": "text", "weak": "vision", "title": "CMU-MOSI"},
}
# The dataset a notebook studies when it does not name one: teaching data on a CPU, CREMA-D in the full profile.
PROFILE_DATASET = {"ci": "teaching", "full": "cremad"}


def _dataset(dataset: str | None, profile: str) -> str:
    return dataset or PROFILE_DATASET.get(profile, "teaching")


@dataclass(frozen=True)
class Study:
    """What a notebook studies under a profile: the dataset, its modalities, and which leads.

    The notebooks are written for any of them: they say `study.lead` and `study.weak` where the teaching
    data's story says A and B, so the same cells draw CREMA-D's audio and video in the full profile."""

    profile: str
    dataset: str
    modalities: tuple[str, ...]
    lead: str
    weak: str
    title: str

    @property
    def real(self) -> bool:
        return self.dataset in REAL

    def announce(self) -> None:
        """In any profile but `ci`, say what the run studies and that the prose describes the ci outputs.
        (Nothing in `ci`: the stored outputs stay as they are.)"""
        if self.profile == "ci":
            return
        print(f"profile {self.profile!r}: {self.title}; modalities {', '.join(self.modalities)}; "
              f"{self.lead} is expected to lead, {self.weak} to be suppressed.\n"
              "The text between the cells describes the stored outputs of the ci profile (teaching data on a "
              "CPU); the numbers and figures of this run are those printed and drawn by the cells.")


def study(profile: str = "ci", dataset: str | None = None) -> Study:
    """The notebooks' setting: `dataset` (None: the profile's, teaching for ci and cremad for full)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    name = _dataset(dataset, profile)
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if (name in REAL) != (profile == "full"):
        what = "real datasets need the full profile" if name in REAL else "the full profile is for real datasets"
        raise ConfigError(f"dataset {name!r} with profile {profile!r}: {what} ({', '.join(REAL)})")
    d = DATASETS[name]
    return Study(profile, name, d["modalities"], d["lead"], d["weak"], d["title"])


def over_seeds(method: str = "joint", seeds: Iterable[int] = range(5), dataset: str | None = None,
               preset: str = "paper", profile: str = "ci", device: str = "cpu",
               overrides: Mapping[str, Any] | None = None, **fields: Any) -> list[RunConfig]:
    """One config per seed. `dataset` None: the profile's (`study`). `fields` are extra config keys with `__`
    for the dot (`data__modalities=("B",)`); they win over `overrides`."""
    dataset = _dataset(dataset, profile)
    extra = {k.replace("__", "."): v for k, v in fields.items()}
    return [make_config(dataset=dataset, method=method, preset=preset, seed=s, profile=profile, device=device,
                        overrides={**(overrides or {}), **extra}) for s in seeds]


def alone_joint_inforeg(seeds: Iterable[int] = range(5), dataset: str | None = None, **kwargs: Any
                        ) -> dict[str, list[RunConfig]]:
    """Each modality trained alone, joint training and InfoReg (paper preset), over seeds: the runs of
    00_quickstart, which later notebooks reuse from the cache. Keys: "<m> alone", "joint", "InfoReg"."""
    seeds = list(seeds)
    dataset = _dataset(dataset, kwargs.get("profile", "ci"))
    modalities = DATASETS[dataset]["modalities"]
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
