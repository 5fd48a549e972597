#!/usr/bin/env bash
# structmat bench --quick --json: every line a JSON object; machine, bandwidth, apply, fit and
# model (decode, prefill of a tiny synthetic model) lines with their documented keys; dense
# always measured; every apply check PASS (no FAIL, no null numbers); options are validated.
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

# model section: one decode and one prefill line, status ok, every documented key, no nulls
grep '"bench": "model"' "$out" >"$tmp/model"
[ "$(grep -c '"status": "ok"' "$tmp/model")" = 2 ] || {
    bad "model lines not 2 and ok"
    cat "$tmp/model"
}
grep -q null "$tmp/model" && bad "null (non-finite) numbers in model lines"
common="name phase status dim hidden_dim n_layers n_heads vocab params threads isa reps time_ms \
    median_ms tokens_per_s load1"
grep '"phase": "decode"' "$tmp/model" >"$tmp/dec"
for key in $common tokens weight_bytes kv_bytes gbs bw_gbs bw_sweep_gbs bw_near_gbs bw_pct; do
    grep -q "\"$key\": " "$tmp/dec" || bad "key $key not in the model decode line"
done
grep '"phase": "prefill"' "$tmp/model" >"$tmp/pre"
for key in $common T flops gflops sgemm_ms sgemm_gflops vs_sgemm; do
    grep -q "\"$key\": " "$tmp/pre" || bad "key $key not in the model prefill line"
done
# weight bytes and flops are exact counts for the quick shape 64,128,2,4,256:
# layers 2 * (4 * 64*64 + 3 * 64*128) + head 256*64 = 98304 floats, norms 2*2*64 + 64 = 320,
# one embedding row 64: (98304 + 320 + 64) * 4 bytes
grep -q '"weight_bytes": 394752,' "$tmp/dec" || bad "decode weight_bytes is not 394752"
# T = 16 tokens through the layers: 2 * 16 * 2 * (4 * 64*64 + 3 * 64*128) flops
grep -q '"flops": 2.62144e+06,' "$tmp/pre" || bad "prefill flops is not 2.62144e+06"
# --model runs only the model section; other shapes and bad shapes
"$bin" bench --quick --json --model --model-shape 32,64,1,2,100 --prefill-tokens 8 \
    --decode-tokens 2 2>/dev/null >"$tmp/m.jsonl" || bad "bench --model failed"
[ "$(grep -c '"bench": "model".*"status": "ok"' "$tmp/m.jsonl")" = 2 ] ||
    bad "--model did not give 2 model lines"
grep -q '"bench": "apply"\|"bench": "fit"' "$tmp/m.jsonl" && bad "--model kept other sections"
grep -q '"name": "model decode d32 f64 l1 h2 v100".*"tokens": 2,' "$tmp/m.jsonl" ||
    bad "--model-shape / --decode-tokens not applied"
grep -q '"name": "model prefill d32 f64 l1 h2 v100".*"T": 8,' "$tmp/m.jsonl" ||
    bad "--prefill-tokens not applied"
"$bin" bench --quick --model --model-shape 30,64,1,4,100 >/dev/null 2>&1 &&
    bad "heads not dividing dim accepted"
"$bin" bench --model-shape 1,2,3 >/dev/null 2>&1 && bad "--model-shape 1,2,3 accepted"

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
