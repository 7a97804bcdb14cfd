"""scripts/output_drift.py: the printed values that moved since a revision, and the prose that cites them."""
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "output_drift.py"


@pytest.fixture
def drift(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("output_drift", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    return module


def _notebook(prose: str, printed: str, warning: str = "") -> str:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": prose},
             {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "print(...)",
              "outputs": [{"name": "stdout", "output_type": "stream", "text": printed},
                          {"name": "stderr", "output_type": "stream", "text": warning}]}]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_lists_moved_values_and_the_sentences_that_cite_them(drift, tmp_path, capsys):
    nb = tmp_path / "notebooks" / "00_demo.ipynb"
    nb.parent.mkdir()
    prose = "B gains 6.5 with the probe (seeds +5.3 to +7.4), over 30 epochs."
    nb.write_text(_notebook(prose, "B probe +6.5 (seeds +5.3 to +7.4); epochs 30\n", "slow 12.0 s\n"))
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "notebook")
    nb.write_text(_notebook(prose, "B probe +6.6 (seeds +5.4 to +7.4); epochs 30\n", "slow 14.0 s\n"))
    drift.main([])
    out = capsys.readouterr().out
    assert "== 00_demo.ipynb: 2 changed output lines, 2 values moved, 2 citations" in out
    assert "- [cell 1] B probe +6.5 (seeds +5.3 to +7.4); epochs 30" in out
    assert "+6.5 -> +6.6: ...B gains 6.5 with the probe" in out
    assert "+5.3 -> +5.4:" in out
    assert "12.0" not in out  # stderr is not what a reader checks, nor what nbval compares


def test_a_notebook_missing_at_the_revision_is_named(drift, tmp_path):
    nb = tmp_path / "notebooks" / "01_new.ipynb"
    nb.parent.mkdir()
    nb.write_text(_notebook("text", "1.0\n"))
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x", "--allow-empty")
    with pytest.raises(SystemExit, match="01_new.ipynb: not readable at HEAD"):
        drift.main([str(nb)])


def test_a_notebook_outside_the_repository_is_named(drift, tmp_path):
    outside = tmp_path.parent / "elsewhere.ipynb"
    outside.write_text(_notebook("text", "1.0\n"))
    with pytest.raises(SystemExit, match="elsewhere.ipynb: not inside the repository"):
        drift.main([str(outside)])
