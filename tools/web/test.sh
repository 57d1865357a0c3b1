#!/usr/bin/env bash
# Browser tests of the page built by tools/web/build.sh: serves web/ on 127.0.0.1 and drives
# headless Chromium (Debian's chromium + npm playwright-core) through tools/web/test.mjs, which
# compares the page with dsum-cli on the same inputs. Installs what is missing, once.
# Screenshots and bench.json go to $DSUM_WEB_ARTIFACTS (default <target dir>/web-test).
#   DSUM_MECAB_DIC    compiled mecab-ko-dic folder: also checks Mecab-ko scoring
#   DSUM_WEB_BENCH=1  also time SmolLM2 and ROUGE in the browser (for BENCHMARKS.md)
#   DSUM_CLI          a dsum-cli binary to compare with (default: cargo build -p dsum-cli)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TOOLS="${DSUM_WEB_TOOLS:-$HOME/.cache/dsum-web-tools}"
ARTIFACTS="${DSUM_WEB_ARTIFACTS:-$TARGET_DIR/web-test}"
PLAYWRIGHT_VERSION=1.65.1

if [ ! -f web/pkg/dsum_wasm_bg.wasm ]; then
  echo "web/pkg is missing: run tools/web/build.sh first" >&2
  exit 1
fi
if ! command -v chromium >/dev/null; then
  echo "== installing chromium (apt)"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
# A Hangul font, or the screenshots show boxes instead of Korean text.
if ! fc-list :lang=ko 2>/dev/null | grep -q .; then
  echo "== installing a Korean font (apt fonts-nanum)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-nanum ||
    echo "warning: no Korean font; the screenshots will not show Hangul"
fi
if [ ! -f "$TOOLS/node_modules/playwright-core/index.mjs" ]; then
  echo "== installing playwright-core (npm, no browser download)"
  mkdir -p "$TOOLS"
  (cd "$TOOLS" && npm install --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION")
fi

# dsum-cli, the reference the page is compared with (DSUM_CLI=path reuses a built one).
if [ -z "${DSUM_CLI:-}" ]; then
  echo "== dsum-cli"
  cargo build -q -p dsum-cli
  DSUM_CLI="$TARGET_DIR/debug/dsum-cli"
fi

# Fixture models beside the page, as a user would put their own.
rm -rf web/models/fixtures
mkdir -p web/models/fixtures "$ARTIFACTS"
cp -r tests/fixtures/bart/models/tiny-c tests/fixtures/llama/models/llama-tied web/models/fixtures/

PORT="${DSUM_WEB_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
python3 -m http.server "$PORT" --bind 127.0.0.1 -d web >"$ARTIFACTS/http.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/index.html')" 2>/dev/null && break
  sleep 0.1
done

echo "== browser tests (Chromium, http://127.0.0.1:$PORT)"
ROOT="$ROOT" DSUM_CLI="$DSUM_CLI" PORT="$PORT" ARTIFACTS="$ARTIFACTS" TOOLS="$TOOLS" \
  node tools/web/test.mjs
