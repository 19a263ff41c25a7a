#!/usr/bin/env bash
# `qlora-train inspect` on real files: stories260K (single file + config.json)
# and a bitsandbytes nf4 checkpoint saved sharded by transformers; the expected
# tensor lines and totals come from the safetensors / transformers libraries
# (tests/golden/hf_config/models/*/inspect_expected.txt, written by
# tools/reference/make_hf_config_fixtures.py). Then the exit codes of bad input.
#   usage: test_inspect.sh QLORA_TRAIN GOLDEN_MODELS_DIR STORIES260K_DIR
set -u
BIN=$1 GOLDEN=$2 STORIES=$3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# run NAME EXPECTED_RC ARGS...: runs the binary, keeps stdout/stderr in $TMP/NAME.{out,err}.
run() {
  local name=$1 want=$2
  shift 2
  "$BIN" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
  local rc=$?
  [ "$rc" -eq "$want" ] || fail "$name: exit $rc, want $want; stderr: $(cat "$TMP/$name.err")"
}
# expect_lines NAME FILE: every line of FILE occurs, after a blank, in the
# whitespace-squeezed stdout (so a tensor name matches whole, not as a suffix).
expect_lines() {
  local name=$1 file=$2 n=0
  tr -s ' ' <"$TMP/$name.out" | sed 's/^/ /' >"$TMP/$name.norm"
  while IFS= read -r line; do
    n=$((n + 1))
    grep -qF -- " $line" "$TMP/$name.norm" || fail "$name: output lacks '$line'"
  done <"$file"
  [ "$n" -gt 2 ] || fail "$name: $file has only $n lines"
}
expect_out() { grep -qF -- "$2" "$TMP/$1.out" || fail "$1: stdout lacks '$2'"; }
expect_err() { grep -qF -- "$2" "$TMP/$1.err" || fail "$1: stderr lacks '$2'"; }

# --- stories260K: model directory, and the safetensors file alone -------------
run stories 0 inspect "$STORIES"
expect_lines stories "$GOLDEN/stories260K/inspect_expected.txt"
expect_out stories "model directory: $STORIES (1 safetensors file)"
expect_out stories "model_type llama, 5 layers, hidden 64, intermediate 172, vocab 512"
expect_out stories "heads 8, kv heads 4, head_dim 8 (GQA)"
expect_out stories "rms_norm_eps 1e-05, rope default theta 10000"
expect_out stories "embeddings tied"
expect_out stories "format = pt"
n=$(grep -c '^  model\.' "$TMP/stories.out")
[ "$n" -eq 47 ] || fail "stories: $n tensor lines, want 47"

run stories_file 0 inspect "$STORIES/model.safetensors"
expect_lines stories_file "$GOLDEN/stories260K/inspect_expected.txt"
expect_out stories_file "safetensors file: $STORIES/model.safetensors"
grep -q '^config:' "$TMP/stories_file.out" && fail "stories_file: a lone file has no config"

# --- bitsandbytes nf4 + double quant, two shards -----------------------------
M=$GOLDEN/llama_nf4_sharded
run nf4 0 inspect "$M"
expect_lines nf4 "$M/inspect_expected.txt"
expect_out nf4 "(2 safetensors files)"
expect_out nf4 "quantization: bitsandbytes nf4 (4-bit), double quant, compute bfloat16, storage uint8"
expect_out nf4 "7 4-bit weights (counted unpacked)"

# --- a checkpoint-like directory: every *.safetensors file in turn -----------
mkdir "$TMP/ckpt"
cp "$M/model-00002-of-00002.safetensors" "$TMP/ckpt/b.safetensors"
cp "$STORIES/model.safetensors" "$TMP/ckpt/a.safetensors"
run ckpt 0 inspect "$TMP/ckpt"
expect_out ckpt "safetensors file: $TMP/ckpt/a.safetensors"
expect_out ckpt "safetensors file: $TMP/ckpt/b.safetensors"

# --- bad input ----------------------------------------------------------------
run noargs 2 inspect
expect_err noargs "usage: qlora-train inspect PATH"
run twoargs 2 inspect "$STORIES" "$STORIES"
run help 0 inspect --help
expect_out help "usage: qlora-train inspect PATH"

run missing 1 inspect "$TMP/no/such/model"
expect_err missing "$TMP/no/such/model: cannot open"

head -c 100 "$STORIES/model.safetensors" >"$TMP/truncated.safetensors"
run truncated 1 inspect "$TMP/truncated.safetensors"
expect_err truncated "$TMP/truncated.safetensors"
expect_err truncated "format error"

printf 'not a safetensors file at all' >"$TMP/text.safetensors"
run garbage 1 inspect "$TMP/text.safetensors"
expect_err garbage "$TMP/text.safetensors"

mkdir "$TMP/empty"
run emptydir 1 inspect "$TMP/empty"
expect_err emptydir "no config.json and no *.safetensors files"

mkdir "$TMP/gpt2"
cp "$STORIES/model.safetensors" "$TMP/gpt2/"
sed 's/"llama"/"gpt2"/' "$STORIES/config.json" >"$TMP/gpt2/config.json"
run gpt2 1 inspect "$TMP/gpt2"
expect_err gpt2 "$TMP/gpt2/config.json: model_type 'gpt2' is not supported; supported: llama, mistral, qwen2"

mkdir "$TMP/noweights"
cp "$STORIES/config.json" "$TMP/noweights/"
run noweights 1 inspect "$TMP/noweights"
expect_err noweights "$TMP/noweights"

# A shard named in the index but absent.
mkdir "$TMP/lostshard"
cp "$M/config.json" "$M/model.safetensors.index.json" "$M/model-00001-of-00002.safetensors" "$TMP/lostshard/"
run lostshard 1 inspect "$TMP/lostshard"
expect_err lostshard "model-00002-of-00002.safetensors"

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "test_inspect: all checks passed"
