"""Balancing methods behind one interface (`base.Method`), one module each, imported when first used."""
from __future__ import annotations

import importlib

from .base import EpochState, Method, regulation_active, true_class_prob
from .inforeg import InfoReg, coefficients, score_gap

# name -> (module:class, one line for `python -m inforeg methods`)
METHODS: dict[str, tuple[str, str]] = {
    "joint": ("base:Method", "joint training: CE of the fused logits (+ unimodal CEs with method.unimodal_weight: joint*)"),
    "inforeg": ("inforeg:InfoReg", "InfoReg (CVPR 2025): proximal pull on the leading encoder inside the prime learning window"),
    "ogm": ("ogm:OGM", "OGM (CVPR 2022): the leading encoder's weight gradients scaled by 1 - tanh(alpha * rho)"),
    "ogm_ge": ("ogm:OGM", "OGM-GE (CVPR 2022): OGM plus Gaussian noise with the gradient's own std on every encoder"),
    "greedy": ("greedy:Greedy", "Greedy (ICML 2022): re-balancing steps for the modality with the slower conditional learning speed"),
    "pmr": ("pmr:PMR", "PMR (CVPR 2023): prototype cross-entropy on the weaker modality"),
    "agm": ("agm:AGM", "AGM (ICCV 2023): Shapley-like mono logits, each path's gradient scaled adaptively"),
    "gblending": ("gblending:GBlending", "G-Blending (CVPR 2020): fused and unimodal losses weighted by generalisation over overfitting"),
    "mmpareto": ("mmpareto:MMPareto", "MMPareto (ICML 2024): Pareto (min-norm) combination of multimodal and unimodal gradients"),
    "mibalance": ("mibalance:MIBalance", "MI-Balance (reconstructed from arXiv 2511.00987): MI-gated distillation, then MI/F1-weighted multitask"),
}

__all__ = ["EpochState", "Method", "InfoReg", "METHODS", "build_method", "method_class", "coefficients",
           "score_gap", "regulation_active", "true_class_prob"]


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    module, cls = METHODS[name][0].split(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def build_method(cfg, model) -> Method:
    return method_class(cfg.method.name)(cfg, model)
