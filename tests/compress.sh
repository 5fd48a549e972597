#!/usr/bin/env bash
# structmat compress and export end to end on the shared model (rtn, the fast method, except
# where noted): the stored size read from the output's safetensors header (python) within
# [0.99, 1] of the target and equal to the reported total; --probe's top-5 equal to what
# generate prints for the reloaded output; export --dense evaluates like the compressed model;
# pins, keeps, --uniform, curves reuse and their refusal, the report's plots; errors: no target,
# bad units, an unreachable target (naming the smallest reachable), an existing or impossible
# OUT, a write that fails (a file-size limit standing in for a full disk), SIGINT during the
# measurement (no output, no temporary directory, an existing OUT untouched).
# Usage: bash tests/compress.sh path/to/structmat
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
model=models/shakespeare-llama-3m
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
get() { # get KEY FILE: the first number (or word) of KEY in the file's JSON lines
    grep -o "\"$1\":[^,}]*" "$2" | head -1 | cut -d: -f2 | tr -d '"'
}
no_leftovers() { # no_leftovers DIR: neither DIR nor DIR.tmp-* exists
    [ -e "$1" ] && { echo "FAIL: $1 exists"; fail=1; }
    ls -d "$1".tmp-* >/dev/null 2>&1 && { echo "FAIL: $1.tmp-* left behind"; fail=1; }
}
# Bytes of the tensors belonging to matrices (every 2-D tensor but the embedding, or its parts).
stored() {
    python3 - "$1" <<'EOF'
import json, struct, sys
with open(sys.argv[1] + "/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    h = json.loads(f.read(n))
meta = h.pop("__metadata__", {})
ops = {k[len("structmat.spec."):] for k in meta if k.startswith("structmat.spec.")}
total = 0
for name, t in h.items():
    b = t["data_offsets"][1] - t["data_offsets"][0]
    if any(name.startswith(o + ".") for o in ops) or (len(t["shape"]) == 2 and "embed" not in name):
        total += b
print(total)
EOF
}

"$bin" compress --help | grep -q "usage: structmat compress" || { echo "FAIL: --help"; fail=1; }
"$bin" export --help | grep -q "usage: structmat export" || { echo "FAIL: export --help"; fail=1; }
"$bin" --help | grep -q "compress" || { echo "FAIL: compress not listed"; fail=1; }

refuse "no target" "--target SIZE" "$bin" compress $model -o "$tmp/x"
refuse "bad unit" "unknown unit" "$bin" compress $model -o "$tmp/x" --target 3bits --methods rtn
refuse "bad method" "unknown method" "$bin" compress $model -o "$tmp/x" --target 3bpw --methods qr
refuse "bad objective" "--objective" "$bin" compress $model -o "$tmp/x" --target 3bpw --objective x
refuse "gptq without stats" "needs calibration" "$bin" compress $model -o "$tmp/x" --target 3bpw --methods gptq
no_leftovers "$tmp/x"

# 3 bpw with rtn: sizes, per-matrix lines, probe.
out=$tmp/m3
"$bin" compress $model --methods rtn --target 3bpw -o "$out" --json --probe "ROMEO:" \
    >"$tmp/c.json" 2>"$tmp/err" || { echo "FAIL: compress"; cat "$tmp/err"; fail=1; }
[ "$(grep -c '"tensor"' "$tmp/c.json")" = 29 ] || { echo "FAIL: 29 matrix lines"; fail=1; }
target=$(get target_bytes "$tmp/c.json")
bytes=$(grep summary "$tmp/c.json" | grep -o '"bytes":[0-9]*' | head -1 | cut -d: -f2)
[ "$target" = $((3211264 * 3 / 8)) ] || { echo "FAIL: target_bytes $target"; fail=1; }
got=$(stored "$out")
[ "$got" = "$bytes" ] || { echo "FAIL: stored $got bytes, reported $bytes"; fail=1; }
[ "$got" -le "$target" ] && [ $((got * 100)) -ge $((target * 99)) ] ||
    { echo "FAIL: $got bytes for a target of $target"; fail=1; }
grep -q '"structmat"' "$out/config.json" || { echo "FAIL: config.json without structmat"; fail=1; }
probe=$(grep -o '"probe":\[[^]]*\]' "$tmp/c.json" | cut -d: -f2-)
"$bin" generate "$out" --prompt "ROMEO:" -n 0 --n-probs 5 --json >"$tmp/g.json" 2>/dev/null
gen=$(grep -o '"n_probs":\[[^]]*\]' "$tmp/g.json" | cut -d: -f2-)
[ -n "$probe" ] && [ "$probe" = "$gen" ] || { echo "FAIL: probe $probe, generate $gen"; fail=1; }

# export --dense: plain tensors, no structmat metadata, the same model.
"$bin" export "$out" --dense -o "$tmp/dense" 2>"$tmp/err" || { echo "FAIL: export"; cat "$tmp/err"; fail=1; }
grep -q '"structmat"' "$tmp/dense/config.json" && { echo "FAIL: exported config has structmat"; fail=1; }
grep -q "structmat.spec" "$tmp/dense/model.safetensors" && { echo "FAIL: exported operators"; fail=1; }
a=$("$bin" eval "$out" -f data/tinyshakespeare.txt -c 128 --chunks 4 --json 2>/dev/null | grep -o '"nll":[0-9.]*' | cut -d: -f2)
b=$("$bin" eval "$tmp/dense" -f data/tinyshakespeare.txt -c 128 --chunks 4 --json 2>/dev/null | grep -o '"nll":[0-9.]*' | cut -d: -f2)
python3 -c "import sys; a, b = float('$a'), float('$b'); sys.exit(0 if abs(a - b) < 1e-4 else 1)" ||
    { echo "FAIL: export NLL $b vs $a"; fail=1; }
refuse "export existing" "exists" "$bin" export "$out" --dense -o "$tmp/dense"

# Refusals of OUT before any work, and an unreachable target.
sum0=$(cat "$out"/* | md5sum)
refuse "existing OUT" "exists (use --force" "$bin" compress $model --methods rtn --target 3bpw -o "$out"
touch "$tmp/file"
refuse "OUT a file" "not a directory" "$bin" compress $model --methods rtn --target 3bpw -o "$tmp/file"
refuse "OUT in a missing dir" "does not exist" "$bin" compress $model --methods rtn --target 3bpw -o "$tmp/no/out"
if [ "$(id -u)" != 0 ]; then
    mkdir "$tmp/ro" && chmod 555 "$tmp/ro"
    refuse "unwritable OUT" "cannot write" "$bin" compress $model --methods rtn --target 3bpw -o "$tmp/ro/out"
fi
refuse "OUT where nothing can be created" "cannot" "$bin" compress $model --methods rtn --target 3bpw -o /proc/structmat-out
refuse "unreachable" "smallest reachable size with these methods is" "$bin" compress $model --methods rtn --target 1bpw -o "$tmp/u"
grep -q "(2.1[0-9]* bpw" "$tmp/err" || { echo "FAIL: smallest reachable not ~2.1 bpw:"; cat "$tmp/err"; fail=1; }
no_leftovers "$tmp/u"
[ "$(cat "$out"/* | md5sum)" = "$sum0" ] || { echo "FAIL: OUT changed by refusals"; fail=1; }

# A write that fails midway (file-size limit: write returns EFBIG like ENOSPC): a clear error,
# no output, no temporary directory.
(ulimit -f 100; trap '' XFSZ; exec "$bin" compress $model --methods rtn --target 3bpw -o "$tmp/full") \
    >/dev/null 2>"$tmp/err" && { echo "FAIL: a write past the file-size limit succeeded"; fail=1; }
grep -q "write failed: File too large" "$tmp/err" || { echo "FAIL: no write error:"; cat "$tmp/err"; fail=1; }
no_leftovers "$tmp/full"

# SIGINT while measuring (every method: seconds of work): exit 130, nothing written; with an
# existing OUT and --force the old one stays whole.
for existing in no yes; do
    dst=$tmp/int; extra=()
    if [ $existing = yes ]; then dst=$out; extra=(--force); fi
    "$bin" compress $model --target 3bpw -o "$dst" "${extra[@]}" >/dev/null 2>"$tmp/err" &
    pid=$!
    sleep 2
    kill -INT $pid
    wait $pid
    rc=$?
    [ $rc = 130 ] || { echo "FAIL: SIGINT ($existing): exit $rc"; cat "$tmp/err"; fail=1; }
    grep -q "interrupted" "$tmp/err" || { echo "FAIL: SIGINT ($existing): no message"; fail=1; }
    if [ $existing = no ]; then no_leftovers "$dst"; fi
    ls -d "$dst".tmp-* >/dev/null 2>&1 && { echo "FAIL: SIGINT ($existing): temporary left"; fail=1; }
done
[ "$(cat "$out"/* | md5sum)" = "$sum0" ] || { echo "FAIL: OUT changed by an interrupted run"; fail=1; }

# Pins, keeps, uniform; curves reused for another target, refused for other methods.
"$bin" compress $model --methods rtn --target 3bpw -o "$tmp/p" --json --save-curves "$tmp/cv.json" \
    --tensor-spec 'lm_head=rtn:bits=8,group=64' --keep 'layers\.3\.self_attn\.k_proj' >"$tmp/p.json" 2>"$tmp/err" ||
    { echo "FAIL: pins"; cat "$tmp/err"; fail=1; }
grep '"lm_head.weight"' "$tmp/p.json" | grep -q '"spec":"rtn:bits=8,group=64"' || { echo "FAIL: pin"; fail=1; }
grep 'layers.3.self_attn.k_proj' "$tmp/p.json" | grep -q '"spec":"dense"' || { echo "FAIL: keep"; fail=1; }
"$bin" compress $model --methods rtn --target 3.5bpw -o "$tmp/p2" --json --curves "$tmp/cv.json" \
    --tensor-spec 'lm_head=rtn:bits=8,group=64' --keep 'layers\.3\.self_attn\.k_proj' >"$tmp/p2.json" 2>"$tmp/err" ||
    { echo "FAIL: --curves"; cat "$tmp/err"; fail=1; }
grep -q '"bpw":3.4[6-9]' "$tmp/p2.json" || { echo "FAIL: --curves target"; grep summary "$tmp/p2.json"; fail=1; }
refuse "curves of other options" "other options" "$bin" compress $model --methods rtn,lowrank --target 3bpw -o "$tmp/p3" --curves "$tmp/cv.json"
"$bin" compress $model --uniform rtn:bits=4,group=64 -o "$tmp/un" --json --report "$tmp/r.html" >"$tmp/un.json" 2>"$tmp/err" ||
    { echo "FAIL: --uniform"; cat "$tmp/err"; fail=1; }
[ "$(grep -c '"spec":"rtn:bits=4,group=64"' "$tmp/un.json")" = 29 ] || { echo "FAIL: uniform specs"; fail=1; }
[ "$(grep -o 'class="curve"' "$tmp/r.html" | wc -l)" = 29 ] || { echo "FAIL: report curves"; fail=1; }
grep -q 'id="allocation"' "$tmp/r.html" || { echo "FAIL: report allocation"; fail=1; }

exit $fail
