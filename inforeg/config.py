"""Run configuration: one frozen dataclass per concern, presets, profiles and `key=value` overrides.

A run is fully described by a `RunConfig`; its hash names its cache entry (see `runs.py`).
Presets name whole method variants (`paper`, `official`); profiles scale whole experiments (`ci`).
Unknown keys, presets, profiles and values of the wrong type raise `ConfigError` with the valid choices.
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

CACHE_VERSION = 2  # bump when training semantics or the result format change: old cache entries are then not reused


class ConfigError(ValueError):
    """A configuration that cannot describe a run (unknown key, preset, value...)."""


@dataclass(frozen=True)
class DataConfig:
    name: str = "teaching"  # teaching (2 modalities) | teaching3, tabular (3) | cremad | kinetics_sounds | mosi (3)
    root: str | None = None  # real data: the folder `python -m inforeg prepare` wrote (None: $INFOREG_DATA_DIR/<name>)
    frames: int = 3  # real audio-visual data: frames a clip shows per batch
    image_size: int = 224  # real audio-visual data: frames are cropped / resized to this square
    test_frames: str = "even"  # even (deterministic, evenly spaced) | random (official: seed-dependent test accuracy)
    modalities: tuple[str, ...] | None = None  # train on this subset (None: all), e.g. ("B",) = B alone
    n_train: int | None = None  # None: the dataset's default size
    n_test: int | None = None
    n_val: int = 0  # samples held out for model selection
    seed: int | None = None  # None: the run's seed draws the data too
    # Per-modality knobs of the teaching datasets (None: the dataset's defaults), one entry per modality.
    dim: tuple[int, ...] | None = None
    scale: tuple[float, ...] | None = None  # signal scale s: x = g * (s * P[y] * informative + noise)
    informative_frac: tuple[float, ...] | None = None  # fraction of samples on which a modality is informative
    amplitude: tuple[float, ...] | None = None  # input amplitude g


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "mlp"  # mlp (vectors) | resnet18 (spectrograms, frames; 512-d) | transformer (sequences)
    hidden: int = 256
    feature_dim: int = 64
    fusion: str = "concat"  # concat | sum | film | gated
    init: str = "default"  # default (PyTorch's) | official (Xavier-normal Linear, Kaiming-normal conv)


@dataclass(frozen=True)
class WindowConfig:
    rule: str = "paper"  # paper (Eq. 11, per modality) | official (moving average of one trace)
    K: float = 0.04  # paper: open while (T[t-1] - T[t-2]) / T[t-1] > K
    min_epoch: int = 2  # paper: epochs before this are never regulated (not enough history)
    threshold: float = 0.05  # official: open while k > threshold
    span: int = 10  # official: moving-average length (the trace list starts padded with `span` zeros)
    watch: str | None = None  # official: the one modality whose trace is watched (None: the first)


@dataclass(frozen=True)
class MethodConfig:
    name: str = "joint"  # joint | inforeg | ogm | ogm_ge | greedy | pmr | agm | gblending | mmpareto | mibalance
    preset: str = "paper"  # paper | official (InfoReg only)
    unimodal_weight: float = 0.0  # weight of sum_m CE(f_m, y); 1.0 gives joint* / InfoReg*
    regulate: str = "window"  # window | always | outside: when regulation may act (make_config: InfoReg
    # defaults to window, every other method to always, as their papers do)
    beta: float = 0.9  # paper: alpha_m = exp(beta * tanh(Delta_m))
    score: str = "mean"  # mean (paper) | sum (official) of the true-class probability over the batch
    coefficient: str = "paper"  # paper: exp(beta tanh D) | official: c_m exp(tanh D)
    official_c: tuple[float, ...] = (0.95, 0.1)  # official prefactors c_m, one per modality (audio, video)
    trace: str = "exact"  # which Tr F drives the window: exact (per-sample, Eq. 7) | official (proxy)


# One section per baseline: its official code's constants as defaults (PAPER.md section 6, BASELINES.md).
@dataclass(frozen=True)
class OGMConfig:
    alpha: float = 0.8  # k = 1 - tanh(alpha * rho) on the leading encoder's weight gradients (CREMA-D value)


@dataclass(frozen=True)
class GreedyConfig:
    threshold: float = 0.001  # imbalance of conditional learning speeds (log10) that triggers re-balancing
    window: int = 5  # re-balancing steps per trigger (official curation_windowsize; speeds accumulate over the run)
    start_epoch: int = 1  # no re-balancing before this epoch (official: from its second epoch)


@dataclass(frozen=True)
class PMRConfig:
    alpha: float = 2.0  # weight of the prototype cross-entropy on the weaker modality (CREMA-D concat scripts)
    momentum: float = 0.0  # EMA of the prototypes across epochs (the scripts mostly use 0)


@dataclass(frozen=True)
class AGMConfig:
    alpha: float = 1.5  # kappa = exp(alpha * min(r_bar - r, 10)) (author's CREMA-D setting)
    clip: float = 1.0  # a classifier weight-gradient entry beyond +-clip: global grad norm clipped to clip (0: off)


@dataclass(frozen=True)
class GBlendingConfig:
    super_epoch: int = 10  # epochs between re-estimations of the loss weights on the validation split


@dataclass(frozen=True)
class MMParetoConfig:
    gamma: float = 1.5  # the combined gradient's magnitude is restored and scaled by gamma


@dataclass(frozen=True)
class MIBalanceConfig:  # reconstructed (only the abstract is public): every constant is a setting
    distill_lambda: float = 0.5  # (1 - lambda) CE + lambda T^2 KL(teacher || student)
    temperature: float = 2.0
    w_min: float = 0.1  # stage-2 unimodal loss weights are clipped to [w_min, w_max]
    w_max: float = 2.0
    # Schedule: epochs [0, stage1_epochs) are stage 1 (unimodal pretraining); the first warmup_epochs of them
    # train every branch on its own labels only (the teacher is not known yet), then the gated KD runs.
    stage1_epochs: int = 5
    warmup_epochs: int = 2
    gate: str = "cch"  # cch: distil iff I(H_t; H_s) > I(H_s; Y) | always (-MI gate ablation) | never (-KD)
    regate: bool = False  # re-pick the teacher and re-test the gate every stage-1 epoch (False: once)
    teacher_weight: float = 1.0  # stage 1: weight of the teacher's own CE (its logits are detached for KD)
    stage1_fused_weight: float = 0.0  # stage 1: weight of CE(f) (0: unimodal branches only)
    fused_weight: float = 1.0  # stage 2: w_0 of CE(f)
    uniform_weight: float = 1.0  # stage 2: w_m of modalities the regulate switch leaves out this epoch
    gamma: float = 1.0  # stage 2: exponent of the macro-F1 deficit ratio (0 ablates the performance term)
    beta: float = 0.5  # stage 2: exponent of the inverse MI share (0 ablates the MI term)
    eps: float = 1e-3  # floor of the F1 deficit and of the MI share
    period: int = 1  # stage 2: weights refreshed every `period` epochs
    mi_dims: int = 8  # MI estimator: representations reduced to this many principal components
    mi_ridge: float = 1e-3  # MI estimator: ridge on the whitened covariance (finite MI for copies)
    mi_null: int = 5  # MI estimator: permutations whose mean MI is subtracted (de-biasing; 0: none)
    mi_seed: int = 0  # MI estimator: seed of those permutations


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    step_size: int | None = None  # StepLR period in epochs (None: constant lr)
    gamma: float = 0.1


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ogm: OGMConfig = field(default_factory=OGMConfig)
    greedy: GreedyConfig = field(default_factory=GreedyConfig)
    pmr: PMRConfig = field(default_factory=PMRConfig)
    agm: AGMConfig = field(default_factory=AGMConfig)
    gblending: GBlendingConfig = field(default_factory=GBlendingConfig)
    mmpareto: MMParetoConfig = field(default_factory=MMParetoConfig)
    mibalance: MIBalanceConfig = field(default_factory=MIBalanceConfig)
    epochs: int = 30
    seed: int = 0
    device: str = "cpu"
    threads: int = 1  # torch CPU threads; fixed so that numbers do not depend on the machine
    fisher: bool = True  # exact per-sample Tr F every step (the official proxy is always logged)
    probe_every: int = 0  # linear probe every k epochs (0: only after the last epoch)
    grad_cosine_batches: int = 0  # k > 0: per epoch, cosine similarities of the first k batches' encoder gradients
    profile: str = "ci"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json_dict(self) -> dict:
        """`to_dict()` as it reads back from JSON (lists where the config has tuples)."""
        return json.loads(json.dumps(self.to_dict()))

    def hash(self) -> str:
        """Content hash naming this run's cache entry."""
        blob = json.dumps({"config": self.to_dict(), "cache_version": CACHE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """A short human name: method (with * for unimodal losses) and preset."""
        star = "*" if self.method.unimodal_weight > 0 else ""
        name = self.method.name + star
        if self.method.name == "inforeg":
            name += f" ({self.method.preset})"
        if self.data.modalities is not None:
            name = "+".join(self.data.modalities) + " alone" if len(self.data.modalities) == 1 else name
        return name


# Presets: whole method variants, as field overrides. `paper` is the equations as printed (Eq. 8's `-log`
# read as a typo); `official` is what github.com/GeWu-Lab/InfoReg_CVPR2025 does (PAPER.md section 3).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "official": {
        "method.unimodal_weight": 1.0,  # the code always trains L_joint + L_a + L_v
        "method.score": "sum",  # batch sum of true-class probabilities: tanh(Delta) saturates near 1
        "method.coefficient": "official",  # c_m * exp(tanh(Delta)), c = (0.95, 0.1)
        "method.trace": "official",  # per-layer mean of squared mini-batch gradients, after the prox term
        "window.rule": "official",  # 10-epoch moving average of the first ("audio") modality's trace
        "window.min_epoch": 0,  # regulation from epoch 0
    },
}

