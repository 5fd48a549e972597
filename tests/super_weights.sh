#!/usr/bin/env bash
# structmat inspect --super-weights: a super weight planted here (python3, stdlib only) in a copy
# of the shared model is reported at exactly its coordinates (two prompts), with the planted
# value, and no other layer is; its maxima are at least 5x every other layer's; the shared
# model's own output is well formed (text and --json, which parses); bad options fail.
# Usage: bash tests/super_weights.sh path/to/structmat
set -u
bin=$1
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
model=models/shakespeare-llama-3m
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# Plant: layer 1, MLP channel j = 300, output row i = 77. Row j of gate_proj and of up_proj both
# become 10 times row j of up_proj, so h_j = silu(10 a) 10 a with a = up_j . x: about 100 a^2 on
# tokens where a > 0 (a super activation); W[i][j] of down_proj set to 1 (the matrix's entries
# are below 0.3) makes output row i carry it.
mkdir -p "$tmp/planted"
cp "$model/config.json" "$tmp/planted/"
python3 - "$model/model.safetensors" "$tmp/planted/model.safetensors" <<'EOF' || exit 1
import json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
raw = open(src, "rb").read()
hlen = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + hlen])
data = bytearray(raw[8 + hlen:])
L, J, I = 1, 300, 77
def at(name, r, c):
    t = hdr[name]
    assert t["dtype"] == "F32"
    return t["data_offsets"][0] + 4 * (r * t["shape"][1] + c)
pre = "model.layers.%d.mlp." % L
dim = hdr[pre + "up_proj.weight"]["shape"][1]
for c in range(dim):
    (v,) = struct.unpack_from("<f", data, at(pre + "up_proj.weight", J, c))
    struct.pack_into("<f", data, at(pre + "up_proj.weight", J, c), 10 * v)
    struct.pack_into("<f", data, at(pre + "gate_proj.weight", J, c), 10 * v)
struct.pack_into("<f", data, at(pre + "down_proj.weight", I, J), 1.0)
open(dst, "wb").write(raw[:8 + hlen] + bytes(data))
EOF

check_json() { # check_json FILE [LAYER ROW COL]: parses; 4 layers + summary; the candidates
    python3 - "$@" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
objs = [json.loads(l) for l in lines]
layers, summ = objs[:-1], objs[-1]["summary"]
assert len(layers) == 4 and summ["layers"] == 4, lines
for k, o in enumerate(layers):
    assert o["layer"] == k and o["tensor"] == "model.layers.%d.mlp.down_proj.weight" % k
    assert o["max_input"] > 0 and o["max_output"] > 0
    assert 0 <= o["input_channel"] < 768 and 0 <= o["output_row"] < 256
    assert 0 <= o["input_token"] < summ["tokens"] and 0 <= o["output_token"] < summ["tokens"]
    assert isinstance(o["candidate"], bool)
cands = [(c["layer"], c["row"], c["col"]) for c in summ["candidates"]]
assert cands == [(o["layer"], o["output_row"], o["input_channel"]) for o in layers
                 if o["candidate"]], (cands, layers)
if len(sys.argv) > 2:
    want = tuple(int(x) for x in sys.argv[2:5])
    assert cands == [want], "candidates %s, expected exactly %s" % (cands, want)
    c = summ["candidates"][0]
    o = layers[want[0]]
    # the spike: at least 5x every other layer's maxima
    for k, p in enumerate(layers):
        if k != want[0]:
            assert o["max_input"] >= 5 * p["max_input"] and o["max_output"] >= 5 * p["max_output"]
print("ok")
EOF
}

# The planted model: exactly (layer 1, row 77, col 300), also with another prompt.
"$bin" inspect "$tmp/planted" --super-weights --json >"$tmp/p.jsonl" 2>"$tmp/err" ||
    { echo "FAIL: inspect --super-weights on the planted model"; cat "$tmp/err"; fail=1; }
check_json "$tmp/p.jsonl" 1 77 300 >/dev/null || { echo "FAIL: planted (default prompt)"; fail=1; }
"$bin" inspect "$tmp/planted" --super-weights --json --prompt "ROMEO: Is the day so young?" \
    >"$tmp/p2.jsonl" 2>"$tmp/err" || { echo "FAIL: planted, --prompt"; cat "$tmp/err"; fail=1; }
check_json "$tmp/p2.jsonl" 1 77 300 >/dev/null || { echo "FAIL: planted (--prompt)"; fail=1; }

# The weight value reported is the planted W[77][300] (read from the file here).
python3 - "$tmp/planted/model.safetensors" "$tmp/p.jsonl" <<'EOF' || fail=1
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
hlen = struct.unpack("<Q", raw[:8])[0]
t = json.loads(raw[8:8 + hlen])["model.layers.1.mlp.down_proj.weight"]
(w,) = struct.unpack_from("<f", raw, 8 + hlen + t["data_offsets"][0] + 4 * (77 * t["shape"][1] + 300))
c = json.loads(open(sys.argv[2]).read().splitlines()[-1])["summary"]["candidates"][0]
if c["weight"] != w:
    print("FAIL: reported weight %r, W[77][300] = %r" % (c["weight"], w))
    sys.exit(1)
EOF

# Text output of the planted model names it.
"$bin" inspect "$tmp/planted" --super-weights >"$tmp/p.txt" 2>"$tmp/err" || fail=1
grep -q "layer 1: model.layers.1.mlp.down_proj.weight \[row 77, col 300\]" "$tmp/p.txt" ||
    { echo "FAIL: text output of the planted model:"; cat "$tmp/p.txt"; fail=1; }

# The shared model: well formed, text and JSON.
"$bin" inspect "$model" --super-weights --json >"$tmp/s.jsonl" 2>"$tmp/err" ||
    { echo "FAIL: inspect --super-weights --json on $model"; cat "$tmp/err"; fail=1; }
check_json "$tmp/s.jsonl" >/dev/null || { echo "FAIL: shared model JSON"; cat "$tmp/s.jsonl"; fail=1; }
"$bin" inspect "$model" --super-weights >"$tmp/s.txt" 2>"$tmp/err" || fail=1
[ "$(grep -c "model.layers.[0-3].mlp.down_proj.weight" "$tmp/s.txt")" -ge 4 ] &&
    grep -q "^candidate super weights" "$tmp/s.txt" ||
    { echo "FAIL: shared model text:"; cat "$tmp/s.txt"; fail=1; }

# Errors.
for args in "--super-weights --spike-ratio 0" "--super-weights --spike-ratio x" \
    "--prompt hi" "--super-weights --tensor lm_head.weight" "--super-weights --prompt"; do
    # shellcheck disable=SC2086
    if "$bin" inspect "$model" $args >/dev/null 2>"$tmp/err"; then
        echo "FAIL: inspect $args succeeded"; fail=1
    elif ! [ -s "$tmp/err" ]; then
        echo "FAIL: inspect $args: no message"; fail=1
    fi
done
if "$bin" inspect "$model" --super-weights --prompt "" >/dev/null 2>"$tmp/err"; then
    echo "FAIL: an empty prompt succeeded"; fail=1
fi
exit $fail
