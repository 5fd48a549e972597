#!/usr/bin/env bash
# The command-line program end to end: help, inspect, fit (table, JSON, -o), errors, atomic output.
set -u
bin=$1
model=models/shakespeare-llama-3m
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { # check DESCRIPTION COMMAND...: the command must succeed
    local what=$1; shift
    if ! "$@" >/dev/null 2>"$tmp/err"; then echo "FAIL: $what"; cat "$tmp/err"; fail=1; fi
}
refuse() { # refuse DESCRIPTION NEEDLE COMMAND...: must fail with NEEDLE on stderr
    local what=$1 needle=$2; shift 2
    if "$@" >/dev/null 2>"$tmp/err"; then echo "FAIL: $what succeeded"; fail=1; return; fi
    grep -qF -- "$needle" "$tmp/err" || { echo "FAIL: $what: no \"$needle\" in:"; cat "$tmp/err"; fail=1; }
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
exit $fail
