"""The teaching datasets match their definitions (../shared/TEACHING.md); `from_arrays` checks its input."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from inforeg.config import DataConfig
from inforeg.data import TeachingSpec, from_arrays, generate, load, with_knobs
from inforeg.data.teaching import TEACHING, TEACHING3


def _class_means(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.stack([x[y == c].mean(0) for c in range(num_classes)])


@pytest.fixture(scope="module")
def big():
    """The default teaching dataset with many training samples, so that class means are precise."""
    return load(DataConfig(n_train=40000, n_test=4000), run_seed=0)


@pytest.fixture(scope="module")
def default0():
    """The default teaching dataset drawn with seed 0 (shared by the tests that only read it)."""
    return load(DataConfig(), run_seed=0)


# --- the default dataset -----------------------------------------------------------------------------

def test_default_shapes(default0):
    """Default: modalities A and B of 256 dims, 10 classes, 2000 train and 2000 test samples."""
    s = default0
    assert s.modalities == ("A", "B")
    assert s.num_classes == 10
    assert s.input_dims() == {"A": 256, "B": 256}
    assert len(s.train) == 2000 and len(s.test) == 2000
    assert s.val is None
    for split in (s.train, s.test):
        assert split.labels.dtype == torch.long
        assert set(split.labels.tolist()) == set(range(10))
        for x in split.inputs.values():
            assert x.dtype == torch.float32 and x.shape[0] == len(split)


def test_b_prototypes_recovered_unit_norm(big):
    """Mean of x_B over a class / (0.7 * 2.5) is a unit vector, the same prototype in train and test."""
    tr, te = big.train, big.test
    p_train = _class_means(tr.inputs["B"], tr.labels, 10) / (0.7 * 2.5)
    p_test = _class_means(te.inputs["B"], te.labels, 10) / (0.7 * 2.5)
    norms = p_train.norm(dim=1)
    # noise bias on the squared norm: 256 dims * (0.7/1.75)^2 / n_class
    n_class = torch.bincount(tr.labels, minlength=10).float()
    unbiased = (norms ** 2 - 256 * 0.16 / n_class).sqrt()
    assert torch.allclose(unbiased, torch.ones(10), atol=0.03), unbiased
    cos = torch.nn.functional.cosine_similarity(p_train, p_test, dim=1)
    assert (cos > 0.8).all(), cos  # test split: 400 samples a class, noisier but the same direction
    # distinct classes have (nearly orthogonal) distinct prototypes
    off = (p_train / norms[:, None]) @ (p_train / norms[:, None]).T - torch.eye(10)
    assert off.abs().max() < 0.35


def test_b_is_informative_on_every_sample_with_amplitude_07(big):
    """x_B projected on its class prototype is 0.7 * (2.5 + N(0,1)) on every sample (no noise-only part)."""
    x, y = big.train.inputs["B"], big.train.labels
    p = _class_means(x, y, 10)
    p = p / p.norm(dim=1, keepdim=True)
    proj = (x * p[y]).sum(1)
    assert abs(proj.mean().item() - 1.75) < 0.03
    assert abs(proj.std().item() - 0.7) < 0.03  # a mixture with noise-only samples would be ~1.0
    resid = x - _class_means(x, y, 10)[y]
    assert abs(resid.std().item() - 0.7) < 0.01


def test_a_is_pure_noise_on_about_20_percent(big):
    """x_A = 4 * P_A[y] * m + e with m ~ Bernoulli(0.8): about 20% of samples do not correlate with P_A[y]."""
    x, y = big.train.inputs["A"], big.train.labels
    p = _class_means(x, y, 10) / (4.0 * 0.8)
    n_class = torch.bincount(y, minlength=10).float()
    unbiased = (p.norm(dim=1) ** 2 - 256 / (3.2 ** 2 * n_class)).sqrt()
    assert torch.allclose(unbiased, torch.ones(10), atol=0.03), unbiased
    p = p / p.norm(dim=1, keepdim=True)
    proj = (x * p[y]).sum(1)  # informative: 4 + N(0,1); noise-only: N(0,1)
    noise_only = (proj < 2.0).float().mean().item()
    expected = 0.2 * (1 - 0.0228) + 0.8 * 0.0228  # misclassified tails at the threshold 2
    assert abs(noise_only - expected) < 0.015, noise_only
    # the informative ones sit at 4 (the scale), not at 0.8 * 4 (a weaker signal on every sample)
    assert abs(proj[proj > 2.0].median().item() - 4.0) < 0.1


def test_same_seed_same_data_different_seed_different_data(default0):
    """The data seed fixes everything; another seed changes prototypes, labels and noise."""
    a, b, c = default0, load(DataConfig(), run_seed=0), load(DataConfig(), run_seed=1)
    for split in ("train", "test"):
        sa, sb, sc = getattr(a, split), getattr(b, split), getattr(c, split)
        assert torch.equal(sa.labels, sb.labels)
        assert not torch.equal(sa.labels, sc.labels)
        for m in ("A", "B"):
            assert torch.equal(sa.inputs[m], sb.inputs[m])
            assert not torch.allclose(sa.inputs[m], sc.inputs[m])
    pa = _class_means(a.train.inputs["B"], a.train.labels, 10)
    pc = _class_means(c.train.inputs["B"], c.train.labels, 10)
    cos = torch.nn.functional.cosine_similarity(pa, pc, dim=1)
    assert cos.abs().max() < 0.5  # new prototypes, not a relabelling of the noise


def test_data_seed_overrides_run_seed():
    """data.seed, when set, draws the data instead of the run's seed."""
    a = load(DataConfig(seed=5, n_train=200, n_test=50), run_seed=0)
    b = load(DataConfig(n_train=200, n_test=50), run_seed=5)
    assert torch.equal(a.train.inputs["A"], b.train.inputs["A"])
    assert torch.equal(a.test.labels, b.test.labels)


