#!/usr/bin/env bash
# --max-memory SIZE (eval, compress): a limit below what the run needs fails with exit status 1,
# a message naming the limit and nothing written; a sufficient one gives the same result as no
# limit; malformed sizes are refused (exit status 2) before any work.
set -u
bin=$1
model=models/shakespeare-llama-3m
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() {
    echo "FAIL: $*"
    fail=1
}
head -c 20000 data/tinyshakespeare.txt >"$tmp/val.txt"
ev=(eval "$model" -f "$tmp/val.txt" -c 128 --chunks 4)

# eval: 1 MB cannot hold the model's weights (3.2M F32 weights).
"$bin" "${ev[@]}" --max-memory 1MB >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] || bad "eval --max-memory 1MB: exit status $rc, 1 expected"
grep -q 'would exceed --max-memory 1 MB (.* in use)' "$tmp/err" ||
    bad "eval --max-memory 1MB: no clear message: $(cat "$tmp/err")"
grep -q 'PPL' "$tmp/out" && bad "eval --max-memory 1MB printed a result"

# eval: enough memory gives exactly the unbounded result.
"$bin" "${ev[@]}" >"$tmp/free" 2>/dev/null || bad "eval without a limit failed"
"$bin" "${ev[@]}" --max-memory 200MB >"$tmp/bounded" 2>"$tmp/err" ||
    bad "eval --max-memory 200MB failed: $(cat "$tmp/err")"
grep -q '^PPL = ' "$tmp/free" || bad "eval printed no PPL"
cmp -s "$tmp/free" "$tmp/bounded" || bad "eval --max-memory 200MB changed the result"

# compress: refused midway, OUT never appears; with enough memory it is written and loads.
"$bin" compress "$model" --uniform rtn:bits=4,group=64 -o "$tmp/q" --max-memory 1MB \
    >/dev/null 2>"$tmp/err"
rc=$?
[ $rc = 1 ] || bad "compress --max-memory 1MB: exit status $rc, 1 expected"
grep -q 'would exceed --max-memory 1 MB' "$tmp/err" ||
    bad "compress --max-memory 1MB: no clear message: $(cat "$tmp/err")"
[ -e "$tmp/q" ] && bad "compress --max-memory 1MB left $tmp/q"
"$bin" compress "$model" --uniform rtn:bits=4,group=64 -o "$tmp/q" --max-memory 1.5GiB \
    >/dev/null 2>"$tmp/err" || bad "compress --max-memory 1.5GiB failed: $(cat "$tmp/err")"
"$bin" eval "$tmp/q" -f "$tmp/val.txt" -c 128 --chunks 4 --max-memory 200MB >"$tmp/q.out" \
    2>/dev/null || bad "the compressed model does not evaluate under 200MB"
grep -q '^PPL = ' "$tmp/q.out" || bad "no PPL for the compressed model"

# malformed sizes: usage errors, before loading anything
for size in 0 -5MB 12XB MB ""; do
    "$bin" "${ev[@]}" --max-memory "$size" >/dev/null 2>"$tmp/err"
    rc=$?
    [ $rc = 2 ] || bad "eval --max-memory '$size': exit status $rc, 2 expected"
    grep -q -- '--max-memory' "$tmp/err" || bad "eval --max-memory '$size': $(cat "$tmp/err")"
    "$bin" compress "$model" --uniform rtn -o "$tmp/x" --max-memory "$size" >/dev/null 2>&1
    rc=$?
    [ $rc = 2 ] || bad "compress --max-memory '$size': exit status $rc, 2 expected"
done
"$bin" eval --help | grep -q -- '--max-memory SIZE' || bad "eval --help lacks --max-memory"
"$bin" compress --help | grep -q -- '--max-memory SIZE' || bad "compress --help lacks --max-memory"
exit $fail
