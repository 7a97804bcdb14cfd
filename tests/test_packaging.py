"""The install files agree with each other, and the scripts do what the README says."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch", "ray-core": "ray"}  # conda-forge name -> PyPI name


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return dict(_split(r) for r in reqs)


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and not dep.startswith(("python", "pip")):
            name, spec = _split(dep)
            spec = "==" + spec[1:] if re.match(r"^=[^=]", spec) else spec  # conda's `=2.11.0` is PyPI's `==`
            out[CONDA_NAMES.get(name, name)] = spec
    return out


def test_environment_yml_lists_the_same_packages_and_versions_as_pyproject():
    """Every dependency (extras included) appears in both files with the same version constraint."""
    assert _environment() == _pyproject()


def test_torch_trio_is_pinned_to_the_gpu_machines_versions():
    """torch, torchvision and torchaudio are pinned exactly, so CPU and GPU runs use the same code."""
    deps = _pyproject()
    assert deps["torch"] == "==2.11.0"
    assert deps["torchvision"] == "==0.26.0"
    assert deps["torchaudio"] == "==2.11.0"


def test_ci_runs_exactly_the_readme_test_command():
    """.ci/run calls the test command that the README gives, and that command fails on 'no tests'."""
    readme = (ROOT / "README.md").read_text()
    assert "./run_tests.sh" in readme and "./run_all.sh" in readme
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert "./run_tests.sh" in ci
    assert 'status" -eq 5' in (ROOT / "run_tests.sh").read_text()
