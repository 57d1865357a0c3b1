#!/usr/bin/env bash
# Builds the in-browser page in web/: web/pkg/ (dsum-wasm through wasm-bindgen, SIMD128 on,
# shrunk by wasm-opt when npm's binaryen can be installed) and web/models/smollm2.gguf (the
# default demo model, SmolLM2-135M-Instruct, from tools/fetch-smollm2.sh). Serve web/ with any
# static file server, e.g. `python3 -m http.server 8765 --bind 127.0.0.1 -d web`.
# Idempotent: tools already installed are not installed again.
#   DSUM_WASM_OPT=0   skip wasm-opt          DSUM_WEB_MODEL=0   skip the demo model
#   DSUM_WEB_TOOLS    cache folder for npm tools (default ~/.cache/dsum-web-tools)
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
TOOLS="${DSUM_WEB_TOOLS:-$HOME/.cache/dsum-web-tools}"

rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# wasm-bindgen-cli must be exactly the wasm-bindgen version in Cargo.lock. No --locked: the
# locked build pins a webpki-roots version the registry does not have.
WB_VERSION="$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $WB_VERSION"; then
  echo "== installing wasm-bindgen-cli $WB_VERSION (about 5 min, once)"
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi

echo "== dsum-wasm (wasm32, release, simd128)"
RUSTFLAGS="-C target-feature=+simd128" \
  cargo build --release -p dsum-wasm --target wasm32-unknown-unknown
rm -rf web/pkg
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  "$TARGET_DIR/wasm32-unknown-unknown/release/dsum_wasm.wasm"

# Optional wasm-opt from npm binaryen 132 (Debian's binaryen 108 produces a module that fails
# to load). Without it the page works; the module is just larger.
if [ "${DSUM_WASM_OPT:-1}" = 1 ]; then
  OPT="$TOOLS/node_modules/.bin/wasm-opt"
  if [ ! -x "$OPT" ]; then
    mkdir -p "$TOOLS"
    (cd "$TOOLS" && npm install --no-audit --no-fund --silent binaryen@132.0.0) ||
      echo "warning: cannot install npm binaryen; the module is not optimized by wasm-opt"
  fi
  if [ -x "$OPT" ]; then
    echo "== wasm-opt -O3"
    "$OPT" -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
      web/pkg/dsum_wasm_bg.wasm -o web/pkg/dsum_wasm_bg.opt.wasm
    mv web/pkg/dsum_wasm_bg.opt.wasm web/pkg/dsum_wasm_bg.wasm
  fi
fi
RAW=$(stat -c %s web/pkg/dsum_wasm_bg.wasm)
GZ=$(gzip -9 -c web/pkg/dsum_wasm_bg.wasm | wc -c)
echo "web/pkg/dsum_wasm_bg.wasm: $RAW bytes, $GZ gzipped"

if [ "${DSUM_WEB_MODEL:-1}" = 1 ]; then
  echo "== demo model"
  GGUF="$(tools/fetch-smollm2.sh)"
  mkdir -p web/models
  # A hard link costs no space; another filesystem gets a copy.
  ln -f "$GGUF" web/models/smollm2.gguf 2>/dev/null || cp -f "$GGUF" web/models/smollm2.gguf
fi
echo "built web/ (serve it: python3 -m http.server 8765 --bind 127.0.0.1 -d web)"