# Profiles scale whole experiments. The `full` profile (real data, GPU) comes with the real-data loaders.
PROFILES: dict[str, dict[str, Any]] = {
    "ci": {},
    # Real datasets on a GPU with the official training settings (PAPER.md section 3, BASELINES.md A.5).
    "full": {
        "device": "auto", "epochs": 50, "optim.lr": 2e-3, "optim.momentum": 0.9, "optim.weight_decay": 1e-4,
        "optim.step_size": 30, "optim.gamma": 0.1, "optim.batch_size": 64,
        "model.encoder": "resnet18", "model.init": "official",
    },
}

# The encoder each dataset's inputs need, applied after the profile (overrides still win).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cremad": {"model.encoder": "resnet18"},
    "kinetics_sounds": {"model.encoder": "resnet18"},
    # FisherMeter is exact for the ResNet-18 encoders (Conv2d, BatchNorm: inforeg/fisher.py) but has no rule for
    # the CMU-MOSI transformer (MultiheadAttention, LayerNorm): log only the official proxy, and let the window
    # read it (the history's `trace` is then None).
    "mosi": {"model.encoder": "transformer", "fisher": False, "method.trace": "official"},
    # TAB1 (TEACHING.md): 350 training samples, encoders 128 -> 32, batch 32, 60 epochs
    "tabular": {"model.hidden": 128, "model.feature_dim": 32, "optim.batch_size": 32, "epochs": 60},
}

