#!/usr/bin/env bash
# LoRA training-step benchmark (issue 5 item 8): dsum vs PyTorch + peft on SmolLM2-135M,
# batch 4 x 256 tokens, LoRA r=16 all-linear, 2 threads each. See BENCHMARKS.md.
#
#   tools/bench/lora_step/run.sh [bench.py options, e.g. --steps 5 --rounds 3 --json out.json]
#
# PYTHON: a Python with torch, transformers, peft (default /work/venv/bin/python)
# BENCH_CACHE: holds smollm2-hf (made here by tools/bench/smollm2/prepare.py when missing) and
#   lora_step/ (the ids and the initial adapter); default /work/bench-cache, never in the repo
# SMOLLM2_GGUF: the Q4_1 GGUF to prepare from (default: what tools/fetch-smollm2.sh prints)
# BENCH_NICE: niceness of the timed runs (default -15 when allowed; both systems alike)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PY=${PYTHON:-/work/venv/bin/python}
CACHE=${BENCH_CACHE:-/work/bench-cache}
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p dsum-core --features rayon,mmap --example lora_step
if [ ! -f "$CACHE/smollm2-hf/config.json" ]; then
  GGUF=${SMOLLM2_GGUF:-$(tools/fetch-smollm2.sh)}
  "$PY" tools/bench/smollm2/prepare.py "$GGUF" "$CACHE" >&2
fi
NICE=${BENCH_NICE:--15}
if ! nice -n "$NICE" true 2>/dev/null; then NICE=0; fi
echo "dsum commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- dsum-core || echo ' + uncommitted changes in dsum-core'); $(nproc) cores; nice $NICE; load: $(uptime | sed 's/.*load average: //')" >&2
exec nice -n "$NICE" "$PY" tools/bench/lora_step/bench.py --cache "$CACHE" --dsum "$TARGET/release/examples/lora_step" "$@"
