"""CMU-MOSI: MulT-style pickles -> checked .npy cache -> three-modality splits with binary labels."""
from __future__ import annotations

import math
import pathlib
import pickle

import numpy as np
import pytest
import torch

from inforeg.config import make_config
from inforeg.data import DataError, load
from inforeg.data.mosi import prepare

DIMS = {"text": 300, "audio": 5, "vision": 20}
STEPS = {"text": 6, "audio": 9, "vision": 11}  # unaligned: a length per modality
SIZES = {"train": 12, "valid": 4, "test": 6}


def mult_dict(seed: int = 0) -> dict:
    """A dict like mosi_data_noalign.pkl: float32 sequences, (N, 1, 1) sentiment, byte-string ids, -inf in audio."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in SIZES.items():
        part = {m: rng.standard_normal((n, STEPS[m], d)).astype(np.float32) for m, d in DIMS.items()}
        part["audio"][0, 0, 0] = -np.inf
        part["labels"] = rng.uniform(-3, 3, (n, 1, 1)).astype(np.float32)
        part["labels"][0, 0, 0] = 0.0  # 0 counts as non-negative
        part["id"] = np.array([f"v{i}".encode() for i in range(n)])
        data[split] = part
    return data


def write_pickle(path: pathlib.Path, obj) -> pathlib.Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


@pytest.fixture(scope="module")
def mosi(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosi")
    data = mult_dict()
    prepare(write_pickle(root / "mosi_data_noalign.pkl", data), root / "cache", log=lambda s: None)
    return root / "cache", data


def test_splits_shapes_and_binary_labels(mosi):
    root, data = mosi
    splits = load(make_config(dataset="mosi", overrides={"data.root": str(root)}).data, 0)
    assert splits.modalities == ("text", "audio", "vision") and splits.num_classes == 2
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 6)
    own = load(make_config(dataset="mosi", method="gblending", overrides={"data.root": str(root)}).data, 0)
    assert (len(own.train), len(own.val)) == (12, 4)  # a method's data.n_val keeps MOSI's own validation split
    assert splits.input_dims() == DIMS
    assert splits.train.inputs["audio"].shape == (12, 9, 5)
    for ours, theirs in ((splits.train, "train"), (splits.val, "valid"), (splits.test, "test")):
        assert ours.labels.tolist() == (data[theirs]["labels"].reshape(-1) >= 0).astype(int).tolist()
        assert ours.labels[0] == 1
        assert ours.inputs["audio"][0, 0, 0] == 0  # -inf -> 0
        assert torch.equal(ours.inputs["text"], torch.from_numpy(data[theirs]["text"]))


def test_manifest_counts_replaced_infinities(mosi):
    import json

    manifest = json.loads((mosi[0] / "manifest.json").read_text())
    assert manifest["recipe"]["infinite_values_set_to_0"] == 3
    assert manifest["splits"]["val"]["steps"] == STEPS


def test_transformer_trains_one_epoch(mosi):
    """dataset=mosi picks the transformer encoders; one epoch on the CPU, with the validation split logged."""
    from inforeg.train import train

    cfg = make_config(dataset="mosi", method="joint", profile="full", device="cpu",
                      overrides={"data.root": str(mosi[0]), "epochs": 1, "optim.batch_size": 4})
    assert cfg.model.encoder == "transformer"
    result = train(cfg, progress=False)
    h = result.history[0]
    assert math.isfinite(h["train_loss"]) and "val_acc" in h and 0 <= h["test_f1"] <= 1


def _broken(kind):
    data = mult_dict()
    if kind == "nan":
        data["train"]["vision"][1, 2, 3] = np.nan
    elif kind == "shape":
        data["valid"]["text"] = data["valid"]["text"][:, :, 0]
    elif kind == "count":
        data["test"]["labels"] = data["test"]["labels"][:-1]
    elif kind == "dims":
        data["test"]["audio"] = np.zeros((6, 9, 7), np.float32)
    elif kind == "split":
        del data["valid"]
    elif kind == "key":
        del data["train"]["vision"]
    elif kind == "label":
        data["train"]["labels"][2] = 4.5
    return data


@pytest.mark.parametrize("kind, problem", [
    ("nan", "train/vision: 1 NaN values"), ("shape", "valid/text: expected numbers shaped"),
    ("count", "test/labels: shape (5, 1, 1)"), ("dims", "test/audio: 7 features"),
    ("split", "missing splits ['valid']"), ("key", "split 'train' lacks ['vision']"),
    ("label", "train/labels: sentiment must lie in [-3, 3]"),
])
def test_bad_pickles_are_named(tmp_path, kind, problem):
    path = write_pickle(tmp_path / "mosi_data.pkl", _broken(kind))
    with pytest.raises(DataError) as e:
        prepare(path, tmp_path / "cache", log=lambda s: None)
    assert str(path) in str(e.value) and problem in str(e.value)
    assert not (tmp_path / "cache" / "manifest.json").exists()


class _Payload:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    """The unpickler accepts numpy arrays and containers only: a pickled call is refused, never run."""
    marker = tmp_path / "ran"
    data = mult_dict()
    data["train"]["extra"] = _Payload(marker)
    path = write_pickle(tmp_path / "evil.pkl", data)
    with pytest.raises(DataError, match="refusing pathlib"):
        prepare(path, tmp_path / "cache", log=lambda s: None)
    assert not marker.exists()


def test_missing_and_unreadable_pickles(tmp_path):
    with pytest.raises(DataError, match="missing pickle file"):
        prepare(tmp_path / "nope.pkl", tmp_path / "cache", log=lambda s: None)
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps(mult_dict())[:500])
    with pytest.raises(DataError, match="unreadable pickle") as e:
        prepare(tmp_path / "cut.pkl", tmp_path / "cache", log=lambda s: None)
    assert "cut.pkl" in str(e.value)
    with pytest.raises(DataError, match="prepare mosi"):
        load(make_config(dataset="mosi", overrides={"data.root": str(tmp_path)}).data, 0)
