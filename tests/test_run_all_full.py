"""`./run_all.sh full --dry-run`: every notebook's full-profile path (CREMA-D, Kinetics-Sounds for Table 2's second
column, CMU-MOSI) runs to the end on small random caches in the real formats, on this CPU. What it checks is that
the code the GPU run will execute works with real-data shapes (ResNet-18 pairs, 6 or 31 classes, spectrograms and
frames, three sequence modalities, no validation split or MOSI's own); the numbers of random data mean nothing.
It takes a few minutes: one seed, 3 epochs, 32 training clips, 16-pixel frames."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_dry_run_runs_every_notebooks_full_path(tmp_path):
    env = {**os.environ, "INFOREG_DRY_RUN_DIR": str(tmp_path), "TQDM_DISABLE": "1"}
    run = subprocess.run(["bash", str(ROOT / "run_all.sh"), "full", "--dry-run"], capture_output=True, text=True,
                         env=env, timeout=3000)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "all notebooks ran" in run.stdout
    executed = ROOT / "build" / "executed" / "full-dry-run"
    names = [nb.name for nb in NOTEBOOKS] + ["08_main_comparison.kinetics_sounds.ipynb"]
    for name in names:
        assert f"== {name} (full-dry-run)" in run.stdout, name
        nb = json.loads((executed / name).read_text())
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o["output_type"] == "error"], name
        text = "".join("".join(o.get("text", "")) for o in outputs if o["output_type"] == "stream")
        assert "profile 'full'" in text, f"{name}: the full path does not say what it studies"
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert images, f"{name}: no figure drawn"
    figures = {p.name.split("_")[0] for p in (tmp_path / "figures").glob("*.png")}
    assert {nb.name[:2] for nb in NOTEBOOKS} <= figures  # every notebook saved its figures
    # the results are those of the random caches, nowhere near the real data's folder or the ci cache
    assert (tmp_path / "data" / "cremad" / "manifest.json").is_file() and any((tmp_path / "cache").iterdir())
