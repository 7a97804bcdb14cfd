"""Re-execute notebooks in place with papermill (default profile) and keep only what nbval needs.

    .venv/bin/python scripts/refresh_notebooks.py [notebooks/00_quickstart.ipynb ...]
    .venv/bin/python scripts/refresh_notebooks.py --from build/executed/ci [notebooks/...]

With `--from DIR` nothing runs: each notebook takes the outputs of DIR/<name> (the copies `./run_all.sh` just
executed, all from one fresh cache), which must hold exactly the notebook's code cells, papermill's injected
parameters cell aside.

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


def take_executed(path: Path, executed: Path) -> None:
    """Replace `path` by the executed copy `executed`, minus papermill's injected-parameters cell."""
    nb = nbformat.read(executed, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    source = nbformat.read(path, as_version=4)
    code = lambda book: [c.source for c in book.cells]
    if code(nb) != code(source):
        raise SystemExit(f"{executed}: its cells differ from {path}; run ./run_all.sh again first")
    if nb.metadata.get("papermill", {}).get("exception"):
        raise SystemExit(f"{executed}: its run failed; nothing taken")
    clean(nb)
    count = 0  # number the cells as a run without the injected cell would
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = count
    tmp_path = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp_path)
    os.replace(tmp_path, path)
    print(f"took the outputs of {executed} into {path.relative_to(ROOT)}")


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
    args = sys.argv[1:]
    source_dir = None
    if args[:1] == ["--from"]:
        if len(args) < 2:
            raise SystemExit("--from needs a folder of executed notebooks (e.g. build/executed/ci)")
        source_dir, args = Path(args[1]).resolve(), args[2:]
    paths = [Path(p).resolve() for p in args] or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for p in paths:
        if source_dir is None:
            refresh(p)
        else:
            take_executed(p, source_dir / p.name)
