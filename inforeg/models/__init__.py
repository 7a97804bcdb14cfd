"""Multimodal models: one encoder per modality, then a late fusion that also gives unimodal logits."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .encoders import MLPEncoder, TransformerEncoder
from .fusion import FUSIONS, ConcatFusion, FiLMFusion, GatedFusion, SplitHead, SumFusion

__all__ = ["Output", "MultimodalModel", "build_model", "MLPEncoder", "TransformerEncoder", "ResNet18Encoder",
           "ENCODERS", "FUSIONS", "ConcatFusion", "SumFusion", "FiLMFusion", "GatedFusion", "SplitHead",
           "official_init"]

ENCODERS = ("mlp", "resnet18", "transformer")


def __getattr__(name: str):  # torchvision is imported only when a ResNet is asked for
    if name == "ResNet18Encoder":
        from .resnet import ResNet18Encoder

        return ResNet18Encoder
    raise AttributeError(name)


@dataclass
class Output:
    logits: Tensor  # fused logits (batch, classes)
    unimodal: dict[str, Tensor]  # f_m per modality (batch, classes)
    features: dict[str, Tensor]  # encoder outputs per modality (batch, dim)


class MultimodalModel(nn.Module):
    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module):
        super().__init__()
        self.modalities = tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion

    def forward(self, inputs: dict[str, Tensor]) -> Output:
        feats = [self.encoders[m](inputs[m]) for m in self.modalities]
        logits, uni = self.fusion(feats)
        return Output(logits, dict(zip(self.modalities, uni)), dict(zip(self.modalities, feats)))


def official_init(model: nn.Module) -> None:
    """The official code's initialisation: Xavier-normal Linear weights, Kaiming-normal conv (fan_out),
    BN weight 1 and bias 0; Linear biases keep PyTorch's default."""
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, SplitHead)):
            nn.init.xavier_normal_(mod.weight)
        elif isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)


def make_encoder(model_cfg, in_dim: int) -> nn.Module:
    """One modality's encoder. in_dim: input features (mlp, transformer) or channels (resnet18: 1 for a
    spectrogram, 3 for RGB frames; its feature is 512-d whatever model.feature_dim says)."""
    if model_cfg.encoder == "mlp":
        return MLPEncoder(in_dim, model_cfg.hidden, model_cfg.feature_dim)
    if model_cfg.encoder == "transformer":
        return TransformerEncoder(in_dim, model_cfg.feature_dim, model_cfg.hidden)
    if model_cfg.encoder == "resnet18":
        from .resnet import ResNet18Encoder

        return ResNet18Encoder(in_dim)
    raise ValueError(f"unknown encoder {model_cfg.encoder!r}; known: {', '.join(ENCODERS)}")


def build_model(model_cfg, input_dims: dict[str, int], num_classes: int) -> MultimodalModel:
    """Encoders in modality order, then the fusion; PyTorch's default init unless `init='official'`."""
    encoders = {m: make_encoder(model_cfg, d) for m, d in input_dims.items()}
    if model_cfg.fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {model_cfg.fusion!r}; known: {', '.join(FUSIONS)}")
    fusion = FUSIONS[model_cfg.fusion]([e.out_dim for e in encoders.values()], num_classes)
    model = MultimodalModel(encoders, fusion)
    if model_cfg.init == "official":
        official_init(model)
    return model
