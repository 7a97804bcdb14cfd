"""Models (inforeg.models): unimodal logits as the paper defines them for each fusion, and initialisation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inforeg.config import ModelConfig
from inforeg.models import FiLMFusion, GatedFusion, SplitHead, build_model

DIMS3 = {"A": 5, "B": 4, "C": 6}


def _model(fusion: str, n_mod: int = 2, classes: int = 3, seed: int = 0, **kw):
    torch.manual_seed(seed)
    dims = dict(list(DIMS3.items())[:n_mod])
    model = build_model(ModelConfig(hidden=8, feature_dim=6, fusion=fusion, **kw), dims, classes).double()
    g = torch.Generator().manual_seed(seed + 100)
    inputs = {m: torch.randn(7, d, generator=g, dtype=torch.float64) for m, d in dims.items()}
    return model, inputs


@pytest.mark.parametrize("n_mod", [2, 3])
@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_additive_fusions_unimodal_logits_sum_to_fused(fusion, n_mod):
    """Concat (split head, b/M each) and sum fusion: the unimodal logits add up to the fused logits."""
    model, inputs = _model(fusion, n_mod)
    out = model(inputs)
    assert out.logits.shape == (7, 3)
    assert list(out.unimodal) == list(model.modalities) == list(out.features)
    torch.testing.assert_close(sum(out.unimodal.values()), out.logits, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_mod", [2, 3])
def test_concat_split_head_formula(n_mod):
    """Concat: f_m = h_m W[:, block m]^T + b / M, and the fused logits are [h_1..h_M] W^T + b."""
    model, inputs = _model("concat", n_mod)
    out = model(inputs)
    W, b = model.fusion.head.weight, model.fusion.head.bias
    d = out.features["A"].shape[1]
    for i, m in enumerate(model.modalities):
        expected = out.features[m] @ W[:, i * d:(i + 1) * d].T + b / n_mod
        torch.testing.assert_close(out.unimodal[m], expected, rtol=1e-12, atol=1e-12)
    fused = torch.cat([out.features[m] for m in model.modalities], 1) @ W.T + b
    torch.testing.assert_close(out.logits, fused, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_mod", [2, 3])
@pytest.mark.parametrize("fusion", ["film", "gated"])
def test_zero_others_fusions(fusion, n_mod):
    """FiLM and gated: f_m is the fused head run with every other modality's features set to zero."""
    model, inputs = _model(fusion, n_mod)
    out = model(inputs)
    feats = [out.features[m] for m in model.modalities]
    for i, m in enumerate(model.modalities):
        alone = [h if k == i else torch.zeros_like(h) for k, h in enumerate(feats)]
        expected, _ = model.fusion(alone)
        torch.testing.assert_close(out.unimodal[m], expected, rtol=1e-12, atol=1e-12)
        # not trivially the fused logits (the other modalities do matter)
        assert not torch.allclose(out.unimodal[m], out.logits)


def test_film_unimodal_by_hand():
    """FiLM with two modalities by hand: f_A = head(gamma(0) * h_A + beta(0)), f_B = head(gamma(h_B)*0 + beta(h_B))."""
    model, inputs = _model("film")
    out = model(inputs)
    film, head = model.fusion.films[0], model.fusion.head
    hA, hB = out.features["A"], out.features["B"]
    gamma0, beta0 = film.bias.chunk(2)
    torch.testing.assert_close(out.unimodal["A"], head(gamma0 * hA + beta0), rtol=1e-12, atol=1e-12)
    _, betaB = film(hB).chunk(2, dim=1)
    torch.testing.assert_close(out.unimodal["B"], head(betaB), rtol=1e-12, atol=1e-12)
    gammaB, _ = film(hB).chunk(2, dim=1)
    torch.testing.assert_close(out.logits, head(gammaB * hA + betaB), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [FiLMFusion, GatedFusion])
def test_zero_others_fusions_need_equal_dims(cls):
    """FiLM and gated fusion reject unequal feature sizes with a clear ValueError."""
    with pytest.raises(ValueError, match="equal feature sizes"):
        cls([4, 5], 3)


