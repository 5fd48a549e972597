#!/usr/bin/env bash
# structmat calibrate and fit --calib end to end: token and chunk counts, the file's tensors and
# metadata, a whole short text, BOS per chunk (stories260K with a tokenizer.bin written here),
# --force and atomic refusal, fit --calib's act_rel_error on every matrix, and clear errors for
# statistics of another model, a layer without statistics and a file that is not statistics.
# (That activation-aware fits beat plain SVD on these statistics is checked in test_calibrate.)
# Usage: bash tests/calibrate.sh path/to/structmat
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
model=models/shakespeare-llama-3m
text=data/tinyshakespeare.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
get() { # get KEY FILE: a number (or word) from a one-line JSON object
    grep -o "\"$1\":[^,}]*" "$2" | head -1 | cut -d: -f2 | tr -d '"'
}
want() { # want DESCRIPTION GOT EXPECTED
    [ "$2" = "$3" ] || { echo "FAIL: $1: got \"$2\", expected \"$3\""; fail=1; }
}
header() { # header FILE: the safetensors JSON header
    python3 - "$1" <<'EOF'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    print(json.dumps(json.loads(f.read(n)), sort_keys=True))
EOF
}

"$bin" calibrate --help | grep -q "usage: structmat calibrate" || { echo "FAIL: --help"; fail=1; }
"$bin" --help | grep -q "calibrate" || { echo "FAIL: calibrate not listed"; fail=1; }

# 1000 tokens in chunks of 128: 7 full chunks and one of 104, no BOS (byte-level).
out=$tmp/s.safetensors
"$bin" calibrate $model -f $text --tokens 1000 -c 128 -o "$out" --json >"$tmp/c.json" 2>"$tmp/err" ||
    { echo "FAIL: calibrate"; cat "$tmp/err"; fail=1; }
want "tokens" "$(get tokens "$tmp/c.json")" 1000
want "chunks" "$(get chunks "$tmp/c.json")" 8
want "ctx" "$(get ctx "$tmp/c.json")" 128
want "bos" "$(get bos "$tmp/c.json")" -1
want "inputs" "$(get inputs "$tmp/c.json")" 17
grep -q '"text_bytes":\[0,1000\]' "$tmp/c.json" || { echo "FAIL: text_bytes"; cat "$tmp/c.json"; fail=1; }
# Size: 4 layers x (3 of dim 256 + 1 of 768) + the head's 256, each n^2 + n doubles + n floats.
size=0
for n in 256 256 256 768 256 256 256 768 256 256 256 768 256 256 256 768 256; do
    size=$((size + n * n * 8 + n * 12))
done
fsize=$(stat -c %s "$out")
[ "$fsize" -gt "$size" ] && [ "$fsize" -lt $((size + 20000)) ] ||
    { echo "FAIL: file size $fsize for $size bytes of data"; fail=1; }

if command -v python3 >/dev/null; then
    header "$out" >"$tmp/h.json"
    python3 - "$tmp/h.json" <<'EOF' || fail=1
import json, sys
h = json.load(open(sys.argv[1]))
m = h.pop("__metadata__")
bad = []
def want(what, got, exp):
    if got != exp: bad.append(f"{what}: {got!r}, expected {exp!r}")
want("format_version", m.get("structmat.calib.format_version"), "1")
want("tokens", m.get("structmat.calib.tokens"), "1000")
want("text", m.get("structmat.calib.text"), "data/tinyshakespeare.txt")
want("text_bytes", m.get("structmat.calib.text_bytes"), "0:1000")
want("ctx", m.get("structmat.calib.ctx"), "128")
want("bos", m.get("structmat.calib.bos"), "-1")
inputs = {}
for l in range(4):
    p = f"model.layers.{l}."
    for lin, inp in [("self_attn.q_proj", "self_attn.q_proj"), ("self_attn.k_proj", "self_attn.q_proj"),
                     ("self_attn.v_proj", "self_attn.q_proj"), ("self_attn.o_proj", "self_attn.o_proj"),
                     ("mlp.gate_proj", "mlp.gate_proj"), ("mlp.up_proj", "mlp.gate_proj"),
                     ("mlp.down_proj", "mlp.down_proj")]:
        want(lin, m.get(f"structmat.calib.input.{p}{lin}.weight"), p + inp)
        inputs[p + inp] = 768 if inp == "mlp.down_proj" else 256
