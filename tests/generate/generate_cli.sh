#!/usr/bin/env bash
# `qlora-train generate` end to end on stories260K (NF4): streaming output,
# sampling determinism, --stop, --prompts/--out, --chat over stdin (the
# conversation accumulates), and the error paths. Reads JSON with jq, or
# python3 when jq is missing (exit 77 with neither).
set -euo pipefail
source "$(dirname "$0")/../e2e/lib.sh" "$@"
if ! command -v jq > /dev/null; then
  command -v python3 > /dev/null || { echo "SKIP: neither jq nor python3 found"; exit 77; }
  # the few jq forms used below, in Python
  cat > "$WORK/jq.py" <<'PY'
import json, sys
args = sys.argv[1:]
flags = [a for a in args if a in ("-e", "-r", "-c", "-n")]
rest = [a for a in args if a not in flags]
named = {}
while rest and rest[0] == "--arg":
    named[rest[1]] = rest[2]
    rest = rest[3:]
prog, files = rest[0], rest[1:]
if "-n" in flags:
    r1 = named["r1"]
    print(json.dumps({"messages": [{"role": "user", "content": "Tell me a story."},
                                   {"role": "assistant", "content": r1},
                                   {"role": "user", "content": "And then?"}]}))
    sys.exit(0)
text = open(files[0]).read() if files else sys.stdin.read()
ok = True
for line in text.splitlines():
    if not line.strip():
        continue
    o = json.loads(line)
    if prog == ".completion":
        print(o["completion"])
    elif prog == ".prompt + .completion":
        print(o["prompt"] + o["completion"])
    elif prog.startswith("has("):
        ok = ok and all(k in o for k in ("prompt", "completion")) and \
            isinstance(o.get("tokens"), (int, float)) and isinstance(o.get("seconds"), (int, float))
    elif prog == ".tokens == 40":
        ok = ok and o["tokens"] == 40
    elif prog.startswith(".prompt == "):
        ok = ok and o["prompt"] == json.loads(prog[len(".prompt == "):])
    else:
        sys.exit("jq stand-in: unknown program " + prog)
sys.exit(0 if ok else 1)
PY
  jq() { python3 "$WORK/jq.py" "$@"; }
fi
base_config "$WORK/o" > "$WORK/g.yaml"
G=("$QT" generate "$WORK/g.yaml")
CHAT=(--set data.format=chat --set data.chat_template=chatml)   # stories260K ships no template

# 1. one prompt: the prompt is echoed, then the continuation; greedy is repeatable
"${G[@]}" --prompt "Once upon a time" --max-new-tokens 40 > "$WORK/a.txt" 2> "$WORK/a.err"
"${G[@]}" --prompt "Once upon a time" --max-new-tokens 40 > "$WORK/b.txt" 2> /dev/null
cmp -s "$WORK/a.txt" "$WORK/b.txt" || fail "greedy output differs between runs"
grep -q '^Once upon a time' "$WORK/a.txt" || fail "the prompt is not echoed: $(cat "$WORK/a.txt")"
[ "$(wc -c < "$WORK/a.txt")" -gt 60 ] || fail "too little text: $(cat "$WORK/a.txt")"
grep -q 'generate memory plan: weights .* KV cache .* work' "$WORK/a.err" || fail "no memory plan"
grep -q '40 new tokens' "$WORK/a.err" || fail "not 40 new tokens: $(cat "$WORK/a.err")"

# 2. sampling: same seed same text, another seed other text
S=(--prompt "Once upon a time" --max-new-tokens 40 --temperature 1.0 --top-k 40 --top-p 0.95
   --min-p 0.01 --repetition-penalty 1.1)
"${G[@]}" "${S[@]}" --seed 5 > "$WORK/s5a.txt" 2> /dev/null
"${G[@]}" "${S[@]}" --seed 5 > "$WORK/s5b.txt" 2> /dev/null
"${G[@]}" "${S[@]}" --seed 6 > "$WORK/s6.txt" 2> /dev/null
cmp -s "$WORK/s5a.txt" "$WORK/s5b.txt" || fail "seed 5 gave two different texts"
cmp -s "$WORK/s5a.txt" "$WORK/s6.txt" && fail "seeds 5 and 6 gave the same text"