@pytest.mark.parametrize("dims", [[6, 6], [3, 5, 4]])
def test_split_head_initialises_like_linear(dims):
    """SplitHead(dims, C) draws exactly the weights and bias of nn.Linear(sum(dims), C) under the same seed."""
    torch.manual_seed(123)
    head = SplitHead(dims, 4)
    torch.manual_seed(123)
    ref = nn.Linear(sum(dims), 4)
    assert torch.equal(head.weight, ref.weight)
    assert torch.equal(head.bias, ref.bias)


def test_split_head_gradients_match_a_linear_layer():
    """SplitHead's fused logits are a Linear layer's: same output and same gradient for the fused loss."""
    torch.manual_seed(5)
    head = SplitHead([3, 2], 4)
    ref = nn.Linear(5, 4)
    ref.load_state_dict(head.state_dict())
    a, b, y = torch.randn(6, 3), torch.randn(6, 2), torch.randint(4, (6,))
    F.cross_entropy(head([a, b])[:, 0], y).backward()
    F.cross_entropy(ref(torch.cat([a, b], 1)), y).backward()
    torch.testing.assert_close(head.weight.grad, ref.weight.grad)
    torch.testing.assert_close(head.bias.grad, ref.bias.grad)


def _weights_and_biases(model):
    lin = [m for m in model.modules() if isinstance(m, (nn.Linear, SplitHead))]
    return [m.weight for m in lin], [m.bias for m in lin]


def test_official_init_is_xavier_normal_on_weights_only():
    """init='official': Linear weights get std sqrt(2/(fan_in+fan_out)) (normal, beyond the default uniform
    bound); biases keep PyTorch's default draw, identical to the default model's under the same seed."""
    cfg = dict(hidden=600, feature_dim=64, fusion="concat")
    dims = {"A": 400, "B": 8}
    torch.manual_seed(7)
    default = build_model(ModelConfig(**cfg), dims, 5)
    torch.manual_seed(7)
    official = build_model(ModelConfig(init="official", **cfg), dims, 5)
    w_def, b_def = _weights_and_biases(default)
    w_off, b_off = _weights_and_biases(official)
    for b0, b1 in zip(b_def, b_off):
        assert torch.equal(b0, b1)
    for w0, w1 in zip(w_def, w_off):
        assert not torch.equal(w0, w1)
    big = official.encoders["A"][0].weight  # Linear(400, 600): 240k draws
    fan_out, fan_in = big.shape
    xavier = math.sqrt(2.0 / (fan_in + fan_out))
    assert big.std().item() == pytest.approx(xavier, rel=0.01)
    assert big.mean().abs().item() < 0.01 * xavier
    assert big.abs().max().item() > 1 / math.sqrt(fan_in)  # impossible for the default uniform init
    kurtosis = ((big - big.mean()) ** 4).mean() / big.var(unbiased=False) ** 2
    assert kurtosis.item() == pytest.approx(3.0, abs=0.1)  # normal (a uniform draw gives 1.8)
    default_big = default.encoders["A"][0].weight
    assert default_big.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.01)
    assert default_big.abs().max().item() <= 1 / math.sqrt(fan_in)


def test_unknown_fusion_and_encoder_raise():
    """build_model names the valid choices when given an unknown fusion or encoder."""
    with pytest.raises(ValueError, match="concat"):
        build_model(ModelConfig(fusion="bilinear"), {"A": 3, "B": 3}, 2)
    with pytest.raises(ValueError, match="mlp"):
        build_model(ModelConfig(encoder="resnet"), {"A": 3, "B": 3}, 2)


@pytest.mark.parametrize("fusion", ["concat", "sum", "film", "gated"])
def test_three_modalities_forward_and_backward(fusion):
    """Three-modality models give logits for each modality and every encoder gets a gradient."""
    model, inputs = _model(fusion, 3)
    out = model(inputs)
    assert model.modalities == ("A", "B", "C")
    assert {m: f.shape for m, f in out.unimodal.items()} == {m: (7, 3) for m in "ABC"}
    assert {m: f.shape for m, f in out.features.items()} == {m: (7, 6) for m in "ABC"}
    y = torch.arange(7) % 3
    (F.cross_entropy(out.logits, y) + sum(F.cross_entropy(f, y) for f in out.unimodal.values())).backward()
    for m in "ABC":
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders[m].parameters())
