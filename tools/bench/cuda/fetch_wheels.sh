#!/usr/bin/env bash
# Run HERE (a machine with network), not on the GPU machine: puts the bitsandbytes wheel the GPU
# machine lacks into .whl/ at the repository root, for `run` to carry (the device README's recipe).
#
#   tools/bench/cuda/fetch_wheels.sh
#
# bitsandbytes 0.50.2 (manylinux_2_24 x86_64, py3-none) needs torch, numpy and packaging, which
# the GPU image has (its Requires-Dist is printed below). The wheel is 43 MB because it ships
# libraries for every CUDA and ROCm version; the GPU machine's torch is built for CUDA 13.0, so
# the wheel is rebuilt with the CPU and CUDA 13.x libraries only (about 4 MB) and a matching
# RECORD: the whole carried tree must stay under 64 MiB.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PY=${PYTHON:-python3}
VERSION=0.50.2
cd "$ROOT"
mkdir -p .whl
rm -f .whl/bitsandbytes-*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "bitsandbytes==$VERSION"
WHL=$(ls .whl/bitsandbytes-$VERSION-*.whl)
echo "Requires-Dist of $WHL (extras skipped):"
unzip -p "$WHL" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
"$PY" - "$WHL" <<'EOF'
import base64, hashlib, os, re, sys, zipfile
path = sys.argv[1]
keep_lib = re.compile(r"libbitsandbytes_(cpu|cuda13\d)\.so$")
src = zipfile.ZipFile(path)
entries = [i for i in src.infolist()
           if not (i.filename.endswith(".so") and not keep_lib.search(i.filename))
           and not i.filename.endswith(".dist-info/RECORD")]
record_name = next(i.filename for i in src.infolist() if i.filename.endswith(".dist-info/RECORD"))
tmp = path + ".tmp"
with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    lines = []
    for i in entries:
        data = src.read(i.filename)
        dst.writestr(i, data, compress_type=zipfile.ZIP_DEFLATED)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{i.filename},sha256={digest},{len(data)}")
    lines.append(f"{record_name},,")
    dst.writestr(record_name, "\n".join(lines) + "\n")
os.replace(tmp, path)
print(f"{path}: kept {sum(1 for i in entries if i.filename.endswith('.so'))} libraries, "
      f"{os.path.getsize(path) / 1e6:.1f} MB")
EOF
du -sh .whl
