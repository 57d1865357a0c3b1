#!/usr/bin/env bash
# The GPU test suite, for the lent GPU machines (no Rust toolchain there, no network):
#
#   tools/cuda/gpu_tests.sh build   # HERE: release test binaries with --features cuda-13 -> .gpu-tests/
#   tools/cuda/gpu_tests.sh run     # THERE (device tool, carry [".gpu-tests"]): runs them all,
#                                   # logs to $OUT/gpu-tests.log (or out/ without $OUT)
#
# With the GPU benchmark (tools/bench/cuda) in one carried file, as session 5 ran it:
#   tools/cuda/gpu_tests.sh pack    # HERE: build, the bench binaries and wheel, all packed into
#                                   # .gpu-pack/gpu.tar.xz (~15 MB; unpacked they pass 64 MiB)
#   tools/cuda/gpu_tests.sh device [run.sh options]
#                                   # THERE (carry [".gpu-pack"]): unpack, run the tests, then
#                                   # tools/bench/cuda/run.sh (default --part a,b,c,d)
#
# What runs: dsum-kernels' 49 kernel-vs-CPU property tests (tests/gpu.rs), and with CUDA device 0
# the `cuda_*` tests of dsum-core (llama_parity, bart_parity, backend: logits and ids against the
# fixtures; train_parity: first training step against peft) and of dsum-cli (finetune_parity:
# the loss trajectories of `finetune --device cuda`), next to their CPU twins.
#
# The binaries read fixtures and dsum-cli by the absolute paths they were built at (cargo's
# CARGO_MANIFEST_DIR / CARGO_BIN_EXE_*): `run` links that path to the tree it runs in.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
DIR=.gpu-tests

build() {
  local target=${CARGO_TARGET_DIR:-$ROOT/target}
  rm -rf "$DIR" && mkdir -p "$DIR/bin"
  local json
  json=$(mktemp)
  set -e
  cargo test --release --no-run --message-format=json -p dsum-kernels --no-default-features \
    --features cuda-13 --test gpu >"$json"
  cargo test --release --no-run --message-format=json -p dsum-core --features cuda-13 \
    --test llama_parity --test bart_parity --test backend --test train_parity >>"$json"
  cargo test --release --no-run --message-format=json -p dsum-cli --features cuda-13 \
    --test finetune_parity >>"$json"
  set +e
  # Each test executable, named crate:test, with the crate folder it runs in.
  python3 - "$json" "$DIR" <<'EOF'
import json, os, shutil, sys
src, out = sys.argv[1], sys.argv[2]
seen = []
for line in open(src):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    exe = m.get("executable")
    if m.get("reason") != "compiler-artifact" or not exe or "test" not in m["target"]["kind"]:
        continue
    crate = os.path.basename(os.path.dirname(m["manifest_path"]))
    name = f"{crate}:{m['target']['name']}"
    shutil.copy2(exe, os.path.join(out, "bin", name))
    seen.append(f"{name} {crate}")
open(os.path.join(out, "TESTS"), "w").write("\n".join(seen) + "\n")
EOF
  cp "$target/release/dsum-cli" "$DIR/dsum-cli"
  strip "$DIR"/bin/* "$DIR/dsum-cli" 2>/dev/null
  echo "$ROOT" >"$DIR/ROOT"
  echo "$target" >"$DIR/TARGET"
  git rev-parse --short HEAD >"$DIR/COMMIT"
  rm -f "$json"
  du -sh "$DIR"
  cat "$DIR/TESTS"
}

run() {
  local report=${OUT:-$ROOT/out}
  mkdir -p "$report"
  local log="$report/gpu-tests.log"
  : >"$log"
  [ -f "$DIR/TESTS" ] || { echo "no $DIR/TESTS: run '$0 build' where cargo is, and carry $DIR" | tee -a "$log"; exit 2; }
  # The paths compiled into the binaries must reach this tree.
  local built target
  built=$(cat "$DIR/ROOT")
  target=$(cat "$DIR/TARGET")
  if [ "$built" != "$ROOT" ] && [ ! -e "$built/$DIR/TESTS" ]; then
    mkdir -p "$(dirname "$built")" && ln -sfn "$ROOT" "$built"
  fi
  mkdir -p "$target/release" 2>/dev/null
  cp "$DIR/dsum-cli" "$target/release/dsum-cli" 2>/dev/null ||
    { mkdir -p "$ROOT/target/release" && cp "$DIR/dsum-cli" "$ROOT/target/release/dsum-cli"; }
  # cudarc dlopens libcuda, libnvrtc and libcublas[Lt]: the toolkit's first.
  local dirs="" f
  for lib in libnvrtc.so libcublas.so libcublasLt.so; do
    f=$(find /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
      -maxdepth 1 -name "$lib*" 2>/dev/null | head -n1)
    [ -n "$f" ] && case ":$dirs:" in *":$(dirname "$f"):"*) ;; *) dirs="$dirs:$(dirname "$f")" ;; esac
  done
  export LD_LIBRARY_PATH=${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  {
    echo "commit $(cat "$DIR/COMMIT"), built at $built, run in $ROOT"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 ||
      echo "no nvidia-smi here"
  } | tee -a "$log"
  local failed=0 name crate
  while read -r name crate; do
    echo "=== $name" | tee -a "$log"
    (cd "$built/$crate" && "$ROOT/$DIR/bin/$name" --include-ignored --test-threads 4) >>"$log" 2>&1 ||
      { failed=$((failed + 1)); echo "FAILED: $name" | tee -a "$log"; }
    grep -E '^test result|^[0-9]+ (passed|failed)' "$log" | tail -n1
  done <"$DIR/TESTS"
  grep -E '^test .* FAILED|^test result|panicked' "$log" | tail -n 40
  echo "$failed test binaries failed (log: $log)"
  [ "$failed" = 0 ]
}

pack() {
  build || exit 1
  tools/bench/cuda/build_bins.sh || exit 1
  ls .whl/bitsandbytes-*.whl >/dev/null 2>&1 || tools/bench/cuda/fetch_wheels.sh || exit 1
  mkdir -p .gpu-pack
  tar -cJf .gpu-pack/gpu.tar.xz "$DIR" .whl .bench-bin/bench_nf4 .bench-bin/BUILD.txt || exit 1
  du -h .gpu-pack/gpu.tar.xz
}

device() {
  tar -xJf .gpu-pack/gpu.tar.xz || exit 1
  mkdir -p .bench-bin && cp "$DIR/dsum-cli" .bench-bin/
  (timeout 120 "$ROOT/tools/cuda/gpu_tests.sh" run)
  echo "gpu tests: exit $? after $SECONDS s"
  [ $# -gt 0 ] || set -- --part a,b,c,d
  BENCH_DEADLINE_S=${BENCH_DEADLINE_S:-$((560 - SECONDS))} tools/bench/cuda/run.sh "$@"
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  pack) pack ;;
  device) shift; device "$@" ;;
  *) echo "usage: $0 build|run|pack|device [run.sh options]" >&2; exit 2 ;;
esac
