"""TAB1, the small noisy tabular task (inforeg/data/tabular.py, ../shared/TEACHING.md "TAB1")."""
from __future__ import annotations

from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest
import torch

from inforeg import make_config
from inforeg.config import DataConfig
from inforeg.data import load
from inforeg.data.tabular import TAB1, class_counts, generate, population

PRIORS = (0.30, 0.25, 0.20, 0.15, 0.10)
DIMS = {"mRNA": 200, "methylation": 100, "miRNA": 50}
# modality: (informative features, the classes they separate)
MARKERS = {"mRNA": (30, (0, 1, 2)), "methylation": (20, (2, 3, 4)), "miRNA": (10, (0, 1, 2, 3, 4))}


@pytest.fixture(scope="module")
def default0():
    return generate(TAB1, seed=0, n_val=100)


def test_shapes_sizes_and_modalities(default0):
    """Three modalities of 200 / 100 / 50 features, 5 classes, 350 / 150 / n_val samples, population 4000."""
    splits, pop = default0
    assert splits.modalities == ("mRNA", "methylation", "miRNA") and splits.num_classes == 5
    assert splits.input_dims() == DIMS and pop.input_dims() == DIMS
    assert (len(splits.train), len(splits.test), len(splits.val), len(pop)) == (350, 150, 100, 4000)
    for ds in (splits.train, splits.test, splits.val, pop):
        assert ds.labels.dtype == torch.long
        assert all(x.dtype == torch.float32 for x in ds.inputs.values())
    assert generate(TAB1, seed=0)[0].val is None


def test_class_counts_follow_the_priors(default0):
    """Each split holds n * prior samples of a class, rounded by largest remainder to sum to n."""
    assert class_counts(350, PRIORS).tolist() == [105, 88, 70, 52, 35]
    assert class_counts(150, PRIORS).tolist() == [45, 38, 30, 22, 15]
    assert class_counts(4000, PRIORS).tolist() == [1200, 1000, 800, 600, 400]
    splits, pop = default0
    for ds in (splits.train, splits.test, splits.val, pop):
        counts = torch.bincount(ds.labels, minlength=5).numpy()
        assert counts.tolist() == class_counts(len(ds), PRIORS).tolist()
    assert not torch.equal(splits.train.labels, splits.train.labels.sort().values)  # shuffled


