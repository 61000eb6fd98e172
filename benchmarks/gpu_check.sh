#!/usr/bin/env bash
# The project's GPU checks in one run (issue #29), sized for about 8 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh             # on a CUDA machine
#   bash benchmarks/gpu_check.sh --dry-run   # every step's command on CPU: tiny sizes, device cpu;
#                                            # only the CUDA-only calls are skipped, and each says so
#
# Steps, in order, each timed and stopped at its own time limit:
#   install        gsplat with pip --no-deps (wheels in $WHEELS first, for machines without an
#                  index), then its CUDA kernels built (they compile on first use; minutes)
#   gpu-tests      pytest -m gpu on the test files that have GPU tests
#   model-parity   python -m gagavatar.model.parity (paper network, float32, on CUDA)
#   pipeline       python -m gagavatar.reenact.parity on CUDA (skipped without the fixture)
#   timings        benchmarks/gpu_timings.py: the paper preset's driving at batch 1 and 8 (FPS;
#                  expression branch / splatting / refiner ms), reconstruction, torch.compile and
#                  CUDA graphs beside the plain run
#   serve          gagavatar bench serve with 8 clients driving by parameters, on the GPU
#                  (skipped when the service's packages are missing)
#
# Fails fast and loudly: the first failing step stops the run (exit status its own). Results
# are kept as they come, in $OUT (default ./gpu_out):
#   steps.json       every finished step (status, seconds, command, last lines), rewritten after each
#   gpu_check.log    everything printed
#   timings.json     gpu_timings.py's report (rewritten after each measurement)
#   serve.json       bench serve's numbers
# Exit status: 0 every step passed; 3 all that ran passed but some were skipped; else the
# failing step's status (124: it ran past its time limit).
#
# Environment: PYTHON (default .venv/bin/python if there, else python3); WHEELS (default .whl:
# any *.whl there are installed offline first, --no-deps); PIPELINE_FIXTURE (default
# shared/reference/pipeline_fixture, else ../shared/reference/pipeline_fixture); BUDGET_S (480);
# TORCH_CUDA_ARCH_LIST (default: this GPU's) and MAX_JOBS (default: all cores) for the gsplat build.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
STEPS_JSON="$OUT/steps.json"
: >"$LOG"
rm -f "$STEPS_JSON" "$OUT/timings.json" "$OUT/serve.json"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
WHEELS="${WHEELS:-.whl}"
BUDGET_S="${BUDGET_S:-480}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
START=$(date +%s)
SKIPPED=0

say() { echo "$*" | tee -a "$LOG"; }
elapsed() { echo $(( $(date +%s) - START )); }

# record NAME STATUS RC SECONDS NOTE [OUTPUT_FILE] COMMAND...: add one step to steps.json
record() {
  "$PYTHON" - "$STEPS_JSON" "$DRY_RUN" "$@" <<'PY'
import json, os, sys, time
path, dry, name, status, rc, seconds, note, output, *command = sys.argv[1:]
data = json.load(open(path)) if os.path.exists(path) else {
    "dry_run": dry == "1", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": []}
tail = open(output, errors="replace").read().splitlines()[-15:] if output and os.path.exists(output) else []
data["steps"].append({"step": name, "status": status, "rc": int(rc), "seconds": float(seconds),
                      "command": " ".join(command), "note": note, "last_lines": tail})
data["status"] = "failed" if status == "failed" else data.get("status", "running")
tmp = path + ".tmp"
json.dump(data, open(tmp, "w"), indent=1)
os.replace(tmp, path)
PY
}

finish() {  # STATUS: write the run's status into steps.json
  "$PYTHON" - "$STEPS_JSON" "$1" "$(elapsed)" <<'PY'
import json, os, sys
path, status, total = sys.argv[1:]
data = json.load(open(path)) if os.path.exists(path) else {"steps": []}
data["status"], data["total_s"] = status, int(total)
json.dump(data, open(path + ".tmp", "w"), indent=1)
os.replace(path + ".tmp", path)
PY
}

skip() {  # NAME REASON
  SKIPPED=$((SKIPPED + 1))
  say ""
  say "!!! [$1] SKIPPED: $2"
  record "$1" skipped 0 0 "$2" "" -
}

# step NAME LIMIT_S NOTE COMMAND...: run, time, record; stop everything if it fails
step() {
  local name=$1 limit=$2 note=$3 rc=0 t0 t1 left
  shift 3
  left=$(( BUDGET_S - $(elapsed) ))
  if (( DRY_RUN == 0 && left < 20 )); then skip "$name" "over the ${BUDGET_S} s budget"; return 0; fi
  if (( DRY_RUN == 0 && limit > left )); then limit=$left; fi
  say ""
  say "=== [$name] $* (limit ${limit} s; ${note})"
  t0=$(date +%s.%N)
  set +e
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG" >"$TMP/$name.out"
  rc=${PIPESTATUS[0]}
  set -e
  tail -n 40 "$TMP/$name.out"
  t1=$(date +%s.%N)
  local seconds
  seconds=$("$PYTHON" -c "print(round($t1 - $t0, 2))")
  if (( rc == 0 )); then
    say "=== [$name] passed in ${seconds} s"
    record "$name" passed 0 "$seconds" "$note" "$TMP/$name.out" "$@"
  else
    local why="exit status $rc"
    (( rc == 124 )) && why="ran past its ${limit} s limit"
    say ""
    say "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    say "!!! [$name] FAILED after ${seconds} s: ${why}"
    say "!!! command: $*"
    say "!!! output: $LOG; steps so far: $STEPS_JSON"
    say "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    record "$name" failed "$rc" "$seconds" "$note: $why" "$TMP/$name.out" "$@"
    finish failed
    exit "$rc"
  fi
}

if (( DRY_RUN )); then
  DEVICE=cpu
  say "gpu_check DRY RUN: every step on CPU with small sizes; CUDA-only calls skipped (each says so)"
else
  DEVICE=cuda
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --dry-run')"
  "$PYTHON" -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__, \
'| CUDA', torch.version.cuda)" | tee -a "$LOG"
  if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    TORCH_CUDA_ARCH_LIST=$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  fi
  export TORCH_CUDA_ARCH_LIST MAX_JOBS="${MAX_JOBS:-$(nproc)}"
