#!/usr/bin/env bash
# structmat eval end to end: the Shakespeare model's NLL on the validation slice against
# reference.json, the token counts of both scoring modes, --ids-file against -f, BOS replacing
# each chunk's first token, KL divergence of the model against itself (0) and of a q4 copy
# (> 0, dNLL equal to the difference of two independent runs), and clear errors.
# Usage: bash tests/eval.sh path/to/structmat
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
model=models/shakespeare-llama-3m
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
get() { # get KEY FILE: a number (or word) from a one-line JSON object
    grep -o "\"$1\":[^,}]*" "$2" | head -1 | cut -d: -f2 | tr -d '"'
}
near() { # near A B TOL: |A - B| <= TOL
    awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d <= t) }'
}
expect() { # expect DESCRIPTION A B TOL
    near "$2" "$3" "$4" || { echo "FAIL: $1: $2 vs $3 (tolerance $4)"; fail=1; }
}
run() { # run OUT ARGS...: eval --json into OUT, failing loudly
    local out=$1; shift
    "$bin" eval "$@" --json >"$out" 2>"$tmp/err" || { echo "FAIL: eval $*"; cat "$tmp/err"; fail=1; }
}

# The validation slice: the last len//10 bytes of the text.
len=$(stat -c %s data/tinyshakespeare.txt)
tail -c $((len / 10)) data/tinyshakespeare.txt >"$tmp/val.txt"
[ "$(stat -c %s "$tmp/val.txt")" = $((len / 10)) ] || { echo "FAIL: validation slice"; exit 1; }
ref=$(grep -o '"nll_first_8x256_val_bytes": *[0-9.]*' $model/reference.json | sed 's/.*: *//')
[ -n "$ref" ] || { echo "FAIL: no reference NLL"; exit 1; }

# reference.json: 8 chunks of 256 bytes, every position 1..255 scored, no BOS.
run "$tmp/all.json" $model -f "$tmp/val.txt" -c 256 --chunks 8 --score all
[ "$(get tokens_scored "$tmp/all.json")" = 2040 ] || { echo "FAIL: --score all scored $(get tokens_scored "$tmp/all.json")"; fail=1; }
expect "NLL vs reference.json" "$(get nll "$tmp/all.json")" "$ref" 1e-4
nll=$(get nll "$tmp/all.json")
# Byte-level: one byte per token, so bits per byte = NLL / ln 2; PPL = exp(NLL).
expect "bpb" "$(get bpb "$tmp/all.json")" "$(awk -v x="$nll" 'BEGIN { printf "%.15g", x / log(2) }')" 1e-6
expect "ppl" "$(get ppl "$tmp/all.json")" "$(awk -v x="$nll" 'BEGIN { printf "%.15g", exp(x) }')" 1e-5
[ "$(get bos "$tmp/all.json")" = -1 ] || { echo "FAIL: a BOS on a byte-level model"; fail=1; }
awk -v t="$(get tokens_per_second "$tmp/all.json")" 'BEGIN { exit !(t > 0) }' || { echo "FAIL: tokens_per_second"; fail=1; }

# The same ids from a file give the same numbers.
od -An -v -tu1 "$tmp/val.txt" | tr -s ' \n' '  ' >"$tmp/val.ids"
run "$tmp/ids.json" $model --ids-file "$tmp/val.ids" -c 256 --chunks 8 --score all
expect "--ids-file vs -f" "$(get nll "$tmp/ids.json")" "$nll" 1e-12

# Second half (the default): positions N/2+1 .. N-1, N-1-N/2 per chunk; -c defaults to the
# model's context (256 < 512).
run "$tmp/half.json" $model -f "$tmp/val.txt" --chunks 8
[ "$(get tokens_scored "$tmp/half.json")" = $((8 * 127)) ] || { echo "FAIL: second-half count $(get tokens_scored "$tmp/half.json")"; fail=1; }
[ "$(get ctx "$tmp/half.json")" = 256 ] || { echo "FAIL: default -c"; fail=1; }
run "$tmp/odd.json" $model -f "$tmp/val.txt" -c 101 --chunks 3
[ "$(get tokens_scored "$tmp/odd.json")" = $((3 * (100 - 50))) ] || { echo "FAIL: -c 101 count"; fail=1; }
# --chunks beyond the text: all there are (a 1000-byte text holds 3 chunks of 256).
head -c 1000 "$tmp/val.txt" >"$tmp/short.txt"
run "$tmp/short.json" $model -f "$tmp/short.txt" -c 256 --chunks 50
[ "$(get chunks "$tmp/short.json")" = 3 ] || { echo "FAIL: --chunks past the end"; fail=1; }

