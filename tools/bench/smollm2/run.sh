#!/usr/bin/env bash
# SmolLM2-135M decoding benchmark (issue 4 item 8): dsum vs transformers (PyTorch, fp32) vs
# CTranslate2 float32, batch 1, greedy, 2 threads each. See BENCHMARKS.md.
#
#   tools/bench/smollm2/run.sh [bench.py options, e.g. --rounds 5 --json out.json]
#
# PYTHON: a Python with torch, transformers (+gguf), ctranslate2 (default /work/venv/bin/python)
# BENCH_CACHE: where the dequantized transformers folder and its CT2 conversion are written
#   (default /work/bench-cache; never in the repo)
# SMOLLM2_GGUF: the Q4_1 GGUF (default: what tools/fetch-smollm2.sh prints)
# DSUM_CLI: the dsum-cli binary (default: target/release/dsum-cli, built here)
# BENCH_NICE: niceness of the timed runs (default -15 when allowed; all systems alike)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PY=${PYTHON:-/work/venv/bin/python}
CACHE=${BENCH_CACHE:-/work/bench-cache}
cd "$ROOT"
GGUF=${SMOLLM2_GGUF:-$(tools/fetch-smollm2.sh)}
if [ -z "${DSUM_CLI:-}" ]; then
  cargo build --release -p dsum-cli
  DSUM_CLI=target/release/dsum-cli
fi
"$PY" tools/bench/smollm2/prepare.py "$GGUF" "$CACHE" >&2
NICE=${BENCH_NICE:--15}
if ! nice -n "$NICE" true 2>/dev/null; then NICE=0; fi
echo "dsum commit $(git rev-parse --short HEAD); $(nproc) cores; nice $NICE; load: $(uptime | sed 's/.*load average: //')" >&2
exec nice -n "$NICE" "$PY" tools/bench/smollm2/bench.py --gguf "$GGUF" --cache "$CACHE" --dsum "$DSUM_CLI" "$@"
