"""Re-execute notebooks in place with papermill (default profile) and keep only what nbval needs.

    .venv/bin/python scripts/refresh_notebooks.py [notebooks/00_quickstart.ipynb ...]

Each notebook runs from a fresh cache folder, without progress bars, (so its outputs never depend on earlier runs), then the
executed copy replaces the source only if the run succeeded. papermill's timing metadata and widget state
are dropped; outputs and execution counts stay (nbval compares them).
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parents[1]
DROP_NB = ("papermill", "widgets")
DROP_CELL = ("papermill", "execution")


def clean(nb) -> None:
    for key in DROP_NB:
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    for cell in nb.cells:
        for key in DROP_CELL:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                # widget views (tqdm bars) hold random model ids and a snapshot of the bar: drop them
                if "application/vnd.jupyter.widget-view+json" in data:
                    data.pop("application/vnd.jupyter.widget-view+json")
            cell.outputs = [o for o in cell.get("outputs", []) if o.get("output_type") != "display_data"
                            or o.get("data")]


def refresh(path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["INFOREG_CACHE_DIR"] = str(Path(tmp) / "cache")
        os.environ["TQDM_DISABLE"] = "1"  # as in run_tests.sh: no progress bars in the stored outputs
        out = Path(tmp) / path.name
        papermill.execute_notebook(str(path), str(out), kernel_name="python3", cwd=str(path.parent),
                                   progress_bar=False)
        nb = nbformat.read(out, as_version=4)
    clean(nb)
    tmp_path = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp_path)
    os.replace(tmp_path, path)
    print(f"refreshed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for p in paths:
        refresh(p)
