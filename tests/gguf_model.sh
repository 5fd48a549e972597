#!/usr/bin/env bash
# GGUF files written by an independent writer -- the gguf package (llama.cpp's own, PyPI), through
# tools/gguf_convert.py -- for the Shakespeare model, in F32, F16, BF16 and every block type the
# package can quantize (Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, MXFP4, TQ2_0, TQ1_0), arch llama (q/k rows
# permuted as llama.cpp does) and one qwen2 file (not permuted), GGUF v3 and one v2 file.
#
# Each file is run by `structmat eval` on Shakespeare text, and its log-probabilities (every
# position of 4 chunks of 128 bytes) are compared with
#   1. the same model as the package's own dequantizer decodes it (a safetensors copy in Hugging
#      Face layout): must agree to float rounding (|d logp| <= 2e-4), whatever the type -- this
#      checks the reader, the decoders, the name map and the undone permutation exactly;
#   2. the F32 safetensors original: the error the type's quantization causes. Its RMS is
#      bounded by C r_T, where r_T is the type's resolution (the largest rounding error of one
#      weight as a fraction of its block's largest magnitude amax: half the grid step, 2^-24 F32,
#      2^-11 F16, 2^-8 BF16, 1/254 Q8_0 (step amax/127), 1/32 Q5_0 (amax/16), 1/16 Q4_0
#      (amax/8), 1/31 Q5_1 and 1/15 Q4_1 (step range/31, range/15, with range ~ 2 amax), 1/4
#      MXFP4 (largest E2M1 gap 4d with amax >= 8d)), and C = 10 is one constant for every type,
#      set from the measured ratios (printed with -v: 2.0 to 6.0). Lossy types must differ
#      (> 0). The ternary types (r_T = 1/2: every weight becomes -amax, 0 or amax) leave the
#      linear regime -- the model is destroyed (KLD ~ 2) -- so for them only check 1 applies.
# The tokens of every run must equal the original's (the GGUF's own byte-level vocabulary).
# Usage: bash tests/gguf_model.sh path/to/structmat [-v]
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
verbose=${2:-}
py=python3
need_python "$py" "gguf, numpy" "the gguf and numpy Python packages are missing (make test-deps-py)"
model=models/shakespeare-llama-3m
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
# 512 bytes of Shakespeare from the validation part of the file.
tail -c 20000 data/tinyshakespeare.txt | head -c 512 >"$tmp/text.txt"
logp() { # logp MODEL OUT: every position's log-probabilities into the base file OUT
    "$bin" eval "$1" -f "$tmp/text.txt" -c 128 --score all --kl-divergence-base "$2" \
        >/dev/null 2>"$tmp/err" || { echo "FAIL: eval $1"; cat "$tmp/err"; fail=1; }
}
logp "$model" "$tmp/orig.kld"
cases="F32 F16 BF16 Q8_0 Q5_1 Q5_0 Q4_1 Q4_0 MXFP4 TQ2_0 TQ1_0 Q4_0:qwen2 F16:v2 Q8_0:align64"
for c in $cases; do
    t=${c%%:*} extra=()
    case $c in
    *:qwen2) extra=(--arch qwen2) ;;
    *:v2) extra=(--version 2) ;;
    *:align64) extra=(--alignment 64) ;;
    esac
    name=${c/:/-}
    $py tools/gguf_convert.py "$model" "$tmp/$name.gguf" --type "$t" --ref-dir "$tmp/ref-$name" \
        "${extra[@]}" || { echo "FAIL: convert $c"; fail=1; continue; }
    logp "$tmp/$name.gguf" "$tmp/$name.kld"
    logp "$tmp/ref-$name" "$tmp/ref-$name.kld"
done
[ $fail = 0 ] || exit 1
$py - "$tmp" "$verbose" $cases <<'EOF' || fail=1
import struct, sys
import numpy as np
tmp, verbose, cases = sys.argv[1], sys.argv[2] == "-v", sys.argv[3:]

def read(path):
    d = open(path, "rb").read()
    assert d[:8] == b"SMKLDIV\0", path
    vocab, n_ctx, n_chunks, first = struct.unpack_from("<4q", d, 16)
    tok = np.frombuffer(d, "<i4", n_chunks * n_ctx, 64).reshape(n_chunks, n_ctx)
    lp = np.frombuffer(d, "<f4", offset=64 + 4 * n_chunks * n_ctx).reshape(-1, vocab).astype(np.float64)
    return tok, lp

res = {"F32": 2**-24, "F16": 2**-11, "BF16": 2**-8, "Q8_0": 1 / 254, "Q5_1": 1 / 31,
       "Q5_0": 1 / 32, "Q4_1": 1 / 15, "Q4_0": 1 / 16, "MXFP4": 1 / 4, "TQ2_0": 1 / 2,
       "TQ1_0": 1 / 2}
C = 10.0
tok0, lp0 = read(f"{tmp}/orig.kld")
bad = 0
for c in cases:
    t, name = c.split(":")[0], c.replace(":", "-")
    tok, lp = read(f"{tmp}/{name}.kld")
    tref, lref = read(f"{tmp}/ref-{name}.kld")
    exact = np.abs(lp - lref).max()
    rms = np.sqrt(np.mean((lp - lp0) ** 2))
    p0 = np.exp(lp0)
    kld = np.mean(np.sum(p0 * (lp0 - lp), axis=1))
    ratio = rms / res[t]
    linear = not t.startswith("TQ")
    ok = (tok == tok0).all() and (tref == tok0).all() and exact <= 2e-4 and (ratio <= C or not linear)
    ok = ok and (t == "F32" or rms > 0)
    if verbose or not ok:
        print(f"{name:12s} max|logp - dequantized ref| {exact:.2e}  rms|logp - original| {rms:.3e}"
              f"  = {ratio:.2f} r_T  KLD {kld:.2e}  {'ok' if ok else 'FAIL'}")
    bad += not ok
sys.exit(1 if bad else 0)
EOF
exit $fail
