"""CMU-MOSI (PAPER.md section 7, BASELINES.md A.3): a MulT-style pickle -> prepared .npy cache, read by `load`.

The pickle (`mosi_data.pkl` aligned, `mosi_data_noalign.pkl` unaligned) is a dict of splits `train`, `valid`,
`test`, each with `text` (N, L, 300), `audio` (N, L, 5), `vision` (N, L, 20) sequences and `labels` (N, 1, 1),
sentiment in [-3, 3]. Pickles can run code when loaded: `prepare` reads only the file the user names, with an
unpickler that accepts nothing but numpy arrays and plain containers, and writes plain .npy files that `load`
reads without pickle. Infinite values (the audio's -inf) become 0; NaN is an error. Labels: label >= 0 -> 1.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .base import DataError, Splits, TensorDataset
from .cache import FORMAT, MANIFEST, VERSION, open_array, read_manifest

NAME = "mosi"
MODALITIES = ("text", "audio", "vision")
SPLITS = {"train": "train", "valid": "val", "test": "test"}  # pickle key -> our split

# What a MulT pickle needs: numpy's array reconstruction, and bytes as Python 2 pickles encode them.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("collections", "OrderedDict"),
}


class _Refused(pickle.UnpicklingError):
    pass


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise _Refused(f"refusing {module}.{name}: a MulT pickle holds only numpy arrays, and "
                                         "anything else could run code")
        return super().find_class(module, name)


def read_pickle(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing pickle file")
    try:
        with open(path, "rb") as f:
            return _ArraysOnly(f, encoding="latin1").load()
    except _Refused as e:
        raise DataError(path, f"not loaded: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise DataError(path, f"unreadable pickle ({type(e).__name__}: {e})") from None


def check_splits(data, path: Path) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """{split: {modality: float32 (N, L, D), "labels": float32 (N,)}} with infinities set to 0, and how many
    were; DataError naming the split, key and problem for anything else (missing keys, shapes, NaN, labels)."""
    if not isinstance(data, dict):
        raise DataError(path, f"expected a dict of splits, got {type(data).__name__}")
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise DataError(path, f"missing splits {missing}; found {sorted(map(str, data))}")
    out, replaced, dims = {}, 0, {}
    for split in SPLITS:
        part = data[split]
        keys = [k for k in (*MODALITIES, "labels") if not isinstance(part, dict) or k not in part]
        if keys:
            raise DataError(path, f"split {split!r} lacks {keys}")
        arrays = {}
        for m in MODALITIES:
            x = np.asarray(part[m])
            if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
                raise DataError(path, f"{split}/{m}: expected numbers shaped (samples, steps, features), "
                                      f"got {x.dtype} {x.shape}")
            x = x.astype(np.float32)
            if np.isnan(x).any():
                raise DataError(path, f"{split}/{m}: {int(np.isnan(x).sum())} NaN values")
            inf = np.isinf(x)
            replaced += int(inf.sum())
            x[inf] = 0.0
            if dims.setdefault(m, x.shape[2]) != x.shape[2]:
                raise DataError(path, f"{split}/{m}: {x.shape[2]} features, other splits have {dims[m]}")
            arrays[m] = x
        y = np.asarray(part["labels"], dtype=np.float64)
        n = len(arrays[MODALITIES[0]])
        if y.size != n or y.shape[0] != n:
            raise DataError(path, f"{split}/labels: shape {y.shape}, expected ({n}, 1, 1)")
        y = y.reshape(n)
        if not np.isfinite(y).all() or (np.abs(y) > 3).any():
            raise DataError(path, f"{split}/labels: sentiment must lie in [-3, 3]")
        for m, x in arrays.items():
            if len(x) != n:
                raise DataError(path, f"{split}/{m}: {len(x)} samples, {MODALITIES[0]} has {n}")
        out[split] = arrays | {"labels": y.astype(np.float32)}
    return out, replaced


def prepare(raw: str | Path, out: str | Path, log: Callable[[str], None] = print) -> dict:
    """Convert the MulT pickle `raw` into .npy files in `out`; returns the manifest."""
    raw = Path(raw)
    splits, replaced = check_splits(read_pickle(raw), raw)
    return write_cache(splits, out, str(raw), replaced, log)


def write_cache(splits: dict[str, dict[str, np.ndarray]], out: str | Path, source: str, replaced: int = 0,
                log: Callable[[str], None] = print, synthetic: str | None = None) -> dict:
    """Write checked splits (`check_splits`) as the cache `load` reads; the manifest last. `synthetic` marks
    random stand-in content (inforeg.data.synthetic) in the recipe."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    for split, arrays in splits.items():
        for key, x in arrays.items():
            np.save(out / f"{SPLITS[split]}.{key}.npy", x)
    manifest = {
        "format": FORMAT, "version": VERSION, "dataset": NAME, "classes": ["negative", "non-negative"],
        "modalities": {m: {"shape": list(splits["train"][m].shape[1:]), "dtype": "float32"} for m in MODALITIES},
        "splits": {SPLITS[s]: {"samples": len(a["labels"]),
                               "label_counts": {"negative": int((a["labels"] < 0).sum()),
                                                "non-negative": int((a["labels"] >= 0).sum())},
                               "steps": {m: a[m].shape[1] for m in MODALITIES}} for s, a in splits.items()},
        "recipe": {"source": source, "infinite_values_set_to_0": replaced, "binary_label": "sentiment >= 0",
                   **({"synthetic": synthetic} if synthetic else {})},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    sizes = ", ".join(f"{v['samples']} {k}" for k, v in manifest["splits"].items())
    log(f"prepared {NAME}: {sizes} samples in {out} ({replaced} infinite values set to 0)")
    return manifest


def load(root: str | Path) -> Splits:
    """train / test / val (the pickle's `valid`) with binary labels; no pickle involved."""
    root = Path(root)
    manifest = read_manifest(root, NAME)

    def split(name: str) -> TensorDataset:
        n = manifest["splits"][name]["samples"]
        inputs = {}
        for m in MODALITIES:
            shape = (n, manifest["splits"][name]["steps"][m], manifest["modalities"][m]["shape"][-1])
            inputs[m] = torch.from_numpy(np.array(open_array(root / f"{name}.{m}.npy", shape, np.dtype(np.float32))))
        sentiment = np.array(open_array(root / f"{name}.labels.npy", (n,), np.dtype(np.float32)))
        return TensorDataset(inputs, torch.from_numpy((sentiment >= 0).astype(np.int64)))

    return Splits(split("train"), split("test"), 2, val=split("val"))
