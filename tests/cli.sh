#!/usr/bin/env bash
# The command-line program end to end: help, inspect, fit (table, JSON, -o), errors, atomic output.
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
model=models/shakespeare-llama-3m
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # check DESCRIPTION COMMAND...: the command must succeed
    local what=$1; shift
    if ! "$@" >/dev/null 2>"$tmp/err"; then echo "FAIL: $what"; cat "$tmp/err"; fail=1; fi
}

for c in inspect fit bench specs; do
    "$bin" "$c" --help | grep -q "usage: structmat $c" || { echo "FAIL: $c --help"; fail=1; }
done
check "--version" "$bin" --version
"$bin" --version | grep -Eq "kernels: (scalar|avx2|avx512)" || { echo "FAIL: --version"; fail=1; }
refuse "unknown command" "unknown command" "$bin" frobnicate

# inspect: a row per 2-D weight (30 in the model) and a summary.
"$bin" inspect "$model" --json >"$tmp/i.jsonl" || fail=1
[ "$(grep -c '"tensor"' "$tmp/i.jsonl")" = 30 ] || { echo "FAIL: inspect rows"; fail=1; }
grep -q '"summary"' "$tmp/i.jsonl" || { echo "FAIL: inspect summary"; fail=1; }
refuse "inspect missing file" "no-such" "$bin" inspect "$tmp/no-such"
refuse "inspect unknown tensor" "no matrix named" "$bin" inspect "$model" --tensor nope

# fit --all: 29 matrices (all but the embedding), every documented key, canonical specs.
"$bin" fit "$model" --all --spec lowrank:ratio=0.5 --json >"$tmp/f.jsonl" || fail=1
[ "$(grep -c '"tensor"' "$tmp/f.jsonl")" = 29 ] || { echo "FAIL: fit --all rows"; fail=1; }
grep -q embed_tokens "$tmp/f.jsonl" && { echo "FAIL: fit --all included the embedding"; fail=1; }
for k in tensor spec shape rel_error params bytes bpw macs fit_seconds; do
    grep '"tensor"' "$tmp/f.jsonl" | grep -vq "\"$k\":" && { echo "FAIL: fit key $k"; fail=1; }
done
grep -q '"tensor":"model.layers.0.self_attn.q_proj.weight","spec":"lowrank:rank=64"' "$tmp/f.jsonl" ||
    { echo "FAIL: canonical spec of q_proj"; fail=1; }

# fit -o writes an operator file that inspect reads back with its spec; no overwrite without --force.
name=model.layers.1.mlp.down_proj.weight
check "fit -o" "$bin" fit "$model" --tensor $name --spec monarch:blocks=4 -o "$tmp/op.safetensors"
"$bin" inspect "$tmp/op.safetensors" --json | grep -q '"spec":"monarch:blocks=4,rank=16"' ||
    { echo "FAIL: inspect of an operator file"; fail=1; }
cp "$tmp/op.safetensors" "$tmp/before"
refuse "fit -o existing" "exists" "$bin" fit "$model" --tensor $name --spec lowrank:rank=4 -o "$tmp/op.safetensors"
cmp -s "$tmp/before" "$tmp/op.safetensors" || { echo "FAIL: existing output damaged"; fail=1; }
check "fit -o --force" "$bin" fit "$model" --tensor $name --spec lowrank:rank=4 -o "$tmp/op.safetensors" --force
ls "$tmp" | grep -q tmp- && { echo "FAIL: temporary file left behind"; fail=1; }

# Errors name the problem.
refuse "bad spec" "unknown structure" "$bin" fit "$model" --tensor $name --spec nosuch
refuse "impossible rank" "impossible" "$bin" fit "$model" --tensor $name --spec lowrank:rank=999
refuse "blocks not dividing" "monarch" "$bin" fit "$model" --tensor $name --spec monarch:blocks=5
refuse "missing --spec" "need PATH" "$bin" fit "$model" --all
refuse "bad threads" "--threads" "$bin" fit "$model" --all --spec dense --threads x
printf 'garbage' >"$tmp/bad.safetensors"
refuse "broken file" "bad.safetensors" "$bin" inspect "$tmp/bad.safetensors"