def test_train_and_test_are_different_samples(default0):
    """Train and test are drawn separately (no sample shared)."""
    s = default0
    assert not torch.equal(s.train.inputs["A"][:100], s.test.inputs["A"][:100])


def test_sizes_and_validation_split():
    """data.n_train / n_test / n_val set the split sizes."""
    s = load(DataConfig(n_train=300, n_test=200, n_val=50), run_seed=0)
    assert (len(s.train), len(s.test), len(s.val)) == (300, 200, 50)
    assert s.val.modalities == ("A", "B")


# --- knobs -------------------------------------------------------------------------------------------

def test_with_knobs_overrides_per_modality():
    """with_knobs replaces one knob per modality and leaves the others."""
    spec = with_knobs(TEACHING, amplitude=(1.0, 0.3), dim=(8, 16), scale=None)
    assert [m.amplitude for m in spec.modalities] == [1.0, 0.3]
    assert [m.dim for m in spec.modalities] == [8, 16]
    assert [m.scale for m in spec.modalities] == [4.0, 2.5]
    assert [m.informative_frac for m in spec.modalities] == [0.8, 1.0]
    assert TEACHING.modalities[1].amplitude == 0.7  # the original is untouched


def test_knobs_through_data_config_change_the_data():
    """DataConfig knobs reach the generated data: dims, and a modality made pure noise."""
    s = load(DataConfig(dim=(8, 16), n_train=20000, n_test=10, informative_frac=(0.0, 1.0)), run_seed=0)
    assert s.input_dims() == {"A": 8, "B": 16}
    means_a = _class_means(s.train.inputs["A"], s.train.labels, 10)
    means_b = _class_means(s.train.inputs["B"], s.train.labels, 10)
    assert means_a.norm(dim=1).max() < 0.3  # noise only: ~sqrt(8 / 2000)
    assert means_b.norm(dim=1).min() > 1.5  # 0.7 * 2.5


def test_amplitude_knob_scales_inputs():
    """amplitude multiplies the whole input (signal and noise) of its modality."""
    base = load(DataConfig(n_train=500, n_test=10), run_seed=0)
    loud = load(DataConfig(n_train=500, n_test=10, amplitude=(2.0, 1.4)), run_seed=0)
    assert torch.allclose(loud.train.inputs["A"], 2.0 * base.train.inputs["A"])
    assert torch.allclose(loud.train.inputs["B"], 2.0 * base.train.inputs["B"])


@pytest.mark.parametrize("knob, values", [("amplitude", (1.0,)), ("scale", (1.0, 2.0, 3.0)), ("dim", ())])
def test_with_knobs_wrong_length_raises(knob, values):
    """A knob needs one value per modality; the error says how many and which modalities."""
    with pytest.raises(ValueError) as e:
        with_knobs(TEACHING, **{knob: values})
    assert knob in str(e.value) and "2" in str(e.value) and "A" in str(e.value)


