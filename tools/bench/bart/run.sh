#!/usr/bin/env bash
# Side-by-side BART generation benchmark (issue 2 item 7): dsum vs transformers (PyTorch)
# vs CTranslate2 float32 / int8, KoBART dimensions, 2 threads each. See BENCHMARKS-bart.md.
#
#   tools/bench/bart/run.sh [bench.py options, e.g. --rounds 5 --calls 3]
#
# PYTHON: a Python with torch, transformers, ctranslate2, numpy (default /work/venv/bin/python)
# BENCH_CACHE: where the model, its CT2 conversions and the inputs live (never in the repo)
# BENCH_NICE: niceness of the timed runs (default -15 when allowed, so that other work on a
#   shared machine, e.g. compilers, only gets the CPU time the benchmark leaves idle; the
#   systems all run at the same priority, one at a time)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PY=${PYTHON:-/work/venv/bin/python}
CACHE=${BENCH_CACHE:-/work/bench-cache/bart}
cd "$ROOT"
cargo build --release -p dsum-cli
"$PY" tools/bench/bart/make_model.py "$CACHE"
NICE=${BENCH_NICE:--15}
if ! nice -n "$NICE" true 2>/dev/null; then NICE=0; fi
echo "dsum commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- dsum-core dsum-cli || echo ' + uncommitted changes in dsum-core/dsum-cli'), nice $NICE" >&2
exec nice -n "$NICE" "$PY" tools/bench/bart/bench.py --cache "$CACHE" --dsum target/release/dsum-cli "$@"
