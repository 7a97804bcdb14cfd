#!/usr/bin/env bash
# The test command: set up .venv like run_all.sh, then the unit tests and nbval over notebooks/.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
export TQDM_DISABLE=1
cache="$(mktemp -d)"; trap 'rm -rf "$cache"' EXIT
export INFOREG_CACHE_DIR="$cache"        # notebooks must compute what they show, not read an old cache
export INFOREG_FIG_DIR="$cache/figures"  # and must not overwrite the figures of ./run_all.sh
status=0
python -m pytest tests notebooks --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg \
  -p no:cacheprovider --durations=25 "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
