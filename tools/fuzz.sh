#!/usr/bin/env bash
# Run every cargo-fuzz target of fuzz/ for N seconds each (default 15), seeded from
# tests/fixtures. Installs the nightly toolchain and cargo-fuzz only when they are missing.
# Crashes land in fuzz/artifacts/<target>/; the script exits non-zero if any target failed.
#
#   tools/fuzz.sh [seconds] [target...]
#
# DSUM_FUZZ_TARGET_DIR: build directory (default target/fuzz; kept apart from the main
# build because the sanitizer flags would otherwise force rebuilds of both).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SECS="${1:-15}"
shift || true

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
export CARGO_TARGET_DIR="${DSUM_FUZZ_TARGET_DIR:-$ROOT/target/fuzz}"

ALL=(safetensors gguf config_json tokenizer_json chat_template csv mecab_dict rouge pytorch_bin pickle nf4_dequantize bnb_state peft_config)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

# Seeds: fixture files as they are (small ones) or cut (model files, whose headers matter).
seed() { # target file [bytes]
  local dir="fuzz/corpus/$1" name
  mkdir -p "$dir"
  name="seed-$(printf '%s' "$2" | tr '/' '_')"
  [ -e "$dir/$name" ] && return 0
  if [ -n "${3:-}" ]; then head -c "$3" "$2" >"$dir/$name"; else cp "$2" "$dir/$name"; fi
}
F=tests/fixtures
seed safetensors $F/bin/views.safetensors
seed safetensors $F/llama/models/qwen3-f16/model.safetensors 16384
seed safetensors $F/bart/models/tiny-b-f16/model.safetensors 16384
for g in $F/gguf/*.gguf; do seed gguf "$g"; done
for c in $F/bart/models/tiny-a/config.json $F/bart/models/tiny-a/generation_config.json \
         $F/llama/models/*/config.json $F/llama/models/*/generation_config.json; do
  [ -f "$c" ] && seed config_json "$c"
done
# tokenizer.json: each fixture family cut to its first 120 tokens (and the merges among
# them), so the target runs hundreds of times faster than on the full 90 kB files.
mkdir -p fuzz/corpus/tokenizer_json
for t in $F/bart/models/tiny-a $F/llama/models/qwen3 $F/llama/models/llama-tied; do
  out="fuzz/corpus/tokenizer_json/seed-$(basename "$t")"
  [ -e "$out" ] || python3 -c 'import json,sys
t=json.load(open(sys.argv[1]+"/tokenizer.json")); m=t["model"]
m["vocab"]={k:v for k,v in m["vocab"].items() if v<120}
pair=lambda x: x.split(" ",1) if isinstance(x,str) else x
m["merges"]=[x for x in m.get("merges",[]) if all(p in m["vocab"] for p in pair(x)) and "".join(pair(x)) in m["vocab"]]
sys.stdout.write(json.dumps(t,ensure_ascii=False)+"\0"+open(sys.argv[1]+"/tokenizer_config.json").read())' "$t" >"$out"
done
# Chat templates: each fixture's tokenizer_config.json template, then a NUL and a message.
for t in $F/llama/models/*/tokenizer_config.json; do
  out="fuzz/corpus/chat_template/seed-$(basename "$(dirname "$t")")"
  mkdir -p fuzz/corpus/chat_template
  [ -e "$out" ] || python3 -c 'import json,sys; c=json.load(open(sys.argv[1])).get("chat_template") or ""; c=c if isinstance(c,str) else c[0]["template"]; sys.stdout.write(c+"\0user\0안녕 #Person1#")' "$t" >"$out"
done
for c in $F/data/*.csv $F/rouge/cli/*.csv; do seed csv "$c"; done
seed rouge $F/data/summarize_tiny-a.csv
# Mecab: the first byte picks the dictionary file the rest replaces (see the target).
mkdir -p fuzz/corpus/mecab_dict
for i in 0 1 2 3 4; do
  [ -e fuzz/corpus/mecab_dict/seed-$i ] || printf "\\x0$i" >fuzz/corpus/mecab_dict/seed-$i
done
if [ -n "${DSUM_MECAB_DIC:-}" ] && [ -f "$DSUM_MECAB_DIC/unk.dic" ]; then
  for pair in 0:unk.dic 3:unk.dic 4:dicrc; do
    out="fuzz/corpus/mecab_dict/seed-${pair/:/-}"
    [ -e "$out" ] || { printf "\\x0${pair%%:*}"; cat "$DSUM_MECAB_DIC/${pair#*:}"; } >"$out"
  done
fi
for b in $F/bin/*.bin; do seed pytorch_bin "$b"; done
seed pytorch_bin $F/bin/qwen2-sharded/pytorch_model-00002-of-00002.bin
# data.pkl of the fixture zips (the pickle target sees the unpickler directly).
mkdir -p fuzz/corpus/pickle
for b in $F/bin/*.bin $F/bin/tiny-b/pytorch_model.bin; do
  out="fuzz/corpus/pickle/seed-$(basename "$(dirname "$b")")-$(basename "$b")"
  [ -e "$out" ] || python3 -c 'import zipfile,sys
try:
    z=zipfile.ZipFile(sys.argv[1]); n=[x for x in z.namelist() if x.endswith("/data.pkl")][0]; sys.stdout.buffer.write(z.read(n))
except Exception:
    sys.stdout.buffer.write(open(sys.argv[1],"rb").read())' "$b" >"$out"
done

# NF4: the tiny bitsandbytes checkpoints and case tensors; PEFT: the fixture adapter configs.
seed bnb_state $F/nf4/tiny-llama-nf4/model.safetensors
seed bnb_state $F/train/qlora-llama/nf4_extra.safetensors
seed nf4_dequantize $F/nf4/cases.safetensors 4096
for c in $F/lora/*/adapter_config.json $F/train/*/init_adapter/adapter_config.json; do
  mkdir -p fuzz/corpus/peft_config
  out="fuzz/corpus/peft_config/seed-$(basename "$(dirname "$(dirname "$c")")")-$(basename "$(dirname "$c")")"
  [ -e "$out" ] || cp "$c" "$out"
done

cd fuzz
echo "== building ${#TARGETS[@]} fuzz targets"
start=$(date +%s)
if [ $# -eq 0 ]; then
  cargo +nightly fuzz build
else
  for t in "${TARGETS[@]}"; do cargo +nightly fuzz build "$t"; done
fi
echo "== built in $(( $(date +%s) - start ))s"

failed=()
for t in "${TARGETS[@]}"; do
  log="$CARGO_TARGET_DIR/fuzz-$t.log"
  # -timeout: a single input running longer is a hang; -malloc_limit_mb: one allocation
  # over 1 GiB is a bug (no input here is bigger than a few hundred KiB).
  if cargo +nightly fuzz run "$t" -- -max_total_time="$SECS" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED; failed+=("$t")
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  printf '%-16s %-6s %ss %s execs\n' "$t" "$status" "$SECS" "$execs"
  [ "$status" = ok ] || tail -n 40 "$log"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
