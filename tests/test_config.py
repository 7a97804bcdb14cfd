"""RunConfig: presets, validation with helpful errors, `key=value` coercion, stable hashes, round trips."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from inforeg.config import (
    CHOICES,
    PRESETS,
    ConfigError,
    RunConfig,
    from_dict,
    make_config,
    valid_keys,
    with_overrides,
)


def _get(cfg: RunConfig, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _set_raw(cfg: RunConfig, key: str, value) -> RunConfig:
    """Replace one field without validation (the hash must see every field, valid or not)."""
    if "." in key:
        section, name = key.split(".", 1)
        return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})
    return dataclasses.replace(cfg, **{key: value})


# --- presets and make_config -------------------------------------------------------------------------

def test_paper_preset_is_the_dataclass_defaults():
    """The paper preset changes nothing beyond method name/preset: it is the equations as printed."""
    cfg = make_config(method="inforeg", preset="paper")
    assert cfg == with_overrides(RunConfig(), {"method.name": "inforeg"})
    assert cfg.method.unimodal_weight == 0.0
    assert cfg.method.score == "mean"
    assert cfg.method.coefficient == "paper"
    assert cfg.method.trace == "exact"
    assert cfg.window.rule == "paper"
    assert cfg.window.min_epoch == 2


def test_official_preset_sets_the_official_code_quirks():
    """The official preset sets every field of PAPER.md section 3 (unimodal losses, sum score, ...)."""
    cfg = make_config(method="inforeg", preset="official")
    assert cfg.method.preset == "official"
    assert cfg.method.unimodal_weight == 1.0
    assert cfg.method.score == "sum"
    assert cfg.method.coefficient == "official"
    assert cfg.method.trace == "official"
    assert cfg.window.rule == "official"
    assert cfg.window.min_epoch == 0
    # and nothing the preset does not name differs from the paper preset
    paper = make_config(method="inforeg", preset="paper")
    changed = {k for k in valid_keys() if _get(cfg, k) != _get(paper, k)}
    assert changed == set(PRESETS["official"]) | {"method.preset"}


def test_overrides_win_over_preset():
    """Explicit overrides are applied after the preset."""
    cfg = make_config(method="inforeg", preset="official", overrides={"window.min_epoch": 3})
    assert cfg.window.min_epoch == 3
    assert cfg.method.score == "sum"


def test_make_config_sets_dataset_seed_method():
    """make_config's arguments land in the fields they name."""
    cfg = make_config(dataset="teaching3", method="inforeg", seed=7)
    assert (cfg.data.name, cfg.method.name, cfg.seed, cfg.profile) == ("teaching3", "inforeg", 7, "ci")


def test_star_methods_add_unimodal_losses():
    """`joint*` / `inforeg*` are the same methods with unimodal loss weight 1."""
    for alias, name in (("joint*", "joint"), ("inforeg*", "inforeg")):
        cfg = make_config(method=alias)
        assert cfg.method.name == name
        assert cfg.method.unimodal_weight == 1.0
        assert cfg.label.startswith(name + "*")
    assert make_config(method="inforeg").method.unimodal_weight == 0.0


def test_kwargs_with_double_underscore_are_overrides():
    """make_config(method__beta=0.5) is the override method.beta=0.5."""
    assert make_config(method__beta=0.5).method.beta == 0.5
    assert make_config(epochs=4).epochs == 4


def test_label_names_single_modality_runs():
    """A run on one modality is labelled `<m> alone`; InfoReg names its preset."""
    assert make_config(overrides={"data.modalities": ("B",)}).label == "B alone"
    assert make_config(method="inforeg", preset="official").label == "inforeg* (official)"


# --- errors ------------------------------------------------------------------------------------------

def test_unknown_key_lists_valid_keys():
    """An unknown key raises ConfigError naming it and listing the valid keys."""
    with pytest.raises(ConfigError) as e:
        make_config(overrides={"method.betaa": 0.5})
    msg = str(e.value)
    assert "method.betaa" in msg
    assert "method.beta" in msg and "optim.lr" in msg


def test_unknown_key_suggests_close_match():
    """A key in the wrong section suggests the right one."""
    with pytest.raises(ConfigError, match=r"did you mean method\.beta"):
        with_overrides(RunConfig(), {"optim.beta": 0.5})


def test_unknown_preset_lists_presets():
    """An unknown preset raises ConfigError listing paper and official."""
    with pytest.raises(ConfigError) as e:
        make_config(preset="papr")
    assert "papr" in str(e.value) and "paper" in str(e.value) and "official" in str(e.value)


def test_unknown_profile_lists_profiles():
    """An unknown profile raises ConfigError listing the known ones."""
    with pytest.raises(ConfigError) as e:
        make_config(profile="huge")
    assert "huge" in str(e.value) and "ci" in str(e.value)


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_unknown_choice_lists_allowed_values(key):
    """Every choice field rejects a value outside its choices, naming the key and the allowed values."""
    with pytest.raises(ConfigError) as e:
        with_overrides(RunConfig(), {key: "no_such_choice"})
    msg = str(e.value)
    assert key in msg and "no_such_choice" in msg
    for allowed in CHOICES[key]:
        assert allowed in msg


def test_unknown_method_via_make_config():
    """make_config(method='foo') fails with the known methods in the message."""
    with pytest.raises(ConfigError, match="joint.*inforeg"):
        make_config(method="foo")