@pytest.mark.parametrize("frac", [-0.1, 1.5])
def test_informative_frac_outside_unit_interval_raises(frac):
    """informative_frac must lie in [0, 1]."""
    with pytest.raises(ValueError, match="informative_frac"):
        with_knobs(TEACHING, informative_frac=(frac, 1.0))


def test_informative_frac_bounds_are_allowed():
    """0 and 1 themselves are valid fractions."""
    spec = with_knobs(TEACHING, informative_frac=(0.0, 1.0))
    assert [m.informative_frac for m in spec.modalities] == [0.0, 1.0]


def test_non_positive_dim_raises():
    """A modality needs at least one feature."""
    with pytest.raises(ValueError, match="dim"):
        with_knobs(TEACHING, dim=(0, 256))


def test_generate_accepts_a_custom_spec():
    """generate() follows a hand-made spec (class count, sizes)."""
    spec = TeachingSpec(TEACHING.modalities, num_classes=3, n_train=60, n_test=30)
    s = generate(spec, seed=1)
    assert s.num_classes == 3 and len(s.train) == 60 and len(s.test) == 30
    assert int(s.train.labels.max()) <= 2


# --- three modalities and subsets --------------------------------------------------------------------

def test_teaching3_has_three_modalities_and_c_is_blind_on_classes_5_to_9():
    """teaching3: A, B, C of 256 dims; C carries signal on classes 0-4 only."""
    s = load(DataConfig(name="teaching3", n_train=20000, n_test=100), run_seed=0)
    assert s.modalities == ("A", "B", "C")
    assert s.input_dims() == {"A": 256, "B": 256, "C": 256}
    assert s.num_classes == 10
    norms = _class_means(s.train.inputs["C"], s.train.labels, 10).norm(dim=1)
    # informative classes: 0.6 * 3 = 1.8; the others: noise of the mean, 0.6 * sqrt(256 / 2000) ~ 0.2
    assert (norms[:5] > 1.6).all(), norms
    assert (norms[5:] < 0.3).all(), norms
    b_norms = _class_means(s.train.inputs["B"], s.train.labels, 10).norm(dim=1)
    assert (b_norms > 1.6).all()  # B stays informative on every class


def test_teaching3_default_sizes():
    """teaching3 keeps 2000 / 2000 samples."""
    s = load(DataConfig(name="teaching3"), run_seed=0)
    assert (len(s.train), len(s.test)) == (2000, 2000)
    assert TEACHING3.modalities[2].informative_classes == (0, 1, 2, 3, 4)


def test_modalities_selects_b_alone(default0):
    """data.modalities=('B',) keeps only B, with exactly the same B features and labels."""
    full = default0
    only_b = load(DataConfig(modalities=("B",)), run_seed=0)
    assert only_b.modalities == ("B",)
    assert only_b.test.modalities == ("B",)
    assert only_b.input_dims() == {"B": 256}
    assert torch.equal(only_b.train.inputs["B"], full.train.inputs["B"])
    assert torch.equal(only_b.test.labels, full.test.labels)


def test_unknown_modality_or_dataset_raises():
    """Selecting a modality the dataset lacks, or an unknown dataset, names the problem."""
    with pytest.raises(ValueError, match="'C'"):
        load(DataConfig(modalities=("C",)), run_seed=0)
    with pytest.raises(ValueError, match="nope"):
        load(DataConfig(name="nope"), run_seed=0)


def test_batches_cover_the_split_once():
    """batches() yields every sample exactly once per epoch, shuffled with a generator."""
    s = load(DataConfig(n_train=130, n_test=10), run_seed=0)
    g = torch.Generator().manual_seed(0)
    batches = list(s.train.batches(64, g))
    assert [len(b) for b in batches] == [64, 64, 2]
    xs = torch.cat([b.inputs["A"] for b in batches])
    assert not torch.equal(xs, s.train.inputs["A"])  # shuffled
    order = torch.argsort(xs[:, 0])
    assert torch.equal(xs[order], s.train.inputs["A"][torch.argsort(s.train.inputs["A"][:, 0])])


