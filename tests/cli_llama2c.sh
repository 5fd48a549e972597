#!/usr/bin/env bash
# inspect and fit on a llama2.c checkpoint (models/stories260K.bin: 5 layers, tied classifier),
# read through the model runtime: a row per matrix under its Hugging Face name, the norms of
# three matrices against numpy reading the raw file (skipped without numpy, a failure under
# CI=true), fit --all, -o, and the refusal of --save-model (interleaved RoPE).
# Usage: bash tests/cli_llama2c.sh path/to/structmat
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
stories=models/stories260K.bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# 7 matrices per layer and the tied embedding (which is also the output head): 36 rows.
"$bin" inspect $stories --json >"$tmp/i.jsonl" 2>"$tmp/err" || { cat "$tmp/err"; fail=1; }
[ "$(grep -c '"tensor"' "$tmp/i.jsonl")" = 36 ] || { echo "FAIL: inspect rows"; fail=1; }
grep -q '"tensor":"model.embed_tokens.weight","shape":\[512,64\],"dtype":"F32"' "$tmp/i.jsonl" ||
    { echo "FAIL: inspect embedding row"; fail=1; }
grep -q '"lm_head' "$tmp/i.jsonl" && { echo "FAIL: the tied head listed twice"; fail=1; }
for l in 0 1 2 3 4; do
    for m in "self_attn.q_proj 64,64" "self_attn.k_proj 32,64" "self_attn.v_proj 32,64" \
        "self_attn.o_proj 64,64" "mlp.gate_proj 172,64" "mlp.up_proj 172,64" "mlp.down_proj 64,172"; do
        set -- $m
        grep -q "\"tensor\":\"model.layers.$l.$1.weight\",\"shape\":\[$2\]" "$tmp/i.jsonl" ||
            { echo "FAIL: no row for layer $l $1 [$2]"; fail=1; }
    done
done
grep -q '"summary":{"path":"models/stories260K.bin","matrices":36,"params":259328' "$tmp/i.jsonl" ||
    { echo "FAIL: inspect summary"; fail=1; }

# fit --all: every matrix but the embedding; dense refits exactly; -o is read back by inspect.
"$bin" fit $stories --all --spec lowrank:ratio=0.5 --json >"$tmp/f.jsonl" 2>"$tmp/err" || { cat "$tmp/err"; fail=1; }
[ "$(grep -c '"tensor"' "$tmp/f.jsonl")" = 35 ] || { echo "FAIL: fit --all rows"; fail=1; }
grep -q embed_tokens "$tmp/f.jsonl" && { echo "FAIL: fit --all included the embedding"; fail=1; }
"$bin" fit $stories --tensor model.layers.3.mlp.down_proj.weight --spec dense --json 2>&1 |
    grep -q '"rel_error":0,' || { echo "FAIL: dense refit of a llama2.c matrix"; fail=1; }
"$bin" fit $stories --tensor model.layers.1.self_attn.v_proj.weight --spec lowrank:rank=4 \
    -o "$tmp/v.safetensors" >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; fail=1; }
"$bin" inspect "$tmp/v.safetensors" --json | grep -q '"tensor":"model.layers.1.self_attn.v_proj.weight","shape":\[32,64\],"spec":"lowrank:rank=4"' ||
    { echo "FAIL: inspect of the fitted llama2.c matrix"; fail=1; }
"$bin" fit $stories --tensor nope --spec dense 2>&1 | grep -q 'no matrix named "nope"' ||
    { echo "FAIL: unknown matrix"; fail=1; }
"$bin" fit $stories --all --spec dense --save-model "$tmp/m" 2>&1 | grep -q "interleaved RoPE" ||
    { echo "FAIL: --save-model of a llama2.c model"; fail=1; }
[ -e "$tmp/m" ] && { echo "FAIL: --save-model wrote something"; fail=1; }

# Frobenius norms against numpy reading the version-0 file directly: header 7 int32, then
# embedding (512, 64), rms_att (5, 64), wq (5, 64, 64), wk (5, 32, 64), wv, wo, rms_ffn, w1
# (5, 172, 64), w2 (5, 64, 172), w3.
py=/usr/bin/python3
need_python "$py" "numpy" "numpy (python3-numpy) is not installed for $py: the norm cross-check is skipped"
want=$($py - $stories <<'EOF'
import sys
import numpy as np
f = np.fromfile(sys.argv[1], dtype="<f4", offset=28).astype(np.float64)
D, H, L, V, KV = 64, 172, 5, 512, 32
o = 0
emb = f[o:o + V * D]; o += V * D
o += L * D                                  # rms_att
wq = f[o:o + L * D * D].reshape(L, D, D); o += L * D * D
wk = f[o:o + L * KV * D].reshape(L, KV, D); o += 2 * L * KV * D + L * D * D + L * D  # wk wv wo rms_ffn
o += L * H * D                              # w1
w2 = f[o:o + L * D * H].reshape(L, D, H)
print("%.6e %.6e %.6e %.6e" % (np.linalg.norm(emb), np.linalg.norm(wq[0]), np.linalg.norm(wk[2]),
                               np.linalg.norm(w2[4])))
EOF
) || { echo "FAIL: numpy"; exit 1; }
set -- $want
for pair in "model.embed_tokens.weight $1" "model.layers.0.self_attn.q_proj.weight $2" \
    "model.layers.2.self_attn.k_proj.weight $3" "model.layers.4.mlp.down_proj.weight $4"; do
    set -- $pair
    got=$(grep "\"tensor\":\"$1\"" "$tmp/i.jsonl" | grep -o '"fro_norm":[^,]*' | cut -d: -f2)
    awk -v a="$got" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-5 * b) }' ||
        { echo "FAIL: fro_norm of $1: inspect $got, numpy $2"; fail=1; }
done
exit $fail