# BOS (stories260K defines one, id 1) replaces each chunk's first token: the same as --no-bos on
# ids whose chunk starts are 1 already.
seq 10 73 | tr '\n' ' ' >"$tmp/s.ids"
seq 10 73 | awk '{ printf "%d ", (NR - 1) % 16 == 0 ? 1 : $1 }' >"$tmp/s1.ids"
run "$tmp/bos.json" models/stories260K.bin --ids-file "$tmp/s.ids" -c 16 --score all
run "$tmp/nobos.json" models/stories260K.bin --ids-file "$tmp/s1.ids" -c 16 --score all --no-bos
run "$tmp/raw.json" models/stories260K.bin --ids-file "$tmp/s.ids" -c 16 --score all --no-bos
[ "$(get bos "$tmp/bos.json")" = 1 ] && [ "$(get bos "$tmp/nobos.json")" = -1 ] || { echo "FAIL: BOS in the JSON"; fail=1; }
expect "BOS replaces the first token" "$(get nll "$tmp/bos.json")" "$(get nll "$tmp/nobos.json")" 1e-12
near "$(get nll "$tmp/bos.json")" "$(get nll "$tmp/raw.json")" 1e-6 && { echo "FAIL: --no-bos changed nothing"; fail=1; }
[ "$(get bpb "$tmp/bos.json")" = null ] || { echo "FAIL: bpb without a tokenizer"; fail=1; }

# KL divergence: the model against its own logits is 0, agrees everywhere, ratio 1.
run "$tmp/base.json" $model -f "$tmp/val.txt" -c 256 --chunks 8 --kl-divergence-base "$tmp/base.kld"
[ -s "$tmp/base.kld" ] || { echo "FAIL: no base file"; fail=1; }
run "$tmp/self.json" $model --kl-divergence-base "$tmp/base.kld" --kl-divergence
expect "self KLD" "$(get kld_mean "$tmp/self.json")" 0 1e-9
expect "self top-1" "$(get top1_agreement "$tmp/self.json")" 1 0
expect "self PPL ratio" "$(get ppl_ratio "$tmp/self.json")" 1 1e-12
[ "$(get tokens_scored "$tmp/self.json")" = 1016 ] || { echo "FAIL: KLD positions"; fail=1; }
# With the text as well: it must give the base file's tokens.
run "$tmp/self2.json" $model -f "$tmp/val.txt" --kl-divergence-base "$tmp/base.kld" --kl-divergence
expect "self KLD with -f" "$(get kld_mean "$tmp/self2.json")" 0 1e-9

# A q4 copy of the model: KLD > 0, top-1 < 1, ln(PPL ratio) = dNLL = the NLL difference of two
# separate plain evaluations.
"$bin" fit $model --all --spec dense:dtype=q4 --save-model "$tmp/q4" >/dev/null 2>"$tmp/err" ||
    { echo "FAIL: fit --save-model"; cat "$tmp/err"; fail=1; }
run "$tmp/q4.json" "$tmp/q4" --kl-divergence-base "$tmp/base.kld" --kl-divergence
run "$tmp/q4plain.json" "$tmp/q4" -f "$tmp/val.txt" -c 256 --chunks 8
awk -v k="$(get kld_mean "$tmp/q4.json")" -v t="$(get top1_agreement "$tmp/q4.json")" \
    'BEGIN { exit !(k > 1e-4 && k < 0.1 && t < 1 && t > 0.8) }' ||
    { echo "FAIL: q4 KLD $(get kld_mean "$tmp/q4.json"), top-1 $(get top1_agreement "$tmp/q4.json")"; fail=1; }
dnll=$(get dnll "$tmp/q4.json")
expect "ln(PPL ratio) = dNLL" "$(awk -v r="$(get ppl_ratio "$tmp/q4.json")" 'BEGIN { printf "%.15g", log(r) }')" "$dnll" 1e-8
expect "dNLL = NLL(q4) - NLL(base)" "$dnll" \
    "$(awk -v a="$(get nll "$tmp/q4plain.json")" -v b="$(get nll "$tmp/half.json")" 'BEGIN { printf "%.15g", a - b }')" 1e-7