# --- from_arrays -------------------------------------------------------------------------------------

def _arrays(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 5)), "y": rng.normal(size=(n, 3))}, rng.integers(0, 4, size=n)


def test_from_arrays_with_test_set():
    """Given train and test arrays, the splits hold them as float32 tensors with long labels."""
    train, ytr = _arrays(40)
    test, yte = _arrays(10, seed=1)
    s = from_arrays(train, ytr, test, yte)
    assert s.modalities == ("x", "y")
    assert (len(s.train), len(s.test)) == (40, 10)
    assert s.input_dims() == {"x": 5, "y": 3}
    assert s.num_classes == int(max(ytr.max(), yte.max())) + 1
    assert s.train.inputs["x"].dtype == torch.float32 and s.train.labels.dtype == torch.long
    np.testing.assert_allclose(s.test.inputs["y"].numpy(), test["y"].astype(np.float32))
    np.testing.assert_array_equal(s.train.labels.numpy(), ytr)


def test_from_arrays_without_test_set_splits_disjointly():
    """Without a test set, test_fraction of the samples (seeded) become the test split, disjoint from train."""
    train, y = _arrays(40)
    train["x"][:, 0] = np.arange(40)  # a sample id
    s = from_arrays(train, y, test_fraction=0.25, seed=3)
    assert (len(s.train), len(s.test)) == (30, 10)
    ids_tr = s.train.inputs["x"][:, 0].long().tolist()
    ids_te = s.test.inputs["x"][:, 0].long().tolist()
    assert sorted(ids_tr + ids_te) == list(range(40))
    assert all(s.train.labels[i].item() == y[k] for i, k in enumerate(ids_tr))
    again = from_arrays(train, y, test_fraction=0.25, seed=3)
    assert torch.equal(again.test.inputs["x"], s.test.inputs["x"])
    other = from_arrays(train, y, test_fraction=0.25, seed=4)
    assert not torch.equal(other.test.inputs["x"], s.test.inputs["x"])


def test_from_arrays_accepts_integral_float_labels_and_tensors():
    """Labels 0.0, 1.0, ... (and torch tensors) are accepted as class indices."""
    train, y = _arrays(20)
    s = from_arrays({m: torch.as_tensor(a) for m, a in train.items()}, y.astype(float), test_fraction=0.5)
    assert s.train.labels.dtype == torch.long


@pytest.mark.parametrize("case, needle", [
    ("mismatched", "samples"),
    ("nan", "NaN"),
    ("inf", "infinite"),
    ("fractional_labels", "integer"),
    ("three_d", "samples, features"),
    ("one_d", "samples, features"),
    ("negative_labels", "non-negative"),
    ("no_modalities", "at least one modality"),
    ("test_labels_only", "test_labels"),
    ("test_modalities_differ", "modalities"),
    ("test_mismatched", "samples"),
    ("empty_split", "test_fraction"),
])
def test_from_arrays_errors_name_the_problem(case, needle):
    """Bad input raises ValueError whose message names what is wrong."""
    train, y = _arrays(20)
    kwargs = {}
    if case == "mismatched":
        train["y"] = train["y"][:19]
    elif case == "nan":
        train["x"][3, 2] = np.nan
    elif case == "inf":
        train["y"][0, 0] = np.inf
    elif case == "fractional_labels":
        y = y + 0.5
    elif case == "three_d":
        train["x"] = train["x"].reshape(20, 5, 1)
    elif case == "one_d":
        train["x"] = train["x"][:, 0]
    elif case == "negative_labels":
        y = y - 1
    elif case == "no_modalities":
        train = {}
    elif case == "test_labels_only":
        kwargs = {"test_labels": y}
    elif case == "test_modalities_differ":
        kwargs = {"test": {"x": train["x"]}, "test_labels": y}
    elif case == "test_mismatched":
        kwargs = {"test": dict(train), "test_labels": y[:10]}
    elif case == "empty_split":
        kwargs = {"test_fraction": 0.0}
    with pytest.raises(ValueError) as e:
        from_arrays(train, y, **kwargs)
    assert needle in str(e.value), str(e.value)
    if case in ("mismatched", "nan", "three_d", "one_d", "inf"):  # the modality is named
        assert ("'x'" in str(e.value)) or ("'y'" in str(e.value))
