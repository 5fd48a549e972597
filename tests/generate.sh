#!/usr/bin/env bash
# structmat generate end to end: greedy ids of stories260K.bin through the CLI against
# tools/llama2c_ref.py (an independent float64 numpy forward of llama2.c's run.c; under CI=true a
# missing numpy fails, else that part is skipped), the Shakespeare model's top 5 next bytes after
# reference.json's prompt, -n, EOS and context stops, seeds, text against ids, clear errors.
# Usage: bash tests/generate.sh path/to/structmat
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
model=models/shakespeare-llama-3m
stories=models/stories260K.bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
gen() { # gen ARGS...: stdout of generate; a failure is reported
    "$bin" generate "$@" 2>"$tmp/err" || { echo "FAIL: generate $*" >&2; cat "$tmp/err" >&2; fail=1; }
}
ids_of() { # the "tokens" list of a generate --json object, space separated
    grep -o '"tokens":\[[^]]*\]' | sed 's/.*\[//; s/\]//' | tr ',' ' '
}

# --n-probs after reference.json's prompt: the top 5 next bytes, most likely first.
want=$(tr -d ' \n' <$model/reference.json | grep -o '"prompt_next_byte_top5":\[[^]]*\]' | sed 's/.*\[//; s/\]//')
[ -n "$want" ] || { echo "FAIL: no top-5 in reference.json"; exit 1; }
gen $model --prompt "$(printf 'ROMEO:\nWhat light')" -n 0 --n-probs 5 --json >"$tmp/top.json"
got=$(grep -o '"id":[0-9]*' "$tmp/top.json" | cut -d: -f2 | paste -sd,)
[ "$got" = "$want" ] || { echo "FAIL: top 5 after the prompt: $got, reference.json $want"; fail=1; }
grep -o '"logprob":[-0-9.e]*' "$tmp/top.json" | cut -d: -f2 |
    awk 'BEGIN { prev = 1 } { if (!($1 <= 0 && $1 <= prev)) bad = 1; prev = $1; s += exp($1) }
         END { exit !(NR == 5 && !bad && s < 1) }' || { echo "FAIL: top-5 log-probabilities"; cat "$tmp/top.json"; fail=1; }
grep -q '"prompt_tokens":17,"tokens":\[\]' "$tmp/top.json" || { echo "FAIL: -n 0 generated"; fail=1; }

# -n counts new tokens; --ids are used as given.
[ "$(gen $stories --ids 1,461 -n 5 --temp 0 --print-ids | wc -w)" = 5 ] || { echo "FAIL: -n 5"; fail=1; }
# Greedy is deterministic; the same seed samples the same tokens, another seed others.
a=$(gen $stories --ids 1 -n 40 --temp 0.9 --seed 7 --print-ids)
b=$(gen $stories --ids 1 -n 40 --temp 0.9 --seed 7 --print-ids)
c=$(gen $stories --ids 1 -n 40 --temp 0.9 --seed 8 --print-ids)
[ -n "$a" ] && [ "$a" = "$b" ] || { echo "FAIL: --seed 7 twice differs"; fail=1; }
[ "$a" != "$c" ] || { echo "FAIL: --seed 7 and 8 sample the same 40 tokens"; fail=1; }

# EOS (id 2): without --ignore-eos the output is the --ignore-eos output up to its first 2.
eos_seen=0
for s in 1 2 3 4 5 6 7 8; do
    full=$(gen $stories --ids 1 --temp 1 --seed $s --ignore-eos --print-ids)
    cut=$(gen $stories --ids 1 --temp 1 --seed $s --json)
    stop=$(printf '%s' "$cut" | grep -o '"stop":"[a-z]*"' | cut -d'"' -f4)
    cutids=$(printf '%s' "$cut" | ids_of)
    prefix=$(printf '%s\n' $full | awk '$1 == 2 { exit } { printf "%s%s", (NR > 1 ? " " : ""), $1 }')
    if printf '%s\n' $full | grep -qx 2; then
        eos_seen=1
        [ "$stop" = eos ] && [ "$cutids" = "$prefix" ] || { echo "FAIL: EOS stop, seed $s ($stop)"; fail=1; }
    else
        # No EOS: the context (512) is the limit: 511 new tokens after one prompt token.
        [ "$stop" = context ] && [ "$(printf '%s\n' $full | wc -l)" = 511 ] && [ "$cutids" = "$prefix" ] ||
            { echo "FAIL: context stop, seed $s ($stop)"; fail=1; }
    fi
