"""The shared data types: an in-memory multimodal dataset, its splits, and the `Batch` every loader yields."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np
import torch
from torch import Tensor


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # so that it crosses process boundaries intact
        return DataError, (self.path, self.problem)


@dataclass
class Batch:
    """One mini-batch: a tensor per modality (same order as the dataset's `modalities`) and the labels."""

    inputs: dict[str, Tensor]
    labels: Tensor

    def to(self, device: str | torch.device) -> "Batch":
        return Batch({m: x.to(device, non_blocking=True) for m, x in self.inputs.items()},
                     self.labels.to(device, non_blocking=True))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TensorDataset:
    """Features per modality and integer labels, all in memory."""

    inputs: dict[str, Tensor]
    labels: Tensor

    def __post_init__(self) -> None:
        n = len(self.labels)
        for m, x in self.inputs.items():
            if len(x) != n:
                raise ValueError(f"modality {m!r} has {len(x)} samples but there are {n} labels")
            if not torch.isfinite(x).all():
                raise ValueError(f"modality {m!r} contains NaN or infinite values")
        if self.labels.dtype != torch.long:
            raise ValueError(f"labels must be integers, got {self.labels.dtype}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    def input_dims(self) -> dict[str, int]:
        """Size of each modality's feature axis (the last one): what its encoder takes in."""
        return {m: x.shape[-1] for m, x in self.inputs.items()}

    def subset(self, index: Tensor) -> "TensorDataset":
        return TensorDataset({m: x[index] for m, x in self.inputs.items()}, self.labels[index])

    def select(self, modalities: tuple[str, ...]) -> "TensorDataset":
        missing = [m for m in modalities if m not in self.inputs]
        if missing:
            raise ValueError(f"unknown modalities {missing}; this dataset has {list(self.inputs)}")
        return TensorDataset({m: self.inputs[m] for m in modalities}, self.labels)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Mini-batches in a fresh random order drawn from `generator`, or in order if it is None."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield Batch({m: x[idx] for m, x in self.inputs.items()}, self.labels[idx])


@dataclass
class Splits:
    """train / test (and an optional validation split for model selection), with the class count."""

    train: TensorDataset
    test: TensorDataset
    num_classes: int
    val: TensorDataset | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.train.modalities

    def select(self, modalities: tuple[str, ...]) -> "Splits":
        val = self.val.select(modalities) if self.val is not None else None
        return Splits(self.train.select(modalities), self.test.select(modalities), self.num_classes, val)

    def input_dims(self) -> dict[str, int]:
        """Per modality, what its encoder takes in: features (vectors, sequences) or channels (images)."""
        return self.train.input_dims()


def from_arrays(
    train: Mapping[str, np.ndarray | Tensor],
    train_labels: np.ndarray | Tensor,
    test: Mapping[str, np.ndarray | Tensor] | None = None,
    test_labels: np.ndarray | Tensor | None = None,
    test_fraction: float = 0.5,
    seed: int = 0,
) -> Splits:
    """Bring your own features: `{modality: (N, D) array}` and labels 0..C-1.

    Without a test set, a random `test_fraction` of the samples (drawn with `seed`) becomes the test split.
    """
    def tensors(arrays, labels, what):
        if not arrays:
            raise ValueError(f"{what}: give at least one modality")
        xs = {m: torch.as_tensor(np.asarray(a), dtype=torch.float32) for m, a in arrays.items()}
        y = torch.as_tensor(np.asarray(labels))
        if y.dtype.is_floating_point:
            if not torch.equal(y, y.round()):
                raise ValueError(f"{what}: labels must be integer class indices")
        y = y.long().reshape(-1)
        for m, x in xs.items():
            if x.ndim != 2:
                raise ValueError(f"{what}: modality {m!r} must be (samples, features), got shape {tuple(x.shape)}")
        return TensorDataset(xs, y)

    tr = tensors(train, train_labels, "train")
    if test is None:
        if test_labels is not None:
            raise ValueError("test_labels given without test features")
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(tr), generator=g)
        n_test = int(round(test_fraction * len(tr)))
        if not 0 < n_test < len(tr):
            raise ValueError(f"test_fraction={test_fraction} leaves an empty split of {len(tr)} samples")
        tr, te = tr.subset(order[n_test:]), tr.subset(order[:n_test])
    else:
        te = tensors(test, test_labels, "test")
        if te.modalities != tr.modalities:
            raise ValueError(f"test modalities {te.modalities} differ from train modalities {tr.modalities}")
    if tr.labels.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    num_classes = int(max(tr.labels.max(), te.labels.max())) + 1
    return Splits(tr, te, num_classes)
