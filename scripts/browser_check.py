"""Run notebooks in JupyterLab in headless Chromium, through the UI, and check what a reader sees.

    .venv/bin/python scripts/browser_check.py [--out build/browser] [--notebooks NAME|PATH ...]
    .venv/bin/python scripts/browser_check.py --reader-shot docs/quickstart.png

Each notebook is copied with papermill's prepare-only mode (parameters set for speed; the originals are not
touched) and opened in JupyterLab, started from this environment on 127.0.0.1 with a random free port and a
random token, a temporary results cache and its own settings. Run > Run All Cells runs it; once the kernel is
idle and every code cell has an execution count, the check asserts that
  * no cell shows an error or anything on stderr (warnings included) and no progress bar is left behind;
  * every cell that calls savefig or plt.show shows a decoded image, at no less than 70 % of its size;
  * the ipywidgets explorer renders, and moving its first slider (then pressing its button, if it has one)
    redraws the figure: the image data changes.
A screenshot of each whole notebook and one of its explorer go to --out. JupyterLab with its kernels and their
workers, chromedriver and Chromium are stopped on success and on failure alike.

Chromium is Debian's (`chromium`, `chromium-driver`): when missing it is installed with apt-get if this runs as
root; otherwise the check stops with exit code 3 and says how to install it. Selenium drives it: a PyPI package
that the project's venv installs anyway (no Node toolchain), given Debian's chromedriver so nothing is
downloaded. Exit codes: 0 every check passed, 1 a check failed, 3 no browser could be had.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--force-device-scale-factor=1", "--hide-scrollbars")
WINDOW = (1280, 1050)  # the page gets about 1280 x 900 of it
# The notebooks and the parameters of their browser run: short, but every cell and the explorer run.
NOTEBOOKS = {
    "00_quickstart": {"n_seeds": 2, "overrides": {"epochs": 12}, "interactive": True},
    "10_fusion_strategies": {"n_seeds": 2, "overrides": {"epochs": 6}, "interactive": True},
}
READER = {"interactive": True}  # --reader-shot: the quickstart with its own defaults, as a reader runs it
FIGURE_CALLS = ("plt.show(", "savefig(")
MIN_SCALE = 0.7  # a figure shrunk further than this to fit the notebook has unreadably small text
RETRY_AFTER = 120.0  # seconds after pressing an explorer's button before pressing it once more
MARK = "INFOREG_BROWSER_CHECK"  # set in every process this check starts, so that all can be found and stopped


class BrowserUnavailable(RuntimeError):
    """No Chromium with its driver, and no way to install them here."""


class CheckFailed(AssertionError):
    """What the reader would see is wrong."""


def log(msg: str) -> None:
    print(f"[browser-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- Chromium
def ensure_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing Debian's packages with apt-get when missing (root only)."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if all(found):
        return found
    missing = " and ".join(n for n, p in zip(("chromium", "chromedriver"), found) if not p)
    if not shutil.which("apt-get"):
        raise BrowserUnavailable(f"{missing} not found on PATH and there is no apt-get to install them: "
                                 "install Chromium and its matching chromedriver")
    if os.geteuid() != 0:
        raise BrowserUnavailable(f"{missing} not found on PATH and this is not root, so apt-get cannot install "
                                 "them: run `sudo apt-get install chromium chromium-driver`")
    log(f"{missing} missing: installing Debian's chromium and chromium-driver with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise BrowserUnavailable(f"`{' '.join(cmd)}` failed with exit code {done.returncode}:\n{tail}")
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found):
        raise BrowserUnavailable("apt-get installed chromium and chromium-driver, yet chromium or chromedriver "
                                 "is still not on PATH")
    return found


def start_browser(chromium: str, chromedriver: str, profile_dir: Path, log_file: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    # an explicit driver path: Selenium Manager (which would download a driver) is never called
    service = Service(executable_path=chromedriver, log_output=str(log_file), service_args=["--log-level=WARNING"])
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(120)
    return driver


# ---------------------------------------------------------------- JupyterLab
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    proc: subprocess.Popen
    url: str
    token: str

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        for k in self.api("/api/kernels"):
            self.api(f"/api/kernels/{k['id']}", method="DELETE")


def start_lab(work: Path, tmp: Path, env: dict, log_file: Path) -> Lab:
    """JupyterLab on loopback with a token; Jupyter's config, data, runtime and lab settings all in `tmp`."""
    port, token = free_port(), secrets.token_hex(24)
    settings = tmp / "lab-settings"
    toasts = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    toasts.parent.mkdir(parents=True)
    toasts.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))  # no news over the page
    env = {**env, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"),
           "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"), "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
    if os.geteuid() == 0:  # CI runs as root; the server listens on loopback only and wants the token
        cmd.append("--allow-root")
    with log_file.open("w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    lab = Lab(proc, f"http://127.0.0.1:{port}", token)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode} before serving; its log: {log_file}")
        try:
            lab.api("/api/status")
            return lab
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer on {lab.url} within 90 s; its log: {log_file}")


def stop_lab(lab: Lab) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure its process group is gone."""
    if lab.proc.poll() is None:
        try:
            lab.api("/api/shutdown", method="POST")
            lab.proc.wait(timeout=30)
        except Exception:  # a server that does not answer is stopped by signal below
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if lab.proc.poll() is not None:
            break
        try:
            os.killpg(lab.proc.pid, sig)
            lab.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def kill_marked(mark: str) -> None:
    """Stop whatever this check started and is still running: kernels (their own sessions), their workers,
    Chromium's helpers. Each carries MARK=mark in its environment, inherited from this process or the server."""
    needle = f"{MARK}={mark}".encode()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                try:
                    if needle in (d / "environ").read_bytes().split(b"\0"):
                        pids.append(int(d.name))
                except OSError:  # gone already, or not ours to read
                    pass
        if not pids:
            return
        log(f"stopping {len(pids)} leftover process(es) with signal {sig.name}")
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


# ---------------------------------------------------------------- notebooks
def resolve(spec: str) -> tuple[str, Path, dict]:
    """(name, source path, parameters) for a name in NOTEBOOKS or the path of any other notebook."""
    if spec in NOTEBOOKS:
        return spec, ROOT / "notebooks" / f"{spec}.ipynb", NOTEBOOKS[spec]
    path = Path(spec)
    if path.suffix != ".ipynb" or not path.is_file():
        raise SystemExit(f"{spec}: neither one of {', '.join(NOTEBOOKS)} nor an existing .ipynb file")
    return path.stem, path.resolve(), {}


def prepare(src: Path, params: dict, dst: Path) -> list[str]:
    """papermill's prepare-only copy with `params`, outputs cleared; returns each cell's source."""
    import nbformat
    import papermill

    if not src.is_file():
        raise FileNotFoundError(f"{src}: notebook not found")
    papermill.execute_notebook(str(src), str(dst), parameters=params, prepare_only=True, kernel_name="python3",
                               progress_bar=False, log_output=False)
    nb = nbformat.read(dst, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, dst)
    return [c.source for c in nb.cells]


# What the page shows, read from the DOM of the notebook in front.
JS_PANEL = "const panel = document.querySelector('#jp-main-dock-panel .jp-NotebookPanel:not(.lm-mod-hidden)');"
# The toolbar's indicator says 'idle' even before a kernel exists; the status bar names the kernel too.
JS_STATUS = JS_PANEL + r"""
const ind = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
const bar = [...document.querySelectorAll('.jp-StatusBar-TextItem')].map(e => e.textContent.trim())
            .find(t => / \| /.test(t)) || '';
if (!ind || !bar || bar.startsWith('No Kernel')) return 'no kernel';
return ind.getAttribute('data-status') === 'idle' && bar.endsWith('| Idle') ? 'idle' : 'busy';"""
JS_CELLS = JS_PANEL + """
return [...panel.querySelectorAll('.jp-Notebook .jp-Cell')].map(c => ({
  code: c.classList.contains('jp-CodeCell'),
  prompt: (c.querySelector('.jp-InputArea-prompt') || {textContent: ''}).textContent.trim(),
  images: [...c.querySelectorAll('.jp-OutputArea img')].map(im => ({
    ok: im.complete && im.naturalWidth > 0, natural: im.naturalWidth, shown: im.getBoundingClientRect().width})),
  stderr: [...c.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
          .map(o => o.textContent.trim()).filter(t => t),
  progress: c.querySelectorAll('.jp-OutputArea .widget-hprogress, .jp-OutputArea progress').length,
  widgetError: [...c.querySelectorAll('.jp-OutputArea .jupyter-widgets')]
               .some(w => /Error displaying widget|model not found/i.test(w.textContent)),
}));"""
JS_FULL_HEIGHT = JS_PANEL + """
const outer = panel.querySelector('.jp-WindowedPanel-outer');
return Math.ceil(window.outerHeight - outer.clientHeight + outer.scrollHeight);"""
JS_SCROLL_TOP = JS_PANEL + "panel.querySelector('.jp-WindowedPanel-outer').scrollTop = 0;"


def wait_for(what: str, predicate, timeout: float, poll: float = 0.5):
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except StaleElementReferenceException:  # the page redrew what we were reading: look again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def kernel_status(driver) -> str:
    return driver.execute_script(JS_STATUS)


def executed(prompt: str) -> bool:
    return prompt[1:-2].strip().isdigit()  # "[12]:"; "[ ]:" not run, "[*]:" queued or running


def run_all_cells(driver, timeout: float) -> list[dict]:
    """Run > Run All Cells from the menu bar; wait until the kernel is idle and every code cell has run (or
    until an error stopped the run)."""
    from selenium.webdriver.common.by import By

    menu = next((m for m in driver.find_elements(By.CSS_SELECTOR, "#jp-menu-panel .lm-MenuBar-item")
                 if m.text.strip() == "Run"), None)
    if menu is None:
        raise CheckFailed("the menu bar has no Run menu")
    menu.click()
    item = wait_for("the Run menu to show Run All Cells", lambda: [
        i for i in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu .lm-Menu-item")
        if i.text.split("\n")[0].strip() == "Run All Cells"], 10)
    item[0].click()

    def finished():
        cells = driver.execute_script(JS_CELLS)
        code = [c for c in cells if c["code"]]
        if any(c["prompt"] == "[*]:" for c in code) or kernel_status(driver) != "idle":
            return None
        stopped = any("Traceback" in t or "Error" in t for c in code for t in c["stderr"])
        return all(executed(c["prompt"]) for c in code) or stopped

    wait_for("the kernel to go idle with every code cell executed", finished, timeout, poll=1.0)
    time.sleep(1.0)  # let the last images decode
    return driver.execute_script(JS_CELLS)


def check_cells(name: str, sources: list[str], cells: list[dict]) -> tuple[list[str], int | None]:
    """What is wrong on the page, and the index of the explorer cell (None if there is none)."""
    if len(cells) != len(sources):
        return [f"{name}: the page shows {len(cells)} cells, the notebook has {len(sources)}"], None
    problems, explorer = [], None
    for i, (src, cell) in enumerate(zip(sources, cells)):
        if not cell["code"]:
            continue
        where = f"{name} cell {i}"
        if not executed(cell["prompt"]):
            problems.append(f"{where} did not run (prompt {cell['prompt']!r})")
        for text in cell["stderr"]:
            kind = "an error" if "Traceback" in text or "Error" in text else "stderr output (a warning?)"
            problems.append(f"{where} shows {kind}: {text[:600]}")
        if cell["progress"]:
            problems.append(f"{where}: a progress bar is left in the output")
        if cell["widgetError"]:
            problems.append(f"{where}: a widget failed to display")
        if "widgets." in src and "interact" in src:
            explorer = i
        elif any(call in src for call in FIGURE_CALLS):
            if not cell["images"]:
                problems.append(f"{where} calls savefig/plt.show but shows no image")
        for im in cell["images"]:
            if not im["ok"]:
                problems.append(f"{where}: an image did not load")
            elif im["shown"] < MIN_SCALE * im["natural"]:
                problems.append(f"{where}: a figure {im['natural']} px wide is shrunk to {im['shown']:.0f} px to fit "
                                f"the notebook, its text to {im['shown'] / im['natural']:.0%}: make it narrower")
    return problems, explorer


def cell_element(driver, index: int):
    from selenium.webdriver.common.by import By

    panel = driver.find_element(By.CSS_SELECTOR, "#jp-main-dock-panel .jp-NotebookPanel:not(.lm-mod-hidden)")
    return panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[index]


def image_sources(driver, cell) -> list[str]:
    # in one script: a redraw clears the output between a lookup and a read of the elements it found
    return driver.execute_script(
        "return [...arguments[0].querySelectorAll('.jp-OutputArea img')].map(im => im.src);", cell)


def check_explorer(driver, name: str, index: int, timeout: float, shot: Path) -> None:
    """The explorer's controls render; moving the first slider (then pressing the button, if there is one)
    redraws the figure with different image data."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    cell = cell_element(driver, index)
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", cell)
    sliders = wait_for(f"{name}'s explorer sliders to render", lambda: cell.find_elements(
        By.CSS_SELECTOR, ".jp-OutputArea .widget-slider.widget-hslider"), 30)
    buttons = [b for b in cell.find_elements(By.CSS_SELECTOR, ".jp-OutputArea button.jupyter-button")
               if b.is_displayed()]

    def redraw(what: str, before: list[str]) -> list[str]:
        t0 = time.monotonic()
        if buttons:
            buttons[0].click()

        def new_image():
            now = image_sources(driver, cell)
            return now if now and all(now) and now != before and kernel_status(driver) == "idle" else None

        try:
            images = wait_for(what, new_image, min(RETRY_AFTER, timeout) if buttons else timeout, poll=1.0)
        except CheckFailed:
            if not buttons:
                raise
            # Seen once, in 10_fusion_strategies: the explorer ran (its printed line was there) but JupyterLab
            # showed no figure in the output widget for 10 minutes. Press the button once more; a second miss fails.
            log(f"{name}: {what}: no new figure {RETRY_AFTER:.0f} s after pressing the button; pressing it again")
            buttons[0].click()
            images = wait_for(what, new_image, timeout, poll=1.0)
        log(f"{name}: {what}: {time.monotonic() - t0:.0f} s")
        return images

    first = redraw("explorer draws its figure", [])  # interact draws at once, interact_manual on its button
    readout = sliders[0].find_element(By.CSS_SELECTOR, ".widget-readout")
    label = sliders[0].find_element(By.CSS_SELECTOR, ".widget-label").text.strip() or "the first slider"
    value = readout.text.strip()
    handle = sliders[0].find_element(By.CSS_SELECTOR, ".noUi-handle")
    handle.click()
    for _ in range(2):
        handle.send_keys(Keys.ARROW_RIGHT)
    moved = wait_for(f"{name}'s slider {label!r} to move", lambda: (lambda v: v if v != value else None)(
        readout.text.strip()), 10)
    redraw(f"explorer redraws after {label} moved from {value} to {moved}", first)
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'});",
                          cell.find_element(By.CSS_SELECTOR, ".jp-Cell-outputWrapper"))
    time.sleep(1.0)
    driver.save_screenshot(str(shot))


def full_screenshot(driver, path: Path) -> None:
    """The whole notebook in one image: make the window as tall as the notebook, shoot, restore."""
    driver.set_window_size(WINDOW[0], min(max(driver.execute_script(JS_FULL_HEIGHT), WINDOW[1]), 16000))
    time.sleep(1.0)
    driver.execute_script(JS_SCROLL_TOP)
    time.sleep(1.5)
    driver.save_screenshot(str(path))
    driver.set_window_size(*WINDOW)
    time.sleep(0.5)


def reader_screenshot(driver, sources: list[str], path: Path) -> None:
    """The window as a reader sees it at the first figure (the prose and code above it, the figure),
    saved with a 256-colour palette: text and lines stay sharp and the file stays small enough to commit."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    fig = next(i for i, s in enumerate(sources) if any(c in s for c in FIGURE_CALLS))
    output = cell_element(driver, fig).find_element(By.CSS_SELECTOR, ".jp-Cell-outputWrapper")
    driver.execute_script("arguments[0].scrollIntoView({block: 'end'});", output)
    driver.execute_script(JS_PANEL + "panel.querySelector('.jp-WindowedPanel-outer').scrollBy(0, 24);")
    time.sleep(1.0)
    img = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    tmp = path.with_name(path.name + ".tmp")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        tmp, format="PNG", optimize=True)
    os.replace(tmp, path)
    log(f"reader's view saved to {path} ({path.stat().st_size // 1024} KB)")


