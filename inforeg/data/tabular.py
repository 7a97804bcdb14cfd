"""TAB1: a small, noisy tabular task that mimics multi-omics (../shared/TEACHING.md, "TAB1").

Five classes with priors 0.30 / 0.25 / 0.20 / 0.15 / 0.10 and three modalities ("omics"). In modality m a
sample of class y is

    x = mu_m[y] + L_m u + sigma_m * e,    u ~ N(0, I_rank),  e ~ N(0, I_dim)

* mu_m (class means): only the first `informative` features carry class information, and only for the
  classes in `classes`. Informative feature j is a *marker* of class classes[j % len(classes)]: in that
  class its mean is shifted by `effect` (the sign, up or down, drawn once per feature); every other class has
  mean 0 there. Classes outside `classes` all look alike in this modality.
* L_m u: a rank-`nuisance_rank` nuisance term ("batch effects"), one latent u per sample and modality, L_m
  with N(0, nuisance_scale^2 / rank) entries so that each feature gets nuisance variance nuisance_scale^2 on
  average (2^2 by default: the nuisance dominates every feature's variance, as batch effects do in real
  omics, and a network must learn to look past it). Modalities draw independent u, so they are independent
  given the label; `shared_factors` > 0 adds that many latent factors shared by all modalities (e.g. a
  patient's tumour purity), and then they are not.
* sigma_m: uneven per-feature noise, standard deviations log-uniform in [noise_low, noise_high] = [0.2, 0.8].

Defaults (TAB1): mRNA 200 features, the first 30 markers of classes 0-2 (effect 0.8); methylation 100, the
first 20 markers of classes 2-4 (effect 0.6); miRNA 50, the first 10 markers of all five classes (effect
0.4). 350 train and 150 test samples, with class counts as close to the priors as integers allow
(largest remainder), shuffled; a validation split of `n_val` samples when asked; and a `population` of
4,000 more samples from the same generator, for test numbers that do not depend on which 150 test patients
one happened to draw. Every split is standardised with the mean and standard deviation of the train split.

Seeding: the generator's parameters (marker signs, L_m, sigma_m) and each split are drawn from their own
numpy streams of `seed`, so changing one split's size (e.g. n_val) leaves the other splits unchanged.
`load(data_cfg, seed)` gives the `Splits` the training loop uses (its test split stays the 150 test samples);
`population(data_cfg, seed)` gives the population split, standardised like the others.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .base import Splits, TensorDataset

# the numpy stream of each part of the generator (np.random.default_rng([seed, stream]))
_STREAMS = {"params": 0, "train": 1, "test": 2, "val": 3, "population": 4}


@dataclass(frozen=True)
class OmicSpec:
    name: str
    dim: int  # features
    informative: int  # the first `informative` features are class markers
    classes: tuple[int, ...]  # the classes these markers separate (the others all look alike)
    effect: float  # marker shift of the class mean (same units as the noise and nuisance scales)
    nuisance_rank: int = 5  # rank of the nuisance term L u
    nuisance_scale: float = 2.0  # root-mean-square standard deviation of the nuisance term per feature
    noise_low: float = 0.2  # per-feature noise standard deviations are log-uniform in [noise_low, noise_high]
    noise_high: float = 0.8


@dataclass(frozen=True)
class TabularSpec:
    omics: tuple[OmicSpec, ...]
    priors: tuple[float, ...] = (0.30, 0.25, 0.20, 0.15, 0.10)
    n_train: int = 350
    n_test: int = 150
    n_population: int = 4000
    shared_factors: int = 0  # latent factors shared by all modalities (0: independent given the label)

    @property
    def num_classes(self) -> int:
        return len(self.priors)


TAB1 = TabularSpec((
    OmicSpec("mRNA", dim=200, informative=30, classes=(0, 1, 2), effect=0.8),
    OmicSpec("methylation", dim=100, informative=20, classes=(2, 3, 4), effect=0.6),
    OmicSpec("miRNA", dim=50, informative=10, classes=(0, 1, 2, 3, 4), effect=0.4),
))

SPECS = {"tabular": TAB1}


def check(spec: TabularSpec) -> TabularSpec:
    """Return spec, or raise ValueError naming the knob that makes no sense."""
    p = np.asarray(spec.priors, dtype=float)
    if len(p) < 2 or (p <= 0).any() or abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"priors must be at least two positive numbers summing to 1, got {spec.priors}")
    if spec.n_train < 2 or spec.n_test < 1 or spec.n_population < 1:
        raise ValueError(f"needs n_train >= 2 (it sets the standardisation), n_test and n_population >= 1, got "
                         f"{spec.n_train}, {spec.n_test}, {spec.n_population}")
    if spec.shared_factors < 0:
        raise ValueError(f"shared_factors must be >= 0, got {spec.shared_factors}")
    for o in spec.omics:
        if not 0 <= o.informative <= o.dim:
            raise ValueError(f"omic {o.name}: informative must be in [0, dim={o.dim}], got {o.informative}")
        if any(not 0 <= c < spec.num_classes for c in o.classes) or not o.classes:
            raise ValueError(f"omic {o.name}: classes must be in 0..{spec.num_classes - 1}, got {o.classes}")
        if not 0 < o.noise_low <= o.noise_high:
            raise ValueError(f"omic {o.name}: needs 0 < noise_low <= noise_high, got {o.noise_low}, {o.noise_high}")
        if o.nuisance_rank < 0 or o.nuisance_scale < 0:
            raise ValueError(f"omic {o.name}: nuisance_rank and nuisance_scale must be >= 0")
    return spec


def class_counts(n: int, priors) -> np.ndarray:
    """Per class, n * prior rounded so that the counts sum to n (largest remainder; ties: lower class)."""
    exact = n * np.asarray(priors, dtype=float)
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def _params(spec: TabularSpec, seed: int) -> dict:
    """The generator's parameters per modality: class means, nuisance loadings, noise standard deviations."""
    rng = np.random.default_rng([seed, _STREAMS["params"]])
    params = {}
    for o in spec.omics:
        mu = np.zeros((spec.num_classes, o.dim))
        signs = rng.choice([-1.0, 1.0], size=o.informative)
        for j in range(o.informative):
            mu[o.classes[j % len(o.classes)], j] = o.effect * signs[j]
        rank = o.nuisance_rank + spec.shared_factors
        loadings = rng.normal(0.0, o.nuisance_scale / np.sqrt(max(rank, 1)), size=(o.dim, rank))
        sigma = np.exp(rng.uniform(np.log(o.noise_low), np.log(o.noise_high), size=o.dim))
        params[o.name] = (mu, loadings, sigma)
    return params


