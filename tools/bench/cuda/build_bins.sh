#!/usr/bin/env bash
# Build the two binaries the GPU benchmark runs into one folder (default .bench-bin/ at the
# repository root, which `run` can carry): dsum-cli (release, --features cuda-13) and
# dsum-kernels' bench_nf4 example (CUDA 13 bindings). The lent GPU machines have no Rust
# toolchain and no network, so run this HERE (x86-64; cudarc loads CUDA at run time, so no CUDA
# is needed to build); run.sh calls it itself where cargo exists and no binaries were carried.
#
#   tools/bench/cuda/build_bins.sh [OUT_DIR]
#
# A build that fails with CUDA (a branch without the feature yet) falls back to a CPU build and
# says so in OUT_DIR/BUILD.txt, which the report prints: the dsum CUDA rows then show the error.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
OUT_DIR=${1:-$ROOT/.bench-bin}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cd "$ROOT"
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR/dsum-cli" "$OUT_DIR/bench_nf4" "$OUT_DIR/BUILD.txt"
LOG=$(mktemp)
notes="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || notes="$notes + uncommitted changes"

if cargo build --release -p dsum-cli --features cuda-13 2>"$LOG"; then
  notes="$notes; dsum-cli --features cuda-13"
else
  why=$(grep -m1 -E '^error' "$LOG" || tail -n1 "$LOG")
  notes="$notes; dsum-cli WITHOUT CUDA (--features cuda-13 failed: $why)"
  cargo build --release -p dsum-cli || { cat "$LOG"; exit 1; }
fi
cp "$TARGET/release/dsum-cli" "$OUT_DIR/"

if cargo build --release -p dsum-kernels --no-default-features --features cuda-13 --example bench_nf4 2>"$LOG"; then
  cp "$TARGET/release/examples/bench_nf4" "$OUT_DIR/"
  notes="$notes; bench_nf4 cuda-13"
else
  why=$(grep -m1 -E '^error' "$LOG" || tail -n1 "$LOG")
  notes="$notes; NO bench_nf4 ($why)"
fi
rm -f "$LOG"
# Debug symbols are most of a release binary; the carried tree is limited to 64 MiB.
for b in "$OUT_DIR/dsum-cli" "$OUT_DIR/bench_nf4"; do
  [ -f "$b" ] && strip "$b" 2>/dev/null || true
done
echo "$notes" >"$OUT_DIR/BUILD.txt"
cat "$OUT_DIR/BUILD.txt"
du -sh "$OUT_DIR"/*
