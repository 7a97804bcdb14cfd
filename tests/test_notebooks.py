"""Notebook hygiene (what nbval needs to check anything at all) and papermill's parameter injection."""
import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PARAMETERS = {"profile", "seed", "device", "overrides", "interactive"}


def _load(path):
    return json.loads(path.read_text())


def test_there_are_notebooks():
    """The glob that run_all.sh uses finds the notebooks."""
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_was_executed_in_order(path):
    """nbval never compares a cell without an execution count: all must have one, in order, without errors."""
    cells = [c for c in _load(path)["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in cells]
    assert None not in counts, f"{path.name}: unexecuted cells; run scripts/refresh_notebooks.py"
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    for c in cells:
        assert not any(o["output_type"] == "error" for o in c["outputs"]), f"{path.name}: stored error output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernel_and_metadata_are_portable(path):
    """kernelspec python3; no papermill timings or widget state committed."""
    nb = _load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "papermill" not in nb["metadata"] and "widgets" not in nb["metadata"]
    for c in nb["cells"]:
        assert "papermill" not in c["metadata"]
        for o in c.get("outputs", []):
            assert "application/vnd.jupyter.widget-view+json" not in o.get("data", {})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_holds_literal_defaults_only(path):
    """One cell tagged `parameters`, holding literal assignments that include the standard parameters."""
    cells = [c for c in _load(path)["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1
    tree = ast.parse("".join(cells[0]["source"]))
    names = set()
    for node in tree.body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), ast.dump(node)
        ast.literal_eval(node.value)  # raises on anything but a literal
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
        names.add(target.id)
    assert PARAMETERS <= names


def test_papermill_injects_parameters(tmp_path, monkeypatch):
    """A papermill run with injected parameters (fewer seeds and epochs) executes the quickstart."""
    import papermill

    monkeypatch.setenv("INFOREG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("INFOREG_FIG_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks/00_quickstart.ipynb"), str(out), kernel_name="python3",
                               cwd=str(ROOT / "notebooks"), progress_bar=False,
                               parameters={"n_seeds": 1, "seed": 3, "overrides": {"epochs": 4}})
    text = out.read_text()
    assert "seeds [3]; 4 epochs" in text
    assert (tmp_path / "figures" / "00_information_and_window.png").stat().st_size > 0
