"""What a method costs per training step, relative to joint training, measured in the calling process.

`step_cost(configs)` trains each config for a few epochs with the real training loop (`inforeg.train`, no
cache), one after another in interleaved rounds, so that machine noise hits every method alike, and reads
each epoch's time for the window rule, the method's per-epoch work and the training steps (not the
evaluation): on a CPU the training thread's CPU time (`train_cpu_seconds`, with one thread), which other
processes on the machine do not inflate, on a GPU the wall time (`train_seconds`). Per round and method it takes the median over the measured epochs divided by the number of
steps; the result is the median over rounds, and the ratio to the reference divides within each round.

This is a measurement of the whole pipeline at the notebooks' own shapes. For a single step under tighter
control (warm-up, one thread, peak memory, the per-sample references) use `benchmarks/step_cost.py`.
"""
from __future__ import annotations

import importlib
import math
import statistics
from typing import Mapping

import torch

from .config import RunConfig, with_overrides


def step_cost(configs: Mapping[str, RunConfig], reference: str, epochs: int = 3, rounds: int = 3,
              threads: int = 1) -> dict[str, dict[str, float]]:
    """{name: {"ms_per_step", "ratio", "ratio_low", "ratio_high"}} for each config, measured over `rounds`
    (`ms_per_step` is CPU time on a CPU with one thread, else wall time).

    Every config trains for `epochs` epochs (the first, which pays for one-time set-up, is not measured).
    `ratio` is the median over rounds of the method's time per step divided by the reference's in the same
    round; `ratio_low`/`ratio_high` are the lowest and highest of those per-round ratios."""
    from .config import resolve_device

    training = importlib.import_module(".train", __package__)  # the module (inforeg.train is the function)

    if reference not in configs:
        raise KeyError(f"step_cost: the reference {reference!r} is not one of the configs {list(configs)}")
    if epochs < 2:
        raise ValueError(f"step_cost: needs epochs >= 2 (the first is warm-up), got {epochs}")
    if rounds < 1:
        raise ValueError(f"step_cost: needs rounds >= 1, got {rounds}")
    short = {name: with_overrides(cfg, {"epochs": epochs}) for name, cfg in configs.items()}
    names = list(short)
    on_cpu = all(resolve_device(cfg.device) == "cpu" for cfg in short.values())
    clock = "train_cpu_seconds" if on_cpu and threads == 1 else "train_seconds"
    per_round: dict[str, list[float]] = {name: [] for name in names}
    old_threads, probe = torch.get_num_threads(), training.linear_probe
    torch.set_num_threads(threads)
    # The last epoch's linear probe is not part of a step and these results are thrown away: skip it.
    training.linear_probe = lambda model, splits, *args, **kwargs: {m: math.nan for m in splits.modalities}
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # start one further each round
            for name in order:
                result = training.train(short[name], progress=False)
                per_round[name].append(statistics.median(h[clock] / h["train_steps"]
                                                         for h in result.history[1:]))
    finally:
        torch.set_num_threads(old_threads)
        training.linear_probe = probe
    out = {}
    for name in names:
        ratios = [t / ref for t, ref in zip(per_round[name], per_round[reference])]
        out[name] = {"ms_per_step": 1000 * statistics.median(per_round[name]), "ratio": statistics.median(ratios),
                     "ratio_low": min(ratios), "ratio_high": max(ratios)}
    return out
