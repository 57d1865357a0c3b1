#!/usr/bin/env bash
# The GPU benchmark of issue 9 item 5 in one command (see bench.py for what each part measures):
#
#   tools/bench/cuda/run.sh [--part a|b|c|d|all|a,b,...] [--tiny] [--device cuda|cpu] [--build]
#                           [-- more bench.py options]
#
# 1. installs the wheels in .whl/ (bitsandbytes, from fetch_wheels.sh) into /tmp/dsum-bench-site;
# 2. takes dsum-cli and bench_nf4 from .bench-bin/ (build_bins.sh, run where Rust is), or builds
#    them with cargo when there are none (or with --build);
# 3. points LD_LIBRARY_PATH at CUDA's NVRTC and cuBLAS (dsum loads them at run time);
# 4. runs bench.py, which writes cuda-bench.json and cuda-bench.md into $OUT (the device tool's
#    folder) when it is set, else into out/ at the repository root.
#
# PYTHON: the Python with torch, transformers, peft (default python3: the GPU image's).
# BENCH_DEADLINE_S: seconds the whole command may take (default 570, under the 600 s limit of
#   one device command); bench.py skips parts that would start too late and each part's report
#   is written as soon as it ends.
# BENCH_CACHE: models and work files (default /tmp/dsum-cuda-bench[-tiny]); never the repo.
set -uo pipefail
START=$SECONDS
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
PART=all DEVICE=cuda TINY=() BUILD=0 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --part) PART=$2; shift 2 ;;
    --tiny) TINY=(--tiny); shift ;;
    --device) DEVICE=$2; shift 2 ;;
    --build) BUILD=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$PART" = all ] && PART=a,b,c,d
REPORT=${OUT:-$ROOT/out}
mkdir -p "$REPORT"
LOG="$REPORT/cuda-bench.log"
: >"$LOG"
say() { echo "$*" | tee -a "$LOG" >&2; }

# 1. Wheels.
if ls .whl/*.whl >/dev/null 2>&1; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/dsum-bench-site .whl/*.whl >>"$LOG" 2>&1; then
    export PYTHONPATH=/tmp/dsum-bench-site${PYTHONPATH:+:$PYTHONPATH}
    say "wheels installed: $(cd .whl && ls *.whl | tr '\n' ' ')"
  else
    say "installing .whl/*.whl FAILED (see $LOG); the bitsandbytes rows will show why"
  fi
fi

# 2. Binaries.
BIN=$ROOT/.bench-bin
if [ "$BUILD" = 1 ] || [ ! -x "$BIN/dsum-cli" ]; then
  if command -v cargo >/dev/null; then
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/bench-bin
    tools/bench/cuda/build_bins.sh "$BIN" >>"$LOG" 2>&1 || say "build_bins.sh failed (see $LOG)"
  else
    say "no .bench-bin/dsum-cli and no cargo here: run tools/bench/cuda/build_bins.sh where Rust is and carry .bench-bin"
  fi
fi
export DSUM_BUILD_NOTES=$(cat "$BIN/BUILD.txt" 2>/dev/null || echo "no BUILD.txt in $BIN")
export DSUM_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
say "binaries: $BIN ($DSUM_BUILD_NOTES)"

# 3. CUDA libraries for dsum (cudarc dlopens libcuda, libnvrtc, libcublas[Lt]): the toolkit's
#    first, then the pip wheels' that torch uses.
if [ "$DEVICE" != cpu ]; then
  SITES=$("$PY" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)
  DIRS=""
  for lib in libnvrtc.so libcublas.so libcublasLt.so; do
    f=$(find /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
          $(for s in $SITES; do echo "$s/nvidia"; done) -maxdepth 3 -name "$lib*" 2>/dev/null | head -n1)
    [ -n "$f" ] && case ":$DIRS:" in *":$(dirname "$f"):"*) ;; *) DIRS="$DIRS:$(dirname "$f")" ;; esac
  done
  export LD_LIBRARY_PATH=${DIRS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG" >&2
fi

# 4. The benchmark.
DEADLINE=$(( ${BENCH_DEADLINE_S:-570} - (SECONDS - START) ))
CACHE=()
[ -n "${BENCH_CACHE:-}" ] && CACHE=(--cache "$BENCH_CACHE")
export PYTHONUNBUFFERED=1
"$PY" tools/bench/cuda/bench.py --dsum "$BIN/dsum-cli" --bench-nf4 "$BIN/bench_nf4" --device "$DEVICE" \
  --parts "$PART" --deadline-s "$DEADLINE" --json "$REPORT/cuda-bench.json" --md "$REPORT/cuda-bench.md" \
  "${CACHE[@]}" "${TINY[@]}" "${EXTRA[@]}" 2> >(tee -a "$LOG" >&2)
rc=$?
say "bench.py exit $rc after $((SECONDS - START)) s; report: $REPORT/cuda-bench.md"
exit $rc
