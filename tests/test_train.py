"""The training loop's metrics: macro-F1, validation-based model selection, gradient cosines."""
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from inforeg import make_config, train
from inforeg.train import cosine_matrix, macro_f1


@pytest.mark.parametrize("seed", range(4))
def test_macro_f1_equals_scikit_learn(seed):
    """macro_f1 agrees with sklearn's f1_score(average='macro'), classes missing from one side included."""
    g = torch.Generator().manual_seed(seed)
    y, p = torch.randint(6, (300,), generator=g), torch.randint(8, (300,), generator=g)
    assert macro_f1(p, y) == pytest.approx(f1_score(y.numpy(), p.numpy(), average="macro"), abs=1e-12)


def test_macro_f1_of_a_perfect_and_a_constant_prediction():
    """1 for perfect predictions; predicting one class of two balanced ones gives (2/3 + 0) / 2."""
    y = torch.tensor([0, 0, 1, 1])
    assert macro_f1(y, y) == 1.0
    assert macro_f1(torch.zeros(4, dtype=torch.long), y) == pytest.approx(1 / 3)


def test_validation_split_selects_the_best_validation_epoch():
    """With data.n_val > 0 every epoch records val_acc and the result selects the epoch of best val_acc."""
    r = train(make_config(overrides={"epochs": 4, "data.n_train": 256, "data.n_test": 256, "data.n_val": 128}),
              progress=False)
    vals = [h["val_acc"] for h in r.history]
    best = int(np.argmax(vals))
    assert r.selected["epoch"] == best
    assert r.selected["test_acc"] == r.history[best]["test_acc"]
    assert r.test_f1 == r.history[-1]["test_f1"] and 0 < r.test_f1 <= 1


def test_cosine_matrix_of_orthogonal_and_parallel_gradients():
    """Orthogonal vectors give 0 off the diagonal, parallel ones 1, and the diagonal is 1."""
    e = torch.eye(3)
    assert cosine_matrix([e[0], e[1], 2 * e[0]]) == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