want("lm_head", m.get("structmat.calib.input.lm_head.weight"), "lm_head")
inputs["lm_head"] = 256
want("mapping entries", len([k for k in m if k.startswith("structmat.calib.input.")]), 29)
want("tensors", len(h), 3 * len(inputs))
for name, n in inputs.items():
    want(name + ".gram", (h.get(name + ".gram") or {}).get("shape"), [n, n])
    want(name + ".gram dtype", (h.get(name + ".gram") or {}).get("dtype"), "F64")
    want(name + ".sqsum", (h.get(name + ".sqsum") or {}).get("shape"), [n])
    want(name + ".sqsum dtype", (h.get(name + ".sqsum") or {}).get("dtype"), "F64")
    want(name + ".absmax", (h.get(name + ".absmax") or {}).get("shape"), [n])
    want(name + ".absmax dtype", (h.get(name + ".absmax") or {}).get("dtype"), "F32")
for b in bad: print("FAIL: header", b)
sys.exit(1 if bad else 0)
EOF
fi

# The file exists: refused without --force (and left alone), replaced with it.
sum=$(md5sum <"$out")
refuse "existing output" "exists (use --force" "$bin" calibrate $model -f $text --tokens 64 -o "$out"
want "untouched output" "$(md5sum <"$out")" "$sum"
"$bin" calibrate $model -f $text --tokens 64 -o "$out" --force --json >"$tmp/c2.json" 2>/dev/null ||
    { echo "FAIL: --force"; fail=1; }
want "--force tokens" "$(get tokens "$tmp/c2.json")" 64
ls "$tmp" | grep -q tmp- && { echo "FAIL: temporary file left"; fail=1; }

# A text shorter than the default token count: the whole of it, default context 256.
head -c 300 $text >"$tmp/short.txt"
"$bin" calibrate $model -f "$tmp/short.txt" -o "$tmp/short.st" --json >"$tmp/c3.json" 2>/dev/null ||
    { echo "FAIL: short text"; fail=1; }
want "short tokens" "$(get tokens "$tmp/c3.json")" 300
want "short chunks" "$(get chunks "$tmp/c3.json")" 2
want "short ctx" "$(get ctx "$tmp/c3.json")" 256
"$bin" calibrate $model -f "$tmp/short.txt" --tokens 5000 -o "$tmp/short2.st" 2>"$tmp/err" >/dev/null
grep -q "gives 300: using 300" "$tmp/err" || { echo "FAIL: --tokens over the text"; cat "$tmp/err"; fail=1; }
# The default output name, in the working directory.
(cd "$tmp" && "$bin" calibrate "$OLDPWD/$model" -f short.txt >/dev/null 2>&1)
[ -f "$tmp/stats.safetensors" ] || { echo "FAIL: default output stats.safetensors"; fail=1; }

# Errors.
refuse "no -f" "need MODEL and -f FILE" "$bin" calibrate $model
refuse "--tokens 0" "--tokens needs a positive integer" "$bin" calibrate $model -f $text --tokens 0
refuse "-c over the context" "exceeds the model's context of 256" "$bin" calibrate $model -f $text -c 512 -o "$tmp/x.st"
refuse "missing text" "no-such" "$bin" calibrate $model -f "$tmp/no-such.txt" -o "$tmp/x.st"
: >"$tmp/empty.txt"
refuse "empty text" "the text is empty" "$bin" calibrate $model -f "$tmp/empty.txt" -o "$tmp/x.st"
refuse "no tokenizer" "give token ids" "$bin" calibrate models/stories260K.bin -f $text -o "$tmp/x.st"
refuse "output directory missing" "does not exist" "$bin" calibrate $model -f $text -o "$tmp/nodir/x.st"
refuse "unknown option" "unknown option --frobnicate" "$bin" calibrate $model -f $text --frobnicate

# fit --calib: act_rel_error on every matrix and in the summary, in (0, 1) for half the rank;
# none without --calib.
"$bin" fit $model --all --spec lowrank:ratio=0.5 --calib "$tmp/s.safetensors" --json \
    >"$tmp/f.jsonl" 2>"$tmp/err" || { echo "FAIL: fit --calib"; cat "$tmp/err"; fail=1; }
want "fit --calib rows" "$(grep -c '"act_rel_error":' "$tmp/f.jsonl")" 29
grep -q '"mean_act_rel_error":' "$tmp/f.jsonl" || { echo "FAIL: mean_act_rel_error"; fail=1; }
grep -o '"act_rel_error":[^,}]*' "$tmp/f.jsonl" | cut -d: -f2 |
    awk '!($1 > 0 && $1 < 1) { print "FAIL: act_rel_error " $1; bad = 1 } END { exit bad }' || fail=1
