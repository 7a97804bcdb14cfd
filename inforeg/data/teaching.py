"""Teaching datasets: generated multimodal classification whose information per modality is set by knobs.

Each modality m draws unit-length Gaussian class prototypes P_m (one row per class) and gives
    x_m = amplitude * (scale * P_m[y] * informative + noise),  noise ~ N(0, I),
where `informative` is 1 on a random `informative_frac` of the samples (and only for the classes in
`informative_classes`), else 0: there the modality is pure noise. ../shared/TEACHING.md has the measurements.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .base import Splits, TensorDataset


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    dim: int = 256
    scale: float = 1.0  # signal scale s
    informative_frac: float = 1.0  # fraction of samples on which the modality carries its class
    amplitude: float = 1.0  # input amplitude g
    informative_classes: tuple[int, ...] | None = None  # None: every class


@dataclass(frozen=True)
class TeachingSpec:
    modalities: tuple[ModalitySpec, ...]
    num_classes: int = 10
    n_train: int = 2000
    n_test: int = 2000


# Two modalities (TEACHING.md "R2"): A learns fast and dominates joint training; B alone is nearly as good.
TEACHING = TeachingSpec((
    ModalitySpec("A", scale=4.0, informative_frac=0.8),
    ModalitySpec("B", scale=2.5, amplitude=0.7),
))

# Three modalities (TEACHING.md "T4"): A dominates because it learns fastest, not because it is best.
TEACHING3 = TeachingSpec((
    ModalitySpec("A", scale=4.0, informative_frac=0.7),
    ModalitySpec("B", scale=2.5, amplitude=0.7),
    ModalitySpec("C", scale=3.0, amplitude=0.6, informative_classes=(0, 1, 2, 3, 4)),
))

SPECS = {"teaching": TEACHING, "teaching3": TEACHING3}


def with_knobs(spec: TeachingSpec, **knobs: tuple | None) -> TeachingSpec:
    """Override per-modality knobs: `with_knobs(TEACHING, amplitude=(1.0, 0.3))`; None keeps the default."""
    mods = list(spec.modalities)
    for knob, values in knobs.items():
        if values is None:
            continue
        if len(values) != len(mods):
            raise ValueError(f"{knob} needs {len(mods)} values (one per modality "
                             f"{[m.name for m in mods]}), got {len(values)}")
        mods = [replace(m, **{knob: v}) for m, v in zip(mods, values)]
    for m in mods:
        if not 0.0 <= m.informative_frac <= 1.0:
            raise ValueError(f"modality {m.name}: informative_frac must be in [0, 1], got {m.informative_frac}")
        if m.dim < 1:
            raise ValueError(f"modality {m.name}: dim must be positive, got {m.dim}")
    return replace(spec, modalities=tuple(mods))


def _draw(spec: TeachingSpec, protos: dict[str, torch.Tensor], n: int, g: torch.Generator) -> TensorDataset:
    y = torch.randint(spec.num_classes, (n,), generator=g)
    inputs = {}
    for m in spec.modalities:
        informative = (torch.rand(n, generator=g) < m.informative_frac).float()
        if m.informative_classes is not None:
            informative = informative * torch.isin(y, torch.tensor(m.informative_classes)).float()
        noise = torch.randn(n, m.dim, generator=g)
        signal = m.scale * protos[m.name][y] * informative[:, None]
        inputs[m.name] = m.amplitude * (signal + noise)
    return TensorDataset(inputs, y)


def generate(spec: TeachingSpec = TEACHING, seed: int = 0, n_val: int = 0) -> Splits:
    """Draw prototypes, then train (+ validation) and test samples, all from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    protos = {}
    for m in spec.modalities:
        p = torch.randn(spec.num_classes, m.dim, generator=g)
        protos[m.name] = p / p.norm(dim=1, keepdim=True)
    train = _draw(spec, protos, spec.n_train, g)
    test = _draw(spec, protos, spec.n_test, g)
    val = _draw(spec, protos, n_val, g) if n_val > 0 else None
    return Splits(train, test, spec.num_classes, val)