fi
say "python: $PYTHON; output: $OUT; budget ${BUDGET_S} s"
record start passed 0 0 "dry run: $DRY_RUN, device $DEVICE" "" "$0" "$@"

# --- 1. install -------------------------------------------------------------------------
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
shopt -u nullglob
install_args=(-m pip install -q --no-deps --no-input)
if (( ${#wheels[@]} )); then install_args+=(--no-index "${wheels[@]}"); else install_args+=("gsplat>=1.5"); fi
if (( DRY_RUN )); then
  step install 120 "pip --dry-run (nothing installed); the CUDA kernel build is CUDA only: skipped" \
    "$PYTHON" "${install_args[@]}" --dry-run
  step gsplat-import 60 "gsplat's torch reference code imports on CPU" \
    "$PYTHON" -c "import gsplat, gsplat.cuda._torch_impl; print('gsplat', gsplat.__version__, 'imports')"
else
  step install 120 "gsplat (and any carried wheels), --no-deps" "$PYTHON" "${install_args[@]}"
  step gsplat-build 300 "gsplat's CUDA kernels, built on first use (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)" \
    "$PYTHON" -c "import gsplat; from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat CUDA \
extension did not build'; print('gsplat', gsplat.__version__, 'CUDA kernels ready')"
fi

# --- 2. GPU tests -----------------------------------------------------------------------
mapfile -t gpu_test_files < <(grep -l "pytest.mark.gpu" tests/test_*.py)
if (( ${#gpu_test_files[@]} == 0 )); then
  say "!!! no test file has a pytest.mark.gpu test"; finish failed; exit 1
fi
pytest_args=(-m pytest -q -m gpu -rs -p no:cacheprovider "${gpu_test_files[@]}")
if (( DRY_RUN )); then
  step gpu-tests 180 "collected and skipped on CPU (they need CUDA)" "$PYTHON" "${pytest_args[@]}"
else
  # on a GPU none may skip: a skipped GPU test is a check not made
  step gpu-tests 150 "none may skip" bash -c 'set -o pipefail; "$@" | tee /dev/stderr | { ! grep "^SKIPPED" >/dev/null; }' _ \
    "$PYTHON" "${pytest_args[@]}"
fi

# --- 3. parity: network, then pipeline --------------------------------------------------
step model-parity 240 "paper network vs the reference's numbers, float32 on $DEVICE" \
  "$PYTHON" -m gagavatar.model.parity tests/data/parity_fixture.npz --dtype float32 --device "$DEVICE"
fixture="${PIPELINE_FIXTURE:-}"
if [[ -z "$fixture" ]]; then
  for candidate in shared/reference/pipeline_fixture ../shared/reference/pipeline_fixture; do
    if [[ -f "$candidate/expected.npz" ]]; then fixture=$candidate; break; fi
  done
fi
if [[ -n "$fixture" && -f "$fixture/expected.npz" ]]; then
  step pipeline 90 "tracked files -> vertices, cameras, plane on $DEVICE" \
    "$PYTHON" -m gagavatar.reenact.parity "$fixture" --device "$DEVICE"
else
  skip pipeline "no pipeline fixture (set PIPELINE_FIXTURE, or put it at shared/reference/pipeline_fixture)"
fi

# --- 4. timings -------------------------------------------------------------------------
if (( DRY_RUN )); then
  step timings 600 "tiny preset on CPU; torch.compile traced with the eager backend; CUDA graphs skipped" \
    "$PYTHON" benchmarks/gpu_timings.py --device cpu --preset tiny --batches 1,2 --repeat 2 \
    --compile-backend eager --json "$OUT/timings.json"
else
  left=$(( BUDGET_S - $(elapsed) - 100 ))  # keep ~100 s for serve
  (( left < 60 )) && left=60
  step timings 600 "paper preset, batch 1 and 8; variants stop at ${left} s" \
    "$PYTHON" benchmarks/gpu_timings.py --device cuda --preset paper --batches 1,8 --repeat 20 \
    --budget-s "$left" --json "$OUT/timings.json"
fi

# --- 5. serve under load ----------------------------------------------------------------
if missing=$("$PYTHON" -c "
import importlib.util as u
need = ['starlette', 'uvicorn', 'websockets', 'multipart', 'mediapipe', 'cv2']
print(' '.join(n for n in need if u.find_spec(n) is None))" 2>&1) && [[ -z "$missing" ]]; then
  if (( DRY_RUN )); then
    frames=15
  else
    frames=300
  fi
  step serve 300 "8 clients driving by parameters, bundled model, device $DEVICE" \
    "$PYTHON" -m gagavatar bench serve --clients 8 --frames "$frames" --misbehaving 0 --webcam-clients 0 \
    --device "$DEVICE" --max-batch 8 --json "$OUT/serve.json"
else
  skip serve "missing Python packages: ${missing} (carry their wheels in $WHEELS)"
fi

if (( SKIPPED )); then
  finish "passed, $SKIPPED step(s) skipped"
  say ""
  say "=== gpu_check: every step that ran passed; $SKIPPED skipped (see above) in $(elapsed) s; $OUT"
  exit 3
fi
finish passed
say ""
say "=== gpu_check: all steps passed in $(elapsed) s; results in $OUT"
