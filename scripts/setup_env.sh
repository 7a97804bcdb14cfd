# Sourced by run_all.sh and run_tests.sh: create .venv if it is missing and install the project into it.
# Needs only python3 (3.11 or newer) and access to the package registry. Reinstalls when pyproject.toml
# changes. Set INFOREG_PYTHON to use another interpreter for the venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${INFOREG_PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  "$py" -m venv "$venv"
fi
stamp="$venv/.inforeg-installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== installing inforeg and its dependencies into .venv (first time: a few minutes, about 5 GB)"
  # pip's warnings about this machine's local package mirrors are noise; errors still fail the script.
  "$venv/bin/python" -m pip install --quiet -e "$root[notebooks,dev]" 2>&1 | { grep -v "is ignored" || true; }
  "$venv/bin/python" -c "import inforeg, torch, papermill, nbval" \
    || { echo "installation failed: see the pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
"$venv/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null 2>&1 || true