# Methods that estimate something on held-out data get a validation split unless the overrides give one.
# (The teaching datasets draw it after the test split, so train and test stay the same.)
NEEDS_VALIDATION = {"gblending": 500, "mibalance": 500}

METHOD_ALIASES = {"joint*": ("joint", 1.0), "inforeg*": ("inforeg", 1.0)}


_SECTION_NAMES = tuple(f.name for f in fields(RunConfig) if f.default_factory is not dataclasses.MISSING)


def valid_keys() -> list[str]:
    """Every key `--set` accepts, dotted for sections (`method.beta`)."""
    keys = []
    for f in fields(RunConfig):
        if f.name in _SECTION_NAMES:
            keys += [f"{f.name}.{g.name}" for g in fields(getattr(RunConfig(), f.name))]
        else:
            keys.append(f.name)
    return keys


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert `value` (possibly a string from the command line) to the field type `tp`, or raise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0])
    if tp is bool and isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    if isinstance(value, str) and tp is not str:
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            if origin is tuple:  # a,b,c without parentheses
                value = tuple(v.strip() for v in value.split(","))
            else:
                raise ConfigError(f"{key}: cannot read {value!r} as {getattr(tp, '__name__', tp)}") from None
    if origin is tuple:
        if isinstance(value, (str, int, float)):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{key}: expected a tuple, got {value!r}")
        return tuple(_coerce(key, v, args[0]) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")  # pragma: no cover


def with_overrides(cfg: RunConfig, overrides: Mapping[str, Any]) -> RunConfig:
    """Apply `{"method.beta": 0.5, "epochs": 10, ...}`; values may be strings as typed on a command line."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    keys = valid_keys()
    for key, value in overrides.items():
        if key not in keys:
            close = [k for k in keys if key.split(".")[-1] == k.split(".")[-1]]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint}; valid keys: {', '.join(keys)}")
        if "." in key:
            section, name = key.split(".", 1)
            tp = _field_type(type(getattr(cfg, section)), name)
            sections.setdefault(section, {})[name] = _coerce(key, value, tp)
        else:
            top[key] = _coerce(key, value, _field_type(RunConfig, key))
    for section, changes in sections.items():
        top[section] = replace(getattr(cfg, section), **changes)
    return validate(replace(cfg, **top))


CHOICES = {
    "data.name": ("teaching", "teaching3", "tabular", "cremad", "kinetics_sounds", "mosi"),
    "data.test_frames": ("even", "random"),
    "model.encoder": ("mlp", "resnet18", "transformer"),
    "model.fusion": ("concat", "sum", "film", "gated"),
    "model.init": ("default", "official"),
    "window.rule": ("paper", "official"),
    "method.name": ("joint", "inforeg", "ogm", "ogm_ge", "greedy", "pmr", "agm", "gblending", "mmpareto",
                    "mibalance"),
    "method.preset": tuple(PRESETS),
    "method.regulate": ("window", "always", "outside"),
    "method.score": ("mean", "sum"),
    "method.coefficient": ("paper", "official"),
    "method.trace": ("exact", "official"),
    "profile": tuple(PROFILES),
}


def validate(cfg: RunConfig) -> RunConfig:
    """Check choices and ranges; return cfg unchanged or raise ConfigError."""
    for key, allowed in CHOICES.items():
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        if obj not in allowed:
            raise ConfigError(f"{key}={obj!r} is not one of {', '.join(allowed)}")
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {cfg.epochs}")
    if cfg.grad_cosine_batches < 0 or cfg.grad_cosine_batches == 1:
        raise ConfigError(f"grad_cosine_batches must be 0 (off) or at least 2, got {cfg.grad_cosine_batches}")
    if cfg.data.frames < 1 or cfg.data.image_size < 1:
        raise ConfigError(f"data.frames and data.image_size must be positive, got {cfg.data.frames}, "
                          f"{cfg.data.image_size}")
    if cfg.optim.batch_size < 1:
        raise ConfigError(f"optim.batch_size must be at least 1, got {cfg.optim.batch_size}")
    if cfg.method.trace == "exact" and not cfg.fisher:
        raise ConfigError("method.trace='exact' needs fisher=true (the exact per-sample Tr F)")
    if cfg.device not in ("cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"device must be cpu, cuda, cuda:N or auto, got {cfg.device!r}")
    return cfg


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def make_config(
    dataset: str = "teaching",
    method: str = "joint",
    preset: str = "paper",
    seed: int = 0,
    profile: str = "ci",
    device: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> RunConfig:
    """Build a validated RunConfig: profile, then dataset and method, then preset, then overrides.

    `device` None takes the profile's (cpu for ci, auto for full: cuda when there is one).

    `method` may be `joint*` or `inforeg*` (the same method with unimodal losses of weight 1).
    Extra keyword arguments are overrides with `__` for the dot: `method__beta=0.5`.
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    name, uni = METHOD_ALIASES.get(method, (method, None))
    changes: dict[str, Any] = dict(PROFILES[profile])
    changes.update({"profile": profile, "data.name": dataset, "method.name": name, "method.preset": preset})
    changes.update(DATASET_DEFAULTS.get(dataset, {}))
    device = device if device is not None else PROFILES[profile].get("device", "cpu")
    changes.update({"seed": seed, "device": resolve_device(device)})
    changes.update(PRESETS[preset])
    if uni is not None:
        changes["method.unimodal_weight"] = uni
    if name != "inforeg":
        changes["method.regulate"] = "always"
    if name in NEEDS_VALIDATION:
        changes["data.n_val"] = NEEDS_VALIDATION[name]
    changes.update(overrides or {})
    changes.update({k.replace("__", "."): v for k, v in kwargs.items()})
    return with_overrides(RunConfig(), changes)


def from_dict(d: Mapping[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from `to_dict()` output (e.g. a cached config.json); unknown keys raise."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if key in _SECTION_NAMES and isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return with_overrides(RunConfig(), flat)
