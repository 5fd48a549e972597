#!/usr/bin/env bash
# structmat bench --quick --json: every line a JSON object; machine, bandwidth, apply and fit
# lines with their documented keys; dense always measured; every apply check PASS (no FAIL,
# no null numbers); options are validated.
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() {
    echo "FAIL: $*"
    fail=1
}

out=$tmp/bench.jsonl
if ! "$bin" bench --quick --json >"$out" 2>"$tmp/err"; then
    bad "bench --quick --json exited with an error"
    cat "$tmp/err"
fi
[ -s "$out" ] || bad "no output"
grep -qv '^{.*}$' "$out" && bad "a line that is not a JSON object"
grep -q 'FAIL' "$out" && bad "a FAIL in the output" && grep 'FAIL' "$out"

grep -q '"bench": "machine".*"isa": ' "$out" || bad "no machine line"
grep -q '"bench": "bandwidth".*"gbs": [0-9]' "$out" || bad "no bandwidth line with gbs"

grep '"bench": "apply"' "$out" | grep '"status": "ok"' >"$tmp/ok"
n_ok=$(wc -l <"$tmp/ok")
[ "$n_ok" -ge 8 ] || bad "only $n_ok apply lines measured"
for key in spec canonical shape m n N time_ms median_ms gflops gbs bw_pct vs_dense check rel_err \
    nbytes nparams macs fit_s copies ws_mib reps threads isa; do
    n=$(grep -c "\"$key\": " "$tmp/ok")
    [ "$n" = "$n_ok" ] || bad "key $key in $n of $n_ok apply lines"
done
[ "$(grep -c '"check": "PASS"' "$tmp/ok")" = "$n_ok" ] || bad "apply lines without PASS"
grep -q 'null' "$tmp/ok" && bad "null (non-finite) numbers in apply lines" && grep null "$tmp/ok"
# dense (the baseline) at both quick shapes and both N, with ratio 1
[ "$(grep -c '"spec": "dense", ' "$tmp/ok")" = 4 ] || bad "dense not measured 4 times"
grep '"spec": "dense", ' "$tmp/ok" | grep -qv '"vs_dense": 1,' && bad "dense vs_dense != 1"
# unavailable specs say why
grep '"status": "unavailable"' "$out" | grep -qv '"error": ' && bad "unavailable without error"

grep '"bench": "fit"' "$out" >"$tmp/fit"
grep -q '"spec": "lowrank:rank=32", .*"status": "ok", "time_s": .*"rel_err": ' "$tmp/fit" ||
    bad "no exact fit line"
grep -q '"spec": "lowrank:rank=32,solver=random"' "$tmp/fit" || bad "no randomized fit line"

# --filter keeps only matching results; --help; bad options
"$bin" bench --quick --json --filter 'q4 256x256 N=1' 2>/dev/null >"$tmp/f.jsonl" ||
    bad "bench --filter failed"
[ "$(grep -c '"bench": "apply"' "$tmp/f.jsonl")" = 1 ] || bad "--filter did not select one line"
grep -q '"bench": "fit"' "$tmp/f.jsonl" && bad "--filter kept fit lines"
"$bin" bench --help | grep -q -- '--quick' || bad "bench --help"
"$bin" bench --reps 0 >/dev/null 2>&1 && bad "--reps 0 accepted"
"$bin" bench --shapes 12 >/dev/null 2>&1 && bad "--shapes 12 accepted"
"$bin" bench --frobnicate >/dev/null 2>&1 && bad "unknown option accepted"
exit $fail
