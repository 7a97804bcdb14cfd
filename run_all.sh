#!/usr/bin/env bash
# Execute every notebook headlessly with papermill and write the figures under figures/.
#   ./run_all.sh          default CPU profile (teaching datasets): about 16 min on 2 cores with an empty results
#                         cache, 5-7 min once results/cache holds the runs
#   ./run_all.sh full --backend slurm   the GPU profile, its runs launched on a backend (serial, local: one
#                         worker per GPU, slurm, ray) through $INFOREG_BACKEND, which every notebook's
#                         get_or_run_all reads; backend options as JSON in $INFOREG_BACKEND_OPTIONS
# Executed copies go to build/executed/<profile>/, logs to logs/. Stops at the first failing notebook.
set -euo pipefail
cd "$(dirname "$0")"
profile=ci
backend=""
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) [ $# -ge 2 ] || { echo "--backend needs a value: serial, local, slurm or ray" >&2; exit 2; }
               backend="$2"; shift 2 ;;
    --backend=*) backend="${1#--backend=}"; shift ;;
    -*) echo "unknown option '$1' (usage: ./run_all.sh [ci|full] [--backend serial|local|slurm|ray])" >&2; exit 2 ;;
    *) profile="$1"; shift ;;
  esac
done
if [ -n "$backend" ]; then
  case "$backend" in
    serial|local|slurm|ray) ;;
    *) echo "unknown backend '$backend': choose serial, local, slurm or ray" >&2; exit 2 ;;
  esac
  if [ "$profile" != "full" ]; then
    echo "--backend is for the full profile; the ci profile trains in the notebooks' own worker processes" >&2
    exit 2
  fi
  export INFOREG_BACKEND="$backend"
fi
source scripts/setup_env.sh
if [ "$profile" != "ci" ]; then
  echo "unknown profile '$profile': only the default 'ci' profile exists so far (the GPU 'full' profile" >&2
  echo "arrives with the real-data loaders)" >&2
  exit 2
fi
out="build/executed/$profile"
mkdir -p "$out" logs figures
export TQDM_DISABLE="${TQDM_DISABLE:-1}"   # widget bars are useless headless; runs print epoch lines instead
unset MPLBACKEND                           # inline figures must reach the notebooks
for nb in notebooks/[0-9][0-9]_*.ipynb; do
  name="$(basename "$nb")"
  echo "== $name ($profile)"
  start=$SECONDS
  papermill "$nb" "$out/$name" -k python3 --cwd notebooks -p profile "$profile" --log-output \
    2>&1 | { grep -v "is ignored" || true; } > "logs/${profile}_${name%.ipynb}.log" \
    || { echo "FAILED: $name (see logs/${profile}_${name%.ipynb}.log and $out/$name)" >&2; exit 1; }
  echo "   ok in $((SECONDS - start)) s"
done
echo "all notebooks ran; figures are in figures/, executed notebooks in $out/"