done
[ $eos_seen = 1 ] || { echo "FAIL: no seed of 1..8 reached EOS"; fail=1; }

# The context stops generation: 250 prompt bytes leave 6 of 256 positions.
head -c 250 data/tinyshakespeare.txt >"$tmp/p250.txt"
gen $model --prompt-file "$tmp/p250.txt" -n 100 --temp 0 --json >"$tmp/ctx.json"
grep -q '"stop":"context"' "$tmp/ctx.json" && [ "$(ids_of <"$tmp/ctx.json" | wc -w)" = 6 ] ||
    { echo "FAIL: context stop"; cat "$tmp/ctx.json"; fail=1; }

# Text is the bytes of the ids (byte-level model), streamed and in the JSON alike.
ids=$(gen $model --prompt "ROMEO:" -n 60 --temp 0 --print-ids)
text=$(gen $model --prompt "ROMEO:" -n 60 --temp 0; echo x)
bytes=$(for i in $ids; do printf "\\$(printf '%03o' "$i")"; done; echo x)
[ "$text" = "$bytes" ] || { echo "FAIL: text vs ids"; fail=1; }
gen $model --prompt "ROMEO:" -n 60 --temp 0 --json | ids_of | tr -s ' ' >"$tmp/j.ids"
[ "$(cat "$tmp/j.ids")" = "$ids" ] || { echo "FAIL: --json tokens vs --print-ids"; fail=1; }

# Bad input.
head -c 300 data/tinyshakespeare.txt >"$tmp/p300.txt"
refuse "prompt longer than the context" "the prompt has 300 tokens, more than the context of 256" \
    "$bin" generate $model --prompt-file "$tmp/p300.txt"
refuse "id outside the vocabulary" "token id 256 is outside the vocabulary (0..255)" "$bin" generate $model --ids 5,256
refuse "junk id" "is not a token id" "$bin" generate $model --ids 5,x
refuse "empty prompt" "the prompt is empty" "$bin" generate $model --prompt ""
: >"$tmp/empty.txt"
refuse "empty prompt file" "is empty" "$bin" generate $model --prompt-file "$tmp/empty.txt"
refuse "missing prompt file" "$tmp/nope.txt" "$bin" generate $model --prompt-file "$tmp/nope.txt"
refuse "missing model" "no-model" "$bin" generate "$tmp/no-model" --ids 1
refuse "--prompt and --ids" "exactly one of --prompt, --prompt-file and --ids" "$bin" generate $model --prompt a --ids 1
refuse "no prompt" "exactly one of" "$bin" generate $model
refuse "text without a tokenizer" "give token ids" "$bin" generate $stories --prompt "Once"
refuse "bad --temp" "--temp" "$bin" generate $model --ids 1 --temp -1
refuse "bad --top-p" "--top-p" "$bin" generate $model --ids 1 --top-p 1.5
refuse "bad -n" "-n" "$bin" generate $model --ids 1 -n -2
refuse "--n-probs beyond the vocabulary" "exceeds the vocabulary" "$bin" generate $model --ids 1 --n-probs 300
"$bin" generate --help | grep -q "usage: structmat generate" || { echo "FAIL: generate --help"; fail=1; }

# Greedy ids of stories260K from BOS through the CLI against the numpy reference.
py=/usr/bin/python3
need_python "$py" "numpy" "numpy (python3-numpy) is not installed for $py: the numpy cross-check is skipped"
ref=$($py tools/llama2c_ref.py $stories 200 2>"$tmp/err") || { cat "$tmp/err"; exit 1; }
cli=$(gen $stories --ids 1 -n 200 --temp 0 --print-ids)
[ "$(echo $cli | wc -w)" = 200 ] && [ "$cli" = "$ref" ] ||
    { echo "FAIL: greedy ids differ from the numpy reference"; echo "numpy: $ref"; echo "CLI:   $cli"; fail=1; }
exit $fail
