#!/usr/bin/env bash
# The commands on GGUF files (written by the gguf package through tools/gguf_convert.py):
#   inspect: every 2-D tensor under its GGUF name, shape [out, in], ggml type and Frobenius norm
#            as the package's own GGUFReader + dequantizer give them (numpy, independent);
#   fit:     --all on a Q4_0 file: every matrix but token_embd (29), -o written;
#            --save-model turns the GGUF into a Hugging Face directory that computes the same
#            log-probabilities (fit with dense keeps the matrices);
#   generate: greedy ids from the GGUF = from the package-dequantized safetensors copy;
#   errors:  a truncated file and a non-GGUF tensor name are refused, naming the file/tensor.
# Usage: bash tests/gguf_cli.sh path/to/structmat
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
py=python3
need_python "$py" "gguf, numpy" "the gguf and numpy Python packages are missing (make test-deps-py)"
model=models/shakespeare-llama-3m
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
$py tools/gguf_convert.py "$model" "$tmp/m.gguf" --type Q4_0 --ref-dir "$tmp/ref" || exit 1

# inspect against the package's reader
"$bin" inspect "$tmp/m.gguf" --json >"$tmp/inspect.jsonl" 2>"$tmp/err" || { cat "$tmp/err"; exit 1; }
$py - "$tmp/m.gguf" "$tmp/inspect.jsonl" <<'EOF' || fail=1
import json, sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
r = GGUFReader(sys.argv[1])
want = {}
for t in r.tensors:
    if len(t.shape) != 2:
        continue
    w = dequantize(t.data, t.tensor_type).astype(np.float64)
    out, inn = int(t.shape[1]), int(t.shape[0])  # GGUF dims are innermost first
    w = w.reshape(out, inn)
    want[t.name] = ([out, inn], t.tensor_type.name, np.sqrt((w * w).sum()))
got = [g for g in map(json.loads, open(sys.argv[2])) if "tensor" in g]
bad = 0
if sorted(g["tensor"] for g in got) != sorted(want):
    print("FAIL: inspect lists", sorted(g["tensor"] for g in got), "the package", sorted(want))
    bad = 1
for g in got:
    shape, ty, fro = want.get(g["tensor"], (None, None, None))
    if g["shape"] != shape or g["dtype"] != ty or abs(g["fro_norm"] - fro) > 1e-5 * fro:
        print(f"FAIL: {g['tensor']}: {g['shape']} {g['dtype']} {g['fro_norm']} vs {shape} {ty} {fro}")
        bad = 1
sys.exit(bad)
EOF

# fit --all and --save-model
"$bin" fit "$tmp/m.gguf" --all --spec lowrank:ratio=0.25 -o "$tmp/fit.safetensors" --json \
    >"$tmp/fit.jsonl" 2>"$tmp/err" || { echo "FAIL: fit --all"; cat "$tmp/err"; fail=1; }
n=$(grep -c '"tensor"' "$tmp/fit.jsonl")
[ "$n" = 29 ] || { echo "FAIL: fit --all fitted $n matrices (28 linear + output expected)"; fail=1; }
"$bin" fit "$tmp/m.gguf" --all --spec dense --save-model "$tmp/saved" >/dev/null 2>"$tmp/err" ||
    { echo "FAIL: fit --save-model"; cat "$tmp/err"; fail=1; }
for m in "$tmp/m.gguf" "$tmp/saved" "$tmp/ref"; do
    "$bin" generate "$m" --prompt "ROMEO:" -n 40 --temp 0 --print-ids >"$tmp/ids.$(basename "$m")" \
        2>"$tmp/err" || { echo "FAIL: generate $m"; cat "$tmp/err"; fail=1; }
done
cmp -s "$tmp/ids.m.gguf" "$tmp/ids.ref" ||
    { echo "FAIL: greedy ids of the GGUF differ from its dequantized copy's"; fail=1; }
cmp -s "$tmp/ids.saved" "$tmp/ids.ref" ||
    { echo "FAIL: greedy ids of the --save-model copy differ"; fail=1; }

# errors
head -c 5000 "$tmp/m.gguf" >"$tmp/cut.gguf"
refuse "inspect of a truncated GGUF" "$tmp/cut.gguf: 39 tensor infos cannot fit" "$bin" inspect \
    "$tmp/cut.gguf"
refuse "eval of a truncated GGUF" "$tmp/cut.gguf" "$bin" eval "$tmp/cut.gguf" -f "$tmp/err"
refuse "fit of an absent tensor" "no matrix named" "$bin" fit "$tmp/m.gguf" --tensor nope \
    --spec lowrank:rank=2
exit $fail
