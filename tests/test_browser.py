"""The notebooks as a reader sees them: JupyterLab in headless Chromium (scripts/browser_check.py).

The script installs Debian's chromium when it is missing (as root), so a fresh machine runs these tests too.
Without a browser they fail and say why; INFOREG_SKIP_BROWSER=1 turns that failure into a skip with the reason.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "browser_check.py"
NO_BROWSER = 3  # the script's exit code when no Chromium could be found or installed


def _browser_check(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    if done.returncode == NO_BROWSER:
        reason = (done.stderr.strip().splitlines() or ["no browser"])[-1]
        if os.environ.get("INFOREG_SKIP_BROWSER") == "1":
            pytest.skip(f"INFOREG_SKIP_BROWSER=1 and {reason}")
        pytest.fail(f"{done.stderr.strip()}\n(INFOREG_SKIP_BROWSER=1 skips the browser tests on such a machine)")
    return done


def test_without_chromium_and_root_the_check_says_how_to_install_it(monkeypatch):
    """No browser on PATH and no root for apt-get: a clear error, never a silent pass."""
    spec = importlib.util.spec_from_file_location("browser_check", SCRIPT)
    check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "browser_check", check)  # its dataclass looks itself up there
    spec.loader.exec_module(check)
    monkeypatch.setattr(check.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(check.os, "geteuid", lambda: 1000)
    with pytest.raises(check.BrowserUnavailable, match="chromium and chromedriver not found.*sudo apt-get install "
                                                       "chromium chromium-driver"):
        check.ensure_chromium()


def test_a_broken_notebook_fails_the_check_with_each_problem_named(tmp_path):
    """A warning, an error (and the cell it kept from running), a figure cell without a figure, a progress bar
    left behind and a missing explorer: each is reported with its cell."""
    nb = new_notebook(cells=[
        new_markdown_cell("# broken on purpose"),
        new_code_cell("import warnings\nimport matplotlib.pyplot as plt\nwarnings.warn('odd input')"),
        new_code_cell("plt.plot([1, 2])\nplt.show()"),
        new_code_cell("plt.show()  # nothing drawn"),
        new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(3), leave=True):\n    pass"),
        new_code_cell("1 / 0"),
        new_code_cell("print('never reached')"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    done = _browser_check("--notebooks", str(path), "--out", str(tmp_path / "out"), "--timeout", "180")
    assert done.returncode == 1, done.stdout + done.stderr
    report = done.stderr
    assert "broken cell 1 shows stderr output (a warning?)" in report and "odd input" in report
    assert "broken cell 2" not in report  # the figure that was drawn is shown
    assert "broken cell 3 calls savefig/plt.show but shows no image" in report
    assert "broken cell 4: a progress bar is left in the output" in report
    assert "broken cell 5 shows an error" in report and "ZeroDivisionError" in report
    assert "broken cell 6 did not run" in report
    assert "broken: no ipywidgets explorer cell found" in report
    assert (tmp_path / "out" / "broken.png").stat().st_size > 10_000


def test_notebooks_run_in_jupyterlab_and_show_their_figures_and_explorer():
    """00_quickstart and 10_fusion_strategies through Run > Run All Cells: no error or warning shown, every
    figure cell shows its image, the explorer's slider redraws its figure; screenshots in build/browser/."""
    out = ROOT / "build" / "browser"
    done = _browser_check("--out", str(out))
    assert done.returncode == 0, f"browser check failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-6000:]}"
    for name in ("00_quickstart", "10_fusion_strategies"):
        for shot in (f"{name}.png", f"{name}_explorer.png"):
            assert (out / shot).stat().st_size > 20_000, f"{out / shot}: screenshot missing or blank"
