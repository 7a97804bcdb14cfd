#!/usr/bin/env bash
# Execute every notebook headlessly with papermill and write the figures under figures/.
#   ./run_all.sh          default CPU profile (teaching datasets): about 16 min on 2 cores with an empty results
#                         cache, 5-7 min once results/cache holds the runs
#   ./run_all.sh full     the GPU profile on the real datasets (CREMA-D, CMU-MOSI; Kinetics-Sounds too when its
#                         cache is there): first `python -m inforeg check full` must find a CUDA GPU and the
#                         prepared caches, else nothing runs
#   ./run_all.sh full --backend slurm   the same, its runs launched on a backend (serial, local: one worker per
#                         GPU, slurm, ray) through $INFOREG_BACKEND, which every notebook's get_or_run_all reads;
#                         backend options as JSON in $INFOREG_BACKEND_OPTIONS
#   ./run_all.sh full --dry-run   every notebook's full path on small random caches in the real formats
#                         (python -m inforeg synthetic), one seed, 2 epochs, tiny frames: on any machine, in
#                         minutes; a check of the code paths, not of any result. Everything goes to
#                         build/dry-run/ (or $INFOREG_DRY_RUN_DIR): data, results cache, figures
#   --only 00,04          run only these notebooks (their two-digit numbers)
# Executed copies go to build/executed/<profile>/, logs to logs/. Stops at the first failing notebook.
set -euo pipefail
cd "$(dirname "$0")"
usage="usage: ./run_all.sh [ci|full] [--backend serial|local|slurm|ray] [--dry-run] [--only NN,NN]"
profile=ci
backend=""
dry_run=0
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) [ $# -ge 2 ] || { echo "--backend needs a value: serial, local, slurm or ray" >&2; exit 2; }
               backend="$2"; shift 2 ;;
    --backend=*) backend="${1#--backend=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    --only) [ $# -ge 2 ] || { echo "--only needs notebook numbers, e.g. 00,04" >&2; exit 2; }
            only="$2"; shift 2 ;;
    --only=*) only="${1#--only=}"; shift ;;
    -*) echo "unknown option '$1' ($usage)" >&2; exit 2 ;;
    *) profile="$1"; shift ;;
  esac
done
case "$profile" in
  ci|full) ;;
  *) echo "unknown profile '$profile': choose ci (the default: teaching data on a CPU) or full (real data on a" \
          "GPU)" >&2; exit 2 ;;
esac
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
if [ "$dry_run" = 1 ] && [ "$profile" != "full" ]; then
  echo "--dry-run is for the full profile (the ci profile is already small)" >&2
  exit 2
fi
source scripts/setup_env.sh

params=(-p profile "$profile")
[ "$profile" = full ] && params+=(-p device auto)  # the notebooks' own default is the ci profile's cpu
out="build/executed/$profile"
if [ "$dry_run" = 1 ]; then
  dry="${INFOREG_DRY_RUN_DIR:-build/dry-run}"
  mkdir -p "$dry"
  dry="$(cd "$dry" && pwd)"
  export INFOREG_DATA_DIR="$dry/data" INFOREG_CACHE_DIR="$dry/cache" INFOREG_FIG_DIR="$dry/figures"
  echo "== dry run of the full profile: random caches in $INFOREG_DATA_DIR, results in $INFOREG_CACHE_DIR"
  for d in cremad kinetics_sounds mosi; do
    if [ ! -f "$INFOREG_DATA_DIR/$d/manifest.json" ]; then
      TQDM_DISABLE=1 python -m inforeg synthetic --out "$INFOREG_DATA_DIR" --datasets "$d" --train 32 \
        --test 16 --spectrogram 33x24 --size 16 >/dev/null  # errors still reach the terminal
    fi
  done
  python -m inforeg check full --no-gpu --allow-synthetic --datasets cremad,kinetics_sounds,mosi
  # one seed, 2 epochs, 2 frames of 16 px, batches of 16 (the dry-run data has 32 training clips); no epoch
  # checkpoints (each would write a ResNet pair's weights and momenta)
  export INFOREG_CHECKPOINT_SECONDS=600
  params+=(-p n_seeds 1 -p n_official_seeds 1 -p n_val 8 -p tsne_points 16 -p cost_rounds 0 -p n_check 4
           -y "overrides: {epochs: 2, data.frames: 2, data.image_size: 16, optim.batch_size: 16}")
  out="build/executed/full-dry-run"
elif [ "$profile" = full ]; then
  python -m inforeg check full || { echo "./run_all.sh full: this machine is not ready (see above);" \
    "./run_all.sh full --dry-run tries the code paths without a GPU or data" >&2; exit 2; }
fi

mkdir -p "$out" logs
[ "$dry_run" = 1 ] || mkdir -p figures
export TQDM_DISABLE="${TQDM_DISABLE:-1}"   # widget bars are useless headless; runs print epoch lines instead
unset MPLBACKEND                           # inline figures must reach the notebooks

run_one() {  # notebook, name of the executed copy, extra papermill arguments
  local nb="$1" name="$2"; shift 2
  local log="logs/$(basename "$out")_${name%.ipynb}.log"
  echo "== $name ($(basename "$out"))"
  local start=$SECONDS
  papermill "$nb" "$out/$name" -k python3 --cwd notebooks "${params[@]}" "$@" --log-output \
    2>&1 | { grep -v "is ignored\|Passed unknown parameter" || true; } > "$log" \
    || { echo "FAILED: $name (see $log and $out/$name)" >&2; exit 1; }
  echo "   ok in $((SECONDS - start)) s"
}

ran=0
for nb in notebooks/[0-9][0-9]_*.ipynb; do
  name="$(basename "$nb")"
  if [ -n "$only" ] && [[ ",$only," != *",${name:0:2},"* ]]; then
    continue
  fi
  run_one "$nb" "$name"
  ran=$((ran + 1))
  # Table 2 has a Kinetics-Sounds column: the full profile runs the comparison there too when its cache is here
  if [ "$profile" = full ] && [ "${name:0:2}" = 08 ]; then
    if python -m inforeg check full --no-gpu --datasets kinetics_sounds \
         $([ "$dry_run" = 1 ] && echo --allow-synthetic) >/dev/null 2>&1; then
      run_one "$nb" "${name%.ipynb}.kinetics_sounds.ipynb" -p dataset kinetics_sounds
    else
      echo "   (no prepared Kinetics-Sounds cache: Table 2's second column is not run;" \
           "python -m inforeg prepare kinetics_sounds ... adds it)"
    fi
  fi
done
[ "$ran" -gt 0 ] || { echo "--only $only: no notebook has these numbers" >&2; exit 2; }
echo "all notebooks ran; figures are in ${INFOREG_FIG_DIR:-figures/}, executed notebooks in $out/"