def check_notebook(driver, lab: Lab, name: str, sources: list[str], out: Path, timeout: float,
                   reader_shot: Path | None = None) -> list[str]:
    """Open, run all, check; returns the problems found."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    t0 = time.monotonic()
    driver.get(f"{lab.url}/lab/workspaces/check-{name}/tree/{name}.ipynb?reset&token={lab.token}")
    problems: list[str] = []
    try:
        wait_for(f"JupyterLab to open {name}", lambda: driver.find_elements(
            By.CSS_SELECTOR, "#jp-main-dock-panel .jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"), 90)
        wait_for(f"{name}'s kernel to start", lambda: kernel_status(driver) == "idle", 90)
        log(f"{name}: open, kernel idle; Run > Run All Cells")
        cells = run_all_cells(driver, timeout)
        log(f"{name}: Run All Cells finished in {time.monotonic() - t0:.0f} s")
        problems, explorer = check_cells(name, sources, cells)
        full_screenshot(driver, out / f"{name}.png")
        if reader_shot is not None:
            reader_screenshot(driver, sources, reader_shot)
        if explorer is None:
            problems.append(f"{name}: no ipywidgets explorer cell found")
        elif not problems:
            check_explorer(driver, name, explorer, timeout, out / f"{name}_explorer.png")
            problems += check_cells(f"{name}, after using its explorer,", sources, driver.execute_script(JS_CELLS))[0]
    except (CheckFailed, WebDriverException) as err:
        problems.append(f"{name}: {type(err).__name__}: {err}")
    finally:
        if problems:
            driver.save_screenshot(str(out / f"{name}_failed.png"))
        lab.shutdown_kernels()
    log(f"{name}: {'FAILED' if problems else 'passed'} in {time.monotonic() - t0:.0f} s")
    return problems


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "browser", help="screenshots and logs")
    ap.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS), metavar="NAME|PATH",
                    help=f"names among {', '.join(NOTEBOOKS)} (with their fast parameters) or other notebooks' "
                         "paths (run as they are)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds for one notebook's Run All")
    ap.add_argument("--reader-shot", type=Path, default=None,
                    help="run only 00_quickstart, with its own default parameters, and save the window a reader "
                         "sees at its first figure to this PNG (the README's docs/quickstart.png)")
    args = ap.parse_args(argv)
    plan = [resolve(n) for n in args.notebooks]
    if args.reader_shot:
        plan = [("00_quickstart", ROOT / "notebooks" / "00_quickstart.ipynb", READER)]
    try:
        chromium, chromedriver = ensure_chromium()
    except BrowserUnavailable as err:
        print(f"browser check: no browser: {err}", file=sys.stderr)
        return 3
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    mark = secrets.token_hex(8)
    os.environ[MARK] = mark  # chromedriver and Chromium inherit it from here, JupyterLab from `env`
    problems: list[str] = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="inforeg-browser-") as tmp_name:
        tmp = Path(tmp_name)
        work = tmp / "notebooks"
        work.mkdir()
        # the reader's environment: progress bars shown, the inline backend; caches and figures kept apart
        env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "MPLBACKEND")}
        env |= {"INFOREG_CACHE_DIR": str(tmp / "cache"), "INFOREG_FIG_DIR": str(tmp / "figures")}
        sources = {}
        for name, src, params in plan:
            sources[name] = prepare(src, params, work / f"{name}.ipynb")
            log(f"prepared {name} with {params}")
        lab = driver = None
        try:
            lab = start_lab(work, tmp, env, out / "jupyterlab.log")
            log(f"JupyterLab serving on {lab.url}")
            driver = start_browser(chromium, chromedriver, tmp / "chromium-profile", out / "chromedriver.log")
            for name, _, _ in plan:
                shot = args.reader_shot.resolve() if args.reader_shot else None
                problems += check_notebook(driver, lab, name, sources[name], out, args.timeout, shot)
        finally:
            if driver is not None:
                driver.quit()
            if lab is not None:
                stop_lab(lab)
            kill_marked(mark)
    log(f"finished in {time.monotonic() - t_start:.0f} s; screenshots in {out}")
    if problems:
        print("browser check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"browser check passed: {', '.join(name for name, _, _ in plan)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