"$bin" fit $model --tensor lm_head.weight --spec lowrank:ratio=0.5 --json >"$tmp/f0.jsonl" || fail=1
grep -q act_rel_error "$tmp/f0.jsonl" && { echo "FAIL: act_rel_error without --calib"; fail=1; }
"$bin" fit $model --tensor model.layers.1.mlp.down_proj.weight --spec lowrank:ratio=0.5 \
    --calib "$tmp/s.safetensors" | grep -q act_err || { echo "FAIL: table act_err column"; fail=1; }
refuse "embedding has no statistics" "no calibration statistics for \"model.embed_tokens.weight\"" \
    "$bin" fit $model --tensor model.embed_tokens.weight --spec lowrank:ratio=0.5 --calib "$tmp/s.safetensors"
refuse "model as --calib" "not a calibration statistics file" \
    "$bin" fit $model --all --spec lowrank:ratio=0.5 --calib $model/model.safetensors
refuse "missing --calib file" "no-such" \
    "$bin" fit $model --all --spec lowrank:ratio=0.5 --calib "$tmp/no-such.st"

# BOS per chunk and statistics of another model: stories260K (vocab 512, dim 64) with a
# tokenizer.bin written here (BOS 1, EOS 2, byte tokens <0xNN>, printable characters, pairs).
if command -v python3 >/dev/null; then
    ln -s "$PWD/models/stories260K.bin" "$tmp/stories260K.bin"
    python3 - "$tmp/tokenizer.bin" <<'EOF'
import struct, sys
toks = ["<unk>", "\n<s>\n", "\n</s>\n"] + ["<0x%02X>" % b for b in range(256)]
toks += [chr(c) for c in range(32, 127)]
letters = "etaoinsrhl"
toks += [a + b for a in letters for b in letters + " "]
toks += ["<pad%d>" % i for i in range(512 - len(toks))]
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<i", max(len(t.encode()) for t in toks)))
    for i, t in enumerate(toks):
        b = t.encode()
        f.write(struct.pack("<fi", -float(i), len(b)) + b)
EOF
    "$bin" calibrate "$tmp/stories260K.bin" -f "$tmp/short.txt" -c 64 --tokens 200 \
        -o "$tmp/st.st" --json >"$tmp/c4.json" 2>"$tmp/err" || { echo "FAIL: stories calibrate"; cat "$tmp/err"; fail=1; }
    # 200 positions in chunks of 64 = BOS + 63 text tokens: 3 full chunks and BOS + 7.
    want "BOS id" "$(get bos "$tmp/c4.json")" 1
    want "BOS tokens" "$(get tokens "$tmp/c4.json")" 200
    want "BOS chunks" "$(get chunks "$tmp/c4.json")" 4
    "$bin" calibrate "$tmp/stories260K.bin" -f "$tmp/short.txt" -c 64 --tokens 200 --no-bos \
        -o "$tmp/st2.st" --json >"$tmp/c5.json" 2>/dev/null || { echo "FAIL: --no-bos"; fail=1; }
    want "--no-bos" "$(get bos "$tmp/c5.json")" -1
    want "--no-bos chunks" "$(get chunks "$tmp/c5.json")" 4
    refuse "-c 1 with BOS" "no room for text after BOS" \
        "$bin" calibrate "$tmp/stories260K.bin" -f "$tmp/short.txt" -c 1 -o "$tmp/x.st"
    refuse "statistics of another model" "statistics of another model?" \
        "$bin" fit $model --all --spec lowrank:ratio=0.5 --calib "$tmp/st.st"
    # Refused before any fit: no row printed.
    "$bin" fit $model --all --spec lowrank:ratio=0.5 --calib "$tmp/st.st" --json 2>/dev/null |
        grep -q tensor && { echo "FAIL: rows printed before the shape error"; fail=1; }
    "$bin" fit "$tmp/stories260K.bin" --all --spec lowrank:ratio=0.5 --calib "$tmp/st.st" --json \
        >"$tmp/f2.jsonl" 2>"$tmp/err" || { echo "FAIL: stories fit --calib"; cat "$tmp/err"; fail=1; }
    # 5 layers of 7; the classifier is the tied embedding, which fit --all leaves out.
    want "stories fit --calib rows" "$(grep -c '"act_rel_error":' "$tmp/f2.jsonl")" 35
fi

[ $fail = 0 ] && exit 0
exit 1