# Hostile and unusual inputs, in small handmade safetensors files.
mkst() { # mkst FILE HEADER-JSON DATA (printf escapes): a safetensors file
    local n=${#2}
    printf "$(printf '\\%03o\\%03o\\%03o\\%03o\\000\\000\\000\\000' $((n & 255)) $((n >> 8 & 255)) \
        $((n >> 16 & 255)) $((n >> 24 & 255)))" >"$1"
    printf '%s' "$2" >>"$1"
    printf "$3" >>"$1"
}
# BF16 and F16 weights are read exactly: dense refits them with error 0.
mkst "$tmp/half.safetensors" '{"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"h":{"dtype":"F16","shape":[2,2],"data_offsets":[8,16]}}' \
    '\x80\x3f\x00\x40\x40\x40\x80\x40\x00\x3c\x00\x40\x00\x42\x00\x44'
for t in b h; do
    "$bin" fit "$tmp/half.safetensors" --tensor $t --spec dense --json >"$tmp/half.jsonl" 2>&1 &&
        grep -q '"rel_error":0,' "$tmp/half.jsonl" || { echo "FAIL: fit of a half tensor $t"; cat "$tmp/half.jsonl"; fail=1; }
done
check "inspect of BF16/F16" "$bin" inspect "$tmp/half.safetensors"
# An all-zero matrix fits with error 0, not NaN.
mkst "$tmp/zero.safetensors" '{"z":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}' \
    '\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'
for s in lowrank:rank=1 kron:a=1x2 dense:dtype=q4; do
    "$bin" fit "$tmp/zero.safetensors" --tensor z --spec $s --json >"$tmp/z.jsonl" 2>&1 &&
        grep -q '"rel_error":0,' "$tmp/z.jsonl" || { echo "FAIL: fit $s of zeros"; cat "$tmp/z.jsonl"; fail=1; }
done
check "inspect of zeros" "$bin" inspect "$tmp/zero.safetensors"
# NaN in a weight: refused, naming the tensor and the position.
mkst "$tmp/nan.safetensors" '{"w.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}' \
    '\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\xc0\x7f'
refuse "fit of NaN weights" "w.weight (2x2): the matrix has a non-finite value (nan) at index 3 (row 1, column 1)" \
    "$bin" fit "$tmp/nan.safetensors" --all --spec lowrank:rank=1
refuse "inspect of NaN weights" "non-finite" "$bin" inspect "$tmp/nan.safetensors"
# A 1-D tensor, a tensor of an unknown dtype (its huge shape is never sized) and an empty matrix.
mkst "$tmp/odd.safetensors" '{"v":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"q":{"dtype":"Q3_K","shape":[1099511627776,1099511627776],"data_offsets":[8,8]},"e":{"dtype":"F32","shape":[0,4],"data_offsets":[8,8]}}' \
    '\x00\x00\x80\x3f\x00\x00\x80\x3f'
refuse "fit of a 1-D tensor" "not a matrix" "$bin" fit "$tmp/odd.safetensors" --tensor v --spec dense
refuse "fit of an unknown dtype" "has dtype Q3_K, which cannot be read as F32" \
    "$bin" fit "$tmp/odd.safetensors" --tensor q --spec dense
refuse "fit of an empty matrix" "m, n >= 1" "$bin" fit "$tmp/odd.safetensors" --tensor e --spec dense
refuse "inspect of an unknown dtype" "Q3_K" "$bin" inspect "$tmp/odd.safetensors" --tensor q
# No tensors at all: inspect reports none; fit --all has nothing to do and says so.
mkst "$tmp/empty.safetensors" '{}' ''
"$bin" inspect "$tmp/empty.safetensors" --json | grep -q '"matrices":0' || { echo "FAIL: inspect of an empty file"; fail=1; }
refuse "fit --all of an empty file" "no 2-D weights" "$bin" fit "$tmp/empty.safetensors" --all --spec dense
# --tensor twice would fit twice and then write (or refuse) duplicates: refused at once.
refuse "--tensor twice" "given twice" "$bin" fit "$model" --tensor $name --tensor $name --spec dense -o "$tmp/twice.safetensors"
[ -e "$tmp/twice.safetensors" ] && { echo "FAIL: --tensor twice wrote a file"; fail=1; }
"$bin" fit "$model" --tensor $name --tensor $name --spec dense 2>/dev/null | grep -q "$name" &&
    { echo "FAIL: --tensor twice fitted before refusing"; fail=1; }
# An output in a directory that does not exist is refused before fitting.
refuse "-o in a missing directory" "the directory $tmp/no/such does not exist" \
    "$bin" fit "$model" --tensor $name --spec dense -o "$tmp/no/such/out.safetensors"
refuse "-o a directory" "is a directory" "$bin" fit "$model" --tensor $name --spec dense -o "$tmp" --force
refuse "-o empty" "output path is empty" "$bin" fit "$model" --tensor $name --spec dense -o ""
# --seed and --threads take plain non-negative integers (strtoull alone wraps -1 to 2^64 - 1).
refuse "--seed -1" "--seed" "$bin" fit "$model" --tensor $name --spec dense --seed -1
refuse "--seed out of range" "--seed" "$bin" fit "$model" --tensor $name --spec dense --seed 99999999999999999999
refuse "--threads ' 4'" "--threads" "$bin" fit "$model" --tensor $name --spec dense --threads " 4"
check "--seed 0x10" "$bin" fit "$model" --tensor $name --spec lowrank:rank=2,solver=random --seed 0x10
# An operator whose shape metadata is missing is an error, not a pair of plain tensors.
mkst "$tmp/noshape.safetensors" '{"__metadata__":{"structmat.format_version":"1","structmat.spec.m":"lowrank:rank=1"},"m.U":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},"m.V":{"dtype":"F32","shape":[1,2],"data_offsets":[8,16]}}' \
    '\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\x80\x3f\x00\x00\x80\x3f'
refuse "inspect of an operator without a shape" 'has no structmat.shape.m metadata' "$bin" inspect "$tmp/noshape.safetensors"
"$bin" inspect "$tmp/noshape.safetensors" 2>/dev/null | grep -q "m\.U" && { echo "FAIL: parts listed as matrices"; fail=1; }
# A stored spec naming a structure that cannot load (yet) is an error naming the operator.
mkst "$tmp/blast.safetensors" '{"__metadata__":{"structmat.format_version":"1","structmat.spec.x":"blast","structmat.shape.x":"2,2"}}' ''
refuse "inspect of an operator that cannot load" 'operator "x" (blast, 2x2)' "$bin" inspect "$tmp/blast.safetensors"
exit $fail
