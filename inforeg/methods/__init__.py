"""Balancing methods behind one interface (`base.Method`)."""
from __future__ import annotations

from .base import EpochState, Method, regulation_active, true_class_prob
from .inforeg import InfoReg, coefficients, score_gap

METHODS: dict[str, tuple[type[Method], str]] = {
    "joint": (Method, "joint training: CE of the fused logits (+ unimodal CEs with method.unimodal_weight, joint*)"),
    "inforeg": (InfoReg, "InfoReg (CVPR 2025): proximal pull on the leading encoder inside the prime learning window"),
}

__all__ = ["EpochState", "Method", "InfoReg", "METHODS", "build_method", "coefficients", "score_gap",
           "regulation_active", "true_class_prob"]


def build_method(cfg, model) -> Method:
    if cfg.method.name not in METHODS:
        raise ValueError(f"unknown method {cfg.method.name!r}; known: {', '.join(METHODS)}")
    return METHODS[cfg.method.name][0](cfg, model)
