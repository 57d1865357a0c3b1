#!/usr/bin/env bash
# Compile every CUDA kernel without a GPU (issue 9 item 3): NVRTC -> PTX for compute_80/90, ptxas
# -> sm_80/90 cubins, registers and spills printed; then run the kernel tests, whose compile cases
# need NVRTC (their GPU cases stay ignored without a device).
#
#   tools/cuda/check.sh
#
# Installs the CUDA 12 compiler wheels (about 135 MB, once) into $DSUM_CUDA_VENV
# (default ~/.cache/dsum-cuda-venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${DSUM_CUDA_VENV:-$HOME/.cache/dsum-cuda-venv}"
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
if ! [ -x "$VENV/lib/python3"*/site-packages/nvidia/cuda_nvcc/bin/ptxas ] 2>/dev/null; then
  "$VENV/bin/pip" install -q nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-nvcc-cu12==12.9.86
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export LD_LIBRARY_PATH="$SITE/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PTXAS="$SITE/nvidia/cuda_nvcc/bin/ptxas"
cargo run -q -p dsum-kernels --bin dsum-ptx-check -- --arch 80,90 --out "${CARGO_TARGET_DIR:-target}/ptx"
cargo test -q -p dsum-kernels --test gpu