def _pairwise_t(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(features, 5, 5) two-sample t statistics of the class means."""
    t = np.zeros((x.shape[1], 5, 5))
    for a, b in combinations(range(5), 2):
        xa, xb = x[y == a], x[y == b]
        se = np.sqrt(xa.var(0) / len(xa) + xb.var(0) / len(xb))
        t[:, a, b] = t[:, b, a] = (xa.mean(0) - xb.mean(0)) / se
    return t


def test_markers_carry_exactly_their_classes():
    """With the nuisance switched off and many samples: informative feature j of a modality separates its
    marker class classes[j % len(classes)] from every other class, and nothing else differs between
    classes (in particular the classes a modality does not cover look alike in it)."""
    spec = replace(TAB1, n_train=20000, n_test=10, n_population=10,
                   omics=tuple(replace(o, nuisance_scale=0.0) for o in TAB1.omics))
    splits, _ = generate(spec, seed=1)
    y = splits.train.labels.numpy()
    for m, (k, classes) in MARKERS.items():
        t = np.abs(_pairwise_t(splits.train.inputs[m].numpy(), y))
        for j in range(DIMS[m]):
            expected = np.zeros((5, 5), dtype=bool)
            if j < k:
                c = classes[j % len(classes)]
                expected[c, :] = expected[:, c] = True
                expected[c, c] = False
            off = ~expected & ~np.eye(5, dtype=bool)
            assert (t[j][expected] > 8).all(), (m, j, t[j])
            assert (t[j][off] < 5).all(), (m, j, t[j])


def test_effect_sizes_order_the_modalities():
    """Without nuisance, the marker shift in train-standard-deviation units follows effect / noise:
    mRNA (0.8) > methylation (0.6) > miRNA (0.4) on average."""
    spec = replace(TAB1, n_train=20000, n_test=10, n_population=10,
                   omics=tuple(replace(o, nuisance_scale=0.0) for o in TAB1.omics))
    splits, _ = generate(spec, seed=2)
    y = splits.train.labels.numpy()
    shift = {}
    for m, (k, classes) in MARKERS.items():
        x = splits.train.inputs[m].numpy()
        shift[m] = np.mean([abs(x[y == classes[j % len(classes)], j].mean() - x[y != classes[j % len(classes)], j]
                                .mean()) for j in range(k)])
    assert shift["mRNA"] > shift["methylation"] > shift["miRNA"] > 0.3, shift


def test_nuisance_is_rank_five_and_independent_across_modalities():
    """Within a class, each modality's covariance has 5 large eigenvalues (the nuisance) above a noise floor;
    modalities are uncorrelated given the class, unless shared_factors adds common factors."""
    spec = replace(TAB1, n_train=8000, n_test=10, n_population=10)
    for shared, correlated in ((0, False), (2, True)):
        splits, _ = generate(replace(spec, shared_factors=shared), seed=3)
        y = splits.train.labels.numpy()
        x = {m: v.numpy()[y == 0] for m, v in splits.train.inputs.items()}
        for m, v in x.items():
            ev = np.sort(np.linalg.eigvalsh(np.cov(v.T)))[::-1]
            rank = 5 + shared
            assert ev[rank - 1] > 5 * ev[rank], (m, ev[: rank + 2])
        a, b = x["mRNA"] - x["mRNA"].mean(0), x["methylation"] - x["methylation"].mean(0)
        cross = np.abs(a.T @ b / len(a) / np.outer(a.std(0), b.std(0)))
        assert (cross.max() > 0.3) == correlated, cross.max()


def test_noise_is_uneven_across_features():
    """Equal marker shifts, uneven noise: with the nuisance off, the 30 mRNA markers' shifts in standard-deviation
    units (effect 0.8 over a noise sd log-uniform in [0.2, 0.8]) differ by a factor of more than 2."""
    spec = replace(TAB1, n_train=20000, n_test=10, n_population=10,
                   omics=tuple(replace(o, nuisance_scale=0.0) for o in TAB1.omics))
    splits, _ = generate(spec, seed=4)
    y = splits.train.labels.numpy()
    x = splits.train.inputs["mRNA"].numpy()
    snr = np.array([abs(x[y == j % 3, j].mean() - x[y == 3, j].mean()) / x[y == 3, j].std() for j in range(30)])
    assert snr.max() / snr.min() > 2, snr
    assert 0.8 / 0.8 * 0.9 < snr.min() and snr.max() < 0.8 / 0.2 * 1.1  # within the range the knobs allow


def test_seeded_determinism_and_independent_streams():
    """The same seed gives identical tensors; another seed different ones; the size of one split (n_val,
    n_test) leaves every other split's raw draw unchanged."""
    def flat(ds):
        return torch.cat([*ds.inputs.values(), ds.labels[:, None].float()], 1)

    (s1, p1), (s2, p2) = generate(TAB1, seed=5, n_val=50), generate(TAB1, seed=5, n_val=50)
    for a, b in ((s1.train, s2.train), (s1.test, s2.test), (s1.val, s2.val), (p1, p2)):
        assert torch.equal(flat(a), flat(b))
    s3, p3 = generate(TAB1, seed=6, n_val=50)
    assert not torch.equal(flat(s1.train), flat(s3.train)) and not torch.equal(flat(p1), flat(p3))
    s4, p4 = generate(TAB1, seed=5, n_val=300)
    assert torch.equal(flat(s1.train), flat(s4.train)) and torch.equal(flat(s1.test), flat(s4.test))
    assert torch.equal(flat(p1), flat(p4))


def test_standardised_on_the_train_split_only():
    """Train features have mean 0 and sd 1 exactly; the other splits are standardised with the train
    statistics: more test samples change nothing in train, more train samples change the test values."""
    splits, pop = generate(TAB1, seed=7, n_val=100)
    for x in splits.train.inputs.values():
        assert torch.allclose(x.mean(0), torch.zeros(x.shape[1]), atol=1e-5)
        assert torch.allclose(x.std(0, unbiased=False), torch.ones(x.shape[1]), atol=1e-4)
    for ds in (splits.test, splits.val, pop):  # not exactly standardised on their own
        x = ds.inputs["mRNA"]
        assert x.mean(0).abs().max() > 1e-3
    more_test, _ = generate(replace(TAB1, n_test=400), seed=7)
    for m in DIMS:
        assert torch.equal(more_test.train.inputs[m], splits.train.inputs[m])
    more_train, pop2 = generate(replace(TAB1, n_train=700), seed=7)
    assert torch.equal(more_train.test.labels, splits.test.labels)
    assert not torch.equal(more_train.test.inputs["mRNA"], splits.test.inputs["mRNA"])
    # same raw test draw, two affine maps: the values are related by a per-feature affine transform
    a, b = splits.test.inputs["mRNA"].double(), more_train.test.inputs["mRNA"].double()
    slope = (b - b.mean(0)).std(0) / (a - a.mean(0)).std(0)
    assert torch.allclose(b, (a - a.mean(0)) * slope + b.mean(0), atol=1e-4)


def test_config_defaults_and_loading():
    """make_config(dataset='tabular') uses encoders 128 -> 32, batch 32 and 60 epochs (overrides win);
    load() and population() honour n_train, n_val, seed and the modality subset; teaching knobs are refused."""
    cfg = make_config(dataset="tabular", method="joint")
    assert (cfg.model.hidden, cfg.model.feature_dim, cfg.optim.batch_size, cfg.epochs) == (128, 32, 32, 60)
    assert make_config(dataset="tabular", overrides={"epochs": 5}).epochs == 5
    assert make_config(dataset="tabular", method="mibalance").data.n_val > 0
    splits = load(cfg.data, run_seed=0)
    assert splits.input_dims() == DIMS and len(splits.train) == 350 and splits.val is None
    direct, pop = generate(TAB1, seed=0)
    assert torch.equal(splits.train.inputs["miRNA"], direct.train.inputs["miRNA"])
    assert torch.equal(population(cfg.data, 0).inputs["miRNA"], pop.inputs["miRNA"])
    sub = DataConfig(name="tabular", modalities=("methylation",), n_train=200, n_val=40, seed=9)
    s = load(sub, run_seed=0)
    assert s.modalities == ("methylation",) and (len(s.train), len(s.val)) == (200, 40)
    assert population(sub, 0).modalities == ("methylation",)
    assert torch.equal(s.train.labels, generate(replace(TAB1, n_train=200), seed=9)[0].train.labels)
    with pytest.raises(ValueError, match="data.scale"):
        load(DataConfig(name="tabular", scale=(1.0, 1.0, 1.0)), run_seed=0)
    with pytest.raises(ValueError, match="priors"):
        generate(replace(TAB1, priors=(0.5, 0.6)))


def test_a_short_run_trains_on_it():
    """Two epochs of joint training on TAB1 run and beat chance on the test split."""
    from inforeg.train import train

    r = train(make_config(dataset="tabular", epochs=2, overrides={"fisher": False, "method.trace": "official"}),
              progress=False)
    assert len(r.history) == 2 and r.test_acc > 0.3


@pytest.mark.parametrize("sizes", [{"n_train": 1}, {"n_test": 0}, {"n_population": 0}])
def test_too_small_splits_are_refused(sizes):
    """One training sample cannot set the per-feature standardisation: refused with the sizes in the message."""
    with pytest.raises(ValueError, match="needs n_train >= 2"):
        generate(replace(TAB1, **sizes), seed=0)
