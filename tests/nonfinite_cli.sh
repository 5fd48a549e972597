#!/usr/bin/env bash
# structmat fit on matrices holding NaN and Inf: refused by default, naming the tensor and the
# first non-finite value; with --allow-nonfinite fitted with those values replaced by 0 (a
# warning with the count and the first position), checked by reading the written operator back
# with an independent parser (Python's struct, not the library).
# Usage: bash tests/nonfinite_cli.sh path/to/structmat
set -u
bin=${1:?usage: nonfinite_cli.sh path/to/structmat}
command -v python3 >/dev/null || exit 77
dir=$(mktemp -d "${TMPDIR:-/tmp}/sm-nonfinite-XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail() {
    echo "nonfinite_cli: $*" >&2
    exit 1
}

# A 3x4 F32 matrix "bad.weight" with NaN at (1, 2), +Inf at (2, 0), -Inf at (2, 3), and a clean
# "good.weight".
python3 - "$dir/in.safetensors" <<'EOF' || fail "cannot write the input"
import json, math, struct, sys
bad = [float(i + 1) for i in range(12)]
bad[1 * 4 + 2], bad[2 * 4 + 0], bad[2 * 4 + 3] = math.nan, math.inf, -math.inf
good = [0.5 * i for i in range(12)]
hdr = {"bad.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
       "good.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [48, 96]}}
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + struct.pack("<24f", *(bad + good)))
EOF

# Refused by default: the tensor, the value and its position are named, nothing is written.
if "$bin" fit "$dir/in.safetensors" --all --spec dense -o "$dir/out.safetensors" \
    >"$dir/stdout" 2>"$dir/stderr"; then
    fail "a matrix with NaN was fitted without --allow-nonfinite"
fi
grep -q 'bad.weight' "$dir/stderr" && grep -q 'row 1, column 2' "$dir/stderr" ||
    fail "the refusal does not name the tensor and position: $(cat "$dir/stderr")"
[ -e "$dir/out.safetensors" ] && fail "an output was written after the refusal"

# Allowed: a warning per matrix that had any, and the stored operator holds 0 in their place.
"$bin" fit "$dir/in.safetensors" --all --spec dense --allow-nonfinite --json \
    -o "$dir/out.safetensors" >"$dir/stdout" 2>"$dir/stderr" ||
    fail "--allow-nonfinite failed: $(cat "$dir/stderr")"
grep -q 'bad.weight: 3 non-finite values replaced by 0 (the first at row 1, column 2' \
    "$dir/stderr" || fail "no warning with the count and the first position: $(cat "$dir/stderr")"
grep -q 'good.weight' "$dir/stderr" && fail "a warning for the clean matrix"
grep -q '"tensor":"bad.weight".*"rel_error":0,' "$dir/stdout" ||
    fail "rel_error of the replaced matrix is not 0: $(cat "$dir/stdout")"
python3 - "$dir/out.safetensors" <<'EOF' || fail "the written operator does not hold 0 for NaN/Inf"
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
hdr = json.loads(data[8:8 + n])
meta = hdr["__metadata__"]
assert meta["structmat.spec.bad.weight"] == "dense", meta
t = hdr["bad.weight.W"]
b, e = t["data_offsets"]
got = list(struct.unpack("<12f", data[8 + n + b:8 + n + e]))
want = [float(i + 1) for i in range(12)]
for i in (1 * 4 + 2, 2 * 4 + 0, 2 * 4 + 3):
    want[i] = 0.0
assert got == want, (got, want)
EOF
exit 0