# 3. --stop: the greedy text cut before the first stop string after the prompt
"${G[@]}" --prompt "Once upon a time" --max-new-tokens 40 --stop "Lily" --stop "." > "$WORK/stop.txt" 2> /dev/null
full=$(cat "$WORK/a.txt"); cut=$(cat "$WORK/stop.txt")
gen=${full#Once upon a time}; head_=${gen%%.*}; head_=${head_%%Lily*}
[ "$cut" = "Once upon a time$head_" ] || fail "--stop: got '$cut', want 'Once upon a time$head_'"

# 4. --prompts FILE --out FILE: plain prompts match the one-prompt run; messages use the template
printf '%s\n' '{"prompt": "Once upon a time"}' '' \
  '{"messages": [{"role": "user", "content": "Tell me a story."}]}' > "$WORK/p.jsonl"
"${G[@]}" "${CHAT[@]}" --prompts "$WORK/p.jsonl" --out "$WORK/o.jsonl" --max-new-tokens 40 2> "$WORK/p.err"
[ "$(wc -l < "$WORK/o.jsonl")" -eq 2 ] || fail "want 2 output lines: $(cat "$WORK/o.jsonl")"
jq -e 'has("prompt") and has("completion") and (.tokens|type=="number") and (.seconds|type=="number")' \
  "$WORK/o.jsonl" > /dev/null || fail "output lines lack keys: $(cat "$WORK/o.jsonl")"
c1=$(head -n1 "$WORK/o.jsonl" | jq -r '.prompt + .completion')
[ "$c1" = "$full" ] || fail "--prompts completion '$c1' differs from --prompt '$full'"
head -n1 "$WORK/o.jsonl" | jq -e '.tokens == 40' > /dev/null || fail "first line: not 40 tokens"
sed -n 2p "$WORK/o.jsonl" | jq -e '.prompt == "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n"' \
  > /dev/null || fail "messages line not rendered as ChatML: $(sed -n 2p "$WORK/o.jsonl")"

# 5. --chat over stdin: replies only (no prompt echoed), one per turn, and the
# second turn sees the first: it equals a --prompts line holding the whole
# conversation
printf 'Tell me a story.\nAnd then?\n' | "${G[@]}" "${CHAT[@]}" --chat --max-new-tokens 12 > "$WORK/chat.txt" 2> /dev/null
grep -q 'im_start' "$WORK/chat.txt" && fail "chat echoed the template: $(cat "$WORK/chat.txt")"
printf '%s\n' '{"messages": [{"role": "user", "content": "Tell me a story."}]}' > "$WORK/t1.jsonl"
"${G[@]}" "${CHAT[@]}" --prompts "$WORK/t1.jsonl" --out "$WORK/t1.out" --max-new-tokens 12 2> /dev/null
r1=$(jq -r .completion "$WORK/t1.out")
jq -c --arg r1 "$r1" -n '{messages: [{role: "user", content: "Tell me a story."},
  {role: "assistant", content: $r1}, {role: "user", content: "And then?"}]}' > "$WORK/t2.jsonl"
"${G[@]}" "${CHAT[@]}" --prompts "$WORK/t2.jsonl" --out "$WORK/t2.out" --max-new-tokens 12 2> /dev/null
r2=$(jq -r .completion "$WORK/t2.out")
[ "$(cat "$WORK/chat.txt")" = "$(printf '%s\n%s' "$r1" "$r2")" ] ||
  fail "chat transcript '$(cat "$WORK/chat.txt")' != turns '$r1' / '$r2'"
# one --chat --prompt turn is the first reply
"${G[@]}" "${CHAT[@]}" --chat --prompt "Tell me a story." --max-new-tokens 12 > "$WORK/one.txt" 2> /dev/null
[ "$(cat "$WORK/one.txt")" = "$r1" ] || fail "--chat --prompt '$(cat "$WORK/one.txt")' != '$r1'"

# 6. errors name the flag / file:line
expect() { # expect RC PATTERN -- command...
  local want=$1 pat=$2; shift 3
  local rc=0
  "$@" > "$WORK/out.txt" 2>&1 || rc=$?
  [ $rc -eq "$want" ] || { cat "$WORK/out.txt"; fail "exit $rc, want $want: $*"; }
  grep -q -- "$pat" "$WORK/out.txt" || { cat "$WORK/out.txt"; fail "no '$pat' from: $*"; }
}
printf '%s\n' '{"prompt": "a"}' '{"prompt": 3}' > "$WORK/bad.jsonl"
expect 1 "bad.jsonl:2: \"prompt\" must be a string" -- "${G[@]}" --prompts "$WORK/bad.jsonl" --out "$WORK/x.jsonl"
printf '%s\n' '{"messages": [{"role": "user", "content": "a"}]}' > "$WORK/nochat.jsonl"
expect 1 "nochat.jsonl:1: chat needs a chat template" -- "${G[@]}" --prompts "$WORK/nochat.jsonl"
expect 1 "missing.jsonl: cannot open" -- "${G[@]}" --prompts "$WORK/missing.jsonl"
expect 2 "--top-p must be in (0, 1]" -- "${G[@]}" --prompt a --top-p 1.5
expect 2 "--top-k needs an integer" -- "${G[@]}" --prompt a --top-k x
expect 2 "--repetition-penalty must be" -- "${G[@]}" --prompt a --repetition-penalty 0
expect 2 "--out FILE goes with --prompts" -- "${G[@]}" --prompt a --out x
expect 2 "unknown option '--bogus'" -- "${G[@]}" --prompt a --bogus 1
pass "generate CLI"