expect "nll_base" "$(get nll_base "$tmp/q4.json")" "$(get nll "$tmp/half.json")" 1e-7
awk -v s="$(get kld_stderr "$tmp/q4.json")" -v k="$(get kld_mean "$tmp/q4.json")" 'BEGIN { exit !(s > 0 && s < k) }' ||
    { echo "FAIL: kld_stderr"; fail=1; }

# --save-model: an existing checkpoint is replaced only with --force, a directory holding
# something else never; the directory appears whole (no temporary sibling left).
refuse "--save-model over a checkpoint" "exists (use --force" "$bin" fit $model --all --spec dense:dtype=q4 --save-model "$tmp/q4"
"$bin" fit $model --all --spec dense:dtype=q4 --save-model "$tmp/q4" --force >/dev/null 2>"$tmp/err" ||
    { echo "FAIL: --save-model --force"; cat "$tmp/err"; fail=1; }
mkdir "$tmp/other" && : >"$tmp/other/keep"
refuse "--save-model over another directory" "holds no checkpoint" "$bin" fit $model --all --spec dense --save-model "$tmp/other" --force
[ -e "$tmp/other/keep" ] || { echo "FAIL: a directory that is not a checkpoint was replaced"; fail=1; }

# Errors name the problem.
cp "$tmp/base.kld" "$tmp/before.kld"
refuse "base exists" "exists" "$bin" eval $model -f "$tmp/val.txt" -c 256 --chunks 8 --kl-divergence-base "$tmp/base.kld"
cmp -s "$tmp/base.kld" "$tmp/before.kld" || { echo "FAIL: existing base damaged"; fail=1; }
refuse "--kl-divergence alone" "needs --kl-divergence-base" "$bin" eval $model -f "$tmp/val.txt" --kl-divergence
refuse "other tokens" "differ from those of" "$bin" eval $model -f data/tinyshakespeare.txt --kl-divergence-base "$tmp/base.kld" --kl-divergence
refuse "other -c" "was made with -c 256" "$bin" eval $model -c 128 --kl-divergence-base "$tmp/base.kld" --kl-divergence
refuse "other --score" "scores from position 128" "$bin" eval $model --score all --kl-divergence-base "$tmp/base.kld" --kl-divergence
refuse "other vocabulary" "a vocabulary of 256 tokens, the model has 512" "$bin" eval models/stories260K.bin --kl-divergence-base "$tmp/base.kld" --kl-divergence
printf 'garbage' >"$tmp/bad.kld"
refuse "not a base file" "not a structmat KL-divergence base file" "$bin" eval $model --kl-divergence-base "$tmp/bad.kld" --kl-divergence
refuse "-c beyond the context" "exceeds the model's context of 256" "$bin" eval $model -f "$tmp/val.txt" -c 512
: >"$tmp/empty.txt"
refuse "empty text" "is empty" "$bin" eval $model -f "$tmp/empty.txt"
refuse "missing file" "$tmp/nope.txt" "$bin" eval $model -f "$tmp/nope.txt"
refuse "missing model" "no-model" "$bin" eval "$tmp/no-model" -f "$tmp/val.txt"
head -c 100 "$tmp/val.txt" >"$tmp/tiny.txt"
refuse "text shorter than a chunk" "100 tokens are fewer than one chunk of 256" "$bin" eval $model -f "$tmp/tiny.txt"
refuse "-f and --ids-file" "not both" "$bin" eval $model -f "$tmp/val.txt" --ids-file "$tmp/s.ids"
printf '1 2 x 3' >"$tmp/bad.ids"
refuse "junk in --ids-file" "is not a token id" "$bin" eval $model --ids-file "$tmp/bad.ids"
printf '1 2 256' >"$tmp/big.ids"
refuse "id outside the vocabulary" "outside the vocabulary (0..255)" "$bin" eval $model --ids-file "$tmp/big.ids"
refuse "--bos without a BOS" "defines no BOS" "$bin" eval $model -f "$tmp/val.txt" --bos
refuse "-f without a tokenizer" "give token ids" "$bin" eval models/stories260K.bin -f "$tmp/val.txt"
refuse "bad --score" "second-half or all" "$bin" eval $model -f "$tmp/val.txt" --score most
refuse "-c 2 scores nothing" "scores no token" "$bin" eval $model -f "$tmp/val.txt" -c 2
refuse "no input" "need -f FILE or --ids-file" "$bin" eval $model
"$bin" eval --help | grep -q "usage: structmat eval" || { echo "FAIL: eval --help"; fail=1; }
ls "$tmp" | grep -q tmp- && { echo "FAIL: temporary file left behind"; fail=1; }
exit $fail