@pytest.mark.parametrize("overrides, needle", [
    ({"epochs": 0}, "epochs"),
    ({"optim.batch_size": 0}, "batch_size"),
    ({"fisher": False}, "fisher"),
    ({"device": "tpu"}, "device"),
    ({"method.beta": "abc"}, "method.beta"),
    ({"epochs": 2.5}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"method.beta": True}, "method.beta"),
    ({"data.name": 3}, "data.name"),
])
def test_invalid_values_raise_config_error(overrides, needle):
    """Out-of-range or wrongly typed values raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        with_overrides(RunConfig(), overrides)


def test_config_error_is_a_value_error():
    """ConfigError subclasses ValueError so generic handlers catch it."""
    assert issubclass(ConfigError, ValueError)


# --- coercion of command-line strings ----------------------------------------------------------------

@pytest.mark.parametrize("key, text, expected", [
    ("method.beta", "0.5", 0.5),
    ("method.beta", "1", 1.0),
    ("epochs", "7", 7),
    ("epochs", "3.0", 3),
    ("optim.lr", "2e-2", 0.02),
    ("fisher", "True", True),
    ("data.amplitude", "(1.0,0.3)", (1.0, 0.3)),
    ("data.amplitude", "1.0, 0.3", (1.0, 0.3)),
    ("data.modalities", "B", ("B",)),
    ("data.modalities", "A,B", ("A", "B")),
    ("data.modalities", "('A', 'B')", ("A", "B")),
    ("data.modalities", "none", None),
    ("data.n_train", "none", None),
    ("data.n_train", "null", None),
    ("data.n_train", "128", 128),
    ("optim.step_size", "None", None),
    ("window.watch", "B", "B"),
    ("device", "cuda:1", "cuda:1"),
    ("method.official_c", "0.9", (0.9,)),
])
def test_with_overrides_coerces_strings(key, text, expected):
    """Strings typed on a command line become the field's type."""
    value = _get(with_overrides(RunConfig(), {key: text}), key)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, tuple):
        assert [type(v) for v in value] == [type(v) for v in expected]


@pytest.mark.parametrize("text, expected", [("true", True), ("false", False), ("True", True),
                                            ("False", False)])
def test_bool_strings_any_case(text, expected):
    """`true` / `false` (as typed on a command line, and as the error messages spell them) are booleans."""
    cfg = with_overrides(RunConfig(), {"method.trace": "official", "fisher": text})
    assert cfg.fisher is expected


def test_int_field_rejects_fraction_string():
    """'3.5' for an integer field is an error, not a silent truncation."""
    with pytest.raises(ConfigError, match="epochs"):
        with_overrides(RunConfig(), {"epochs": "3.5"})


def test_with_overrides_does_not_mutate_and_keeps_other_fields():
    """with_overrides returns a new config; the original and untouched fields stay the same."""
    base = make_config(method="inforeg")
    new = with_overrides(base, {"method.beta": "0.5"})
    assert base.method.beta == 0.9
    assert new.method.beta == 0.5
    assert new.method.name == "inforeg"
    assert dataclasses.replace(new, method=base.method) == base


# --- hash --------------------------------------------------------------------------------------------

def test_hash_is_deterministic_and_short():
    """Equal configs have equal hashes; the hash is a 16-hex-digit string."""
    a, b = make_config(method="inforeg", seed=3), make_config(method="inforeg", seed=3)
    assert a is not b and a.hash() == b.hash()
    assert len(a.hash()) == 16 and int(a.hash(), 16) >= 0


def test_hash_stable_across_processes():
    """A fresh interpreter (another hash seed) computes the same hash."""
    cfg = make_config(method="inforeg", preset="official", seed=4, overrides={"data.modalities": ("B",)})
    code = ("from inforeg.config import make_config; print(make_config(method='inforeg', preset='official', "
            "seed=4, overrides={'data.modalities': ('B',)}).hash())")
    for hashseed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": hashseed, "PATH": ""})
        assert out.stdout.strip() == cfg.hash()


@pytest.mark.parametrize("key", valid_keys())
def test_hash_changes_with_every_field(key):
    """Changing any single field changes the hash (so no two runs share a cache entry)."""
    cfg = RunConfig()
    old = _get(cfg, key)
    new = "changed" if not isinstance(old, str) else old + "_changed"
    assert _set_raw(cfg, key, new).hash() != cfg.hash()


def test_hash_changes_with_realistic_overrides():
    """Typical differences between runs give different hashes."""
    hashes = {make_config().hash(), make_config(seed=1).hash(), make_config(method="inforeg").hash(),
              make_config(method="inforeg*").hash(), make_config(method="inforeg", preset="official").hash(),
              make_config(overrides={"data.modalities": ("B",)}).hash(), make_config(epochs=29).hash(),
              make_config(overrides={"optim.lr": 0.02}).hash()}
    assert len(hashes) == 8


# --- round trip and immutability ---------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [
    RunConfig(),
    make_config(method="inforeg", preset="official", seed=3),
    make_config(method="inforeg*", overrides={"data.modalities": ("B",), "data.amplitude": (1.0, 0.3),
                                              "data.n_train": 100, "window.watch": "B", "optim.step_size": 5}),
], ids=["default", "official", "tuples"])
def test_from_dict_round_trips(cfg):
    """from_dict(to_dict()) gives the same config and hash, also through JSON (tuples become lists)."""
    assert from_dict(cfg.to_dict()) == cfg
    back = from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert back.hash() == cfg.hash()


def test_from_dict_rejects_unknown_keys():
    """A dict with a key RunConfig does not have raises ConfigError."""
    d = RunConfig().to_dict()
    d["method"]["gamma"] = 1.0
    with pytest.raises(ConfigError, match="method.gamma"):
        from_dict(d)


def test_run_config_is_frozen():
    """RunConfig and its sections cannot be modified in place."""
    cfg = make_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.method.beta = 0.1
    assert cfg.epochs == 30 and cfg.method.beta == 0.9


def test_config_is_hashable():
    """Frozen configs can be used as dict keys / in sets."""
    assert len({make_config(), make_config(), make_config(seed=1)}) == 2
