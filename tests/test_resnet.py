"""Real-data encoders: torchvision's ResNet-18 adapted (1-channel spectrograms, frames averaged over time) and the
transformer for sequences, wired into build_model."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from inforeg.config import ModelConfig
from inforeg.models import ENCODERS, ResNet18Encoder, TransformerEncoder, build_model


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="resnet18", init="official"), {"audio": 1, "visual": 3}, 6)
    return model


def test_resnet18_is_torchvisions_without_classifier():
    """Same layers and parameter count as torchvision's resnet18 minus its fc; conv1 takes 1 channel for audio."""
    import torchvision

    reference = sum(p.numel() for n, p in torchvision.models.resnet18().named_parameters() if not n.startswith("fc"))
    video, audio = ResNet18Encoder(3), ResNet18Encoder(1)
    assert sum(p.numel() for p in video.parameters()) == reference
    assert sum(p.numel() for p in audio.parameters()) == reference - 64 * 2 * 7 * 7
    assert audio.net.conv1.weight.shape == (64, 1, 7, 7) and isinstance(audio.net.fc, nn.Identity)
    assert audio.out_dim == video.out_dim == 512


def test_official_init(pair):
    """Kaiming-normal conv (fan_out), BN weight 1 / bias 0, Xavier-normal head."""
    conv = pair.encoders["visual"].net.layer1[0].conv1.weight
    assert abs(conv.std().item() - math.sqrt(2 / (64 * 9))) < 0.005
    for m in pair.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))


def test_frames_are_averaged_over_time_and_space(pair):
    """A clip's feature is the mean of its frames' pooled features (the official 3-D average pooling)."""
    enc = pair.encoders["visual"].eval()
    clip = torch.randn(2, 3, 3, 48, 48)
    with torch.no_grad():
        per_frame = torch.stack([enc(clip[:, t]) for t in range(3)], 1).mean(1)
        assert torch.allclose(enc(clip), per_frame, atol=1e-5)
        spec = torch.randn(2, 64, 40)
        assert torch.equal(pair.encoders["audio"].eval()(spec), pair.encoders["audio"](spec[:, None]))
    enc.train(), pair.encoders["audio"].train()


def test_forward_backward_at_reduced_size(pair):
    """Spectrograms (B, F, T) and clips (B, T, 3, H, W) in, fused and unimodal logits out, both encoders learn."""
    out = pair({"audio": torch.randn(2, 64, 48), "visual": torch.randn(2, 2, 3, 64, 64)})
    assert out.logits.shape == (2, 6) and out.features["audio"].shape == (2, 512)
    assert set(out.unimodal) == {"audio", "visual"}
    out.logits.logsumexp(1).mean().backward()
    for m in ("audio", "visual"):
        assert pair.encoders[m].net.conv1.weight.grad.abs().sum() > 0


def test_resnet_rejects_other_shapes():
    with pytest.raises(ValueError, match="3 input channels"):
        ResNet18Encoder(3)(torch.randn(2, 256))


def test_transformer_encoder():
    """Sequences (B, L, D) -> (B, feature_dim); zero steps appended at the end (padding) change nothing."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="transformer", feature_dim=32, hidden=64),
                        {"text": 300, "audio": 5, "vision": 20}, 2)
    assert isinstance(model.encoders["text"], TransformerEncoder)
    x = {"text": torch.randn(3, 6, 300), "audio": torch.randn(3, 9, 5), "vision": torch.randn(3, 11, 20)}
    out = model(x)
    assert out.logits.shape == (3, 2) and out.features["vision"].shape == (3, 32)
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.encoders["audio"].parameters())
    enc = model.encoders["audio"]
    padded = torch.cat([x["audio"], torch.zeros(3, 4, 5)], 1)
    with torch.no_grad():
        assert torch.allclose(enc(padded), enc(x["audio"]), atol=1e-5)
        assert torch.isfinite(enc(torch.zeros(1, 5, 5))).all()  # all padding: still a number


def test_unknown_encoder_lists_the_choices():
    assert ENCODERS == ("mlp", "resnet18", "transformer")
    with pytest.raises(ValueError, match="mlp, resnet18, transformer"):
        build_model(ModelConfig(encoder="vit"), {"a": 4}, 2)