def _draw(spec: TabularSpec, params: dict, n: int, seed: int, stream: str) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng([seed, _STREAMS[stream]])
    y = rng.permutation(np.repeat(np.arange(spec.num_classes), class_counts(n, spec.priors)))
    shared = rng.normal(size=(n, spec.shared_factors))
    xs = {}
    for o in spec.omics:
        mu, loadings, sigma = params[o.name]
        u = np.concatenate([rng.normal(size=(n, o.nuisance_rank)), shared], axis=1)
        xs[o.name] = mu[y] + u @ loadings.T + sigma * rng.normal(size=(n, o.dim))
    return xs, y


def generate(spec: TabularSpec = TAB1, seed: int = 0, n_val: int = 0) -> tuple[Splits, TensorDataset]:
    """(train / test / optional validation splits, population), all standardised on the train split."""
    check(spec)
    params = _params(spec, seed)
    raw = {k: _draw(spec, params, n, seed, k) for k, n in
           (("train", spec.n_train), ("test", spec.n_test), ("val", n_val), ("population", spec.n_population))
           if n > 0}
    train_x = raw["train"][0]
    stats = {m: (x.mean(0), np.maximum(x.std(0), 1e-8)) for m, x in train_x.items()}

    def dataset(key: str) -> TensorDataset:
        xs, y = raw[key]
        return TensorDataset({m: torch.as_tensor((x - stats[m][0]) / stats[m][1], dtype=torch.float32)
                              for m, x in xs.items()}, torch.as_tensor(y, dtype=torch.long))

    val = dataset("val") if n_val > 0 else None
    splits = Splits(dataset("train"), dataset("test"), spec.num_classes, val)
    return splits, dataset("population")


_TEACHING_KNOBS = ("dim", "scale", "informative_frac", "amplitude")


def _from_config(data_cfg, run_seed: int) -> tuple[Splits, TensorDataset]:
    knobs = [k for k in _TEACHING_KNOBS if getattr(data_cfg, k) is not None]
    if knobs:
        raise ValueError(f"data.{knobs[0]} applies to the teaching datasets only, not to {data_cfg.name} "
                         "(its knobs are in inforeg.data.tabular.TabularSpec)")
    seed = run_seed if data_cfg.seed is None else data_cfg.seed
    sizes = {k: v for k, v in (("n_train", data_cfg.n_train), ("n_test", data_cfg.n_test)) if v is not None}
    splits, pop = generate(replace(SPECS[data_cfg.name], **sizes), seed=seed, n_val=data_cfg.n_val)
    if data_cfg.modalities is not None:
        splits, pop = splits.select(tuple(data_cfg.modalities)), pop.select(tuple(data_cfg.modalities))
    return splits, pop


def load(data_cfg, run_seed: int) -> Splits:
    """The train / test (/ validation) splits of a `DataConfig` naming a tabular dataset."""
    return _from_config(data_cfg, run_seed)[0]


def population(data_cfg, run_seed: int) -> TensorDataset:
    """The population split of the same run (4,000 samples, standardised with the train split's statistics):
    `population(cfg.data, cfg.seed)`; evaluate a trained model on it with `inforeg.train.evaluate`."""
    return _from_config(data_cfg, run_seed)[1]
