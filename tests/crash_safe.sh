#!/usr/bin/env bash
# Crash-safe output (DESIGN.md, "Command-line conventions"): `structmat fit --all -o OUT` killed
# with SIGKILL at 20 seeded points -- half at a random time in the run, half just after the
# temporary sibling OUT.tmp-XXXXXX appears (while the file is written, fsynced, renamed) -- leaves
# OUT absent or byte-identical to a complete run's; when OUT existed and --force replaces it, OUT
# is afterwards the old file or the new one, never a mix or a cut. (`compress` does not exist
# yet: fit -o is the writer there is. A killed run leaves its OUT.tmp-* behind: nothing can
# remove it after SIGKILL.) Usage: bash tests/crash_safe.sh path/to/structmat [-v]
set -u
bin=${1:?usage: crash_safe.sh path/to/structmat [-v]}
verbose=${2:-}
model=models/shakespeare-llama-3m
spec=lowrank:ratio=0.5
dir=$(mktemp -d "${TMPDIR:-/tmp}/sm-crash-XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
fail() {
    echo "crash_safe: $*" >&2
    exit 1
}
fit() {
    "$bin" fit "$model" --all --spec "$1" --threads 1 --seed 5 "${@:2}" >/dev/null 2>&1
}
now_ms() {
    echo $(($(date +%s%N) / 1000000))
}
sleep_ms() {
    sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"
}

# References: a complete run's output (timed; a second run must match it byte for byte, else
# "identical to a complete run" would mean nothing) and an older file for OUT to replace.
t0=$(now_ms)
fit "$spec" -o "$dir/new.safetensors" || fail "the reference run failed"
run_ms=$(($(now_ms) - t0))
"$bin" inspect "$dir/new.safetensors" >/dev/null 2>&1 || fail "the reference output does not load"
fit "$spec" -o "$dir/new2.safetensors" || fail "the second reference run failed"
cmp -s "$dir/new.safetensors" "$dir/new2.safetensors" || fail "two complete runs wrote different files"
fit dense:dtype=bf16 -o "$dir/old.safetensors" || fail "writing the old file failed"
cmp -s "$dir/old.safetensors" "$dir/new.safetensors" && fail "old and new files are the same"

RANDOM=24301 # the points are seeded
killed=0 caught_writing=0 cut=0
declare -A seen=()
for k in $(seq 1 20); do
    out=$dir/out$k.safetensors
    existing=$((k % 2))                # odd points replace an existing OUT
    in_write=$((((k - 1) / 2) % 2))    # points 3, 4, 7, 8, ...: while OUT.tmp-* exists
    args=(-o "$out")
    if [ $existing = 1 ]; then
        cp "$dir/old.safetensors" "$out"
        args+=(--force)
    fi
    # A simple command, not the function: $! must be structmat itself, not a subshell whose
    # death would leave the writer running.
    "$bin" fit "$model" --all --spec "$spec" --threads 1 --seed 5 "${args[@]}" >/dev/null 2>&1 &
    pid=$!
    if [ $in_write = 1 ]; then
        # Busy-wait with builtins only (an external sleep per poll could miss a short write).
        while kill -0 $pid 2>/dev/null && ! compgen -G "$out.tmp-*" >/dev/null; do :; done
        if compgen -G "$out.tmp-*" >/dev/null; then
            caught_writing=$((caught_writing + 1))
            d=$((RANDOM % 6)) # the write and fsync of a few MB take milliseconds
            [ $d -gt 0 ] && sleep_ms $d
        fi
    else
        sleep_ms $((RANDOM % (run_ms * 11 / 10 + 1)))
    fi
    if kill -KILL $pid 2>/dev/null; then killed=$((killed + 1)); fi
    wait $pid 2>/dev/null
    if [ ! -e "$out" ]; then
        [ $existing = 1 ] && fail "point $k: the existing OUT is gone"
        state=absent
    elif cmp -s "$out" "$dir/new.safetensors"; then
        state=new
    elif [ $existing = 1 ] && cmp -s "$out" "$dir/old.safetensors"; then
        state=old
    else
        fail "point $k: OUT ($(stat -c %s "$out") bytes) is neither $([ $existing = 1 ] &&
            echo "the old file" || echo absent) nor the complete new file"
    fi
    left=$(compgen -G "$out.tmp-*" | wc -l)
    [ "$left" -gt 0 ] && cut=$((cut + 1))
    seen[$state]=$((${seen[$state]:-0} + 1))
    [ -n "$verbose" ] && echo "point $k: existing=$existing in_write=$in_write -> $state" \
        "(temporary files left: $left)"
done
[ -n "$verbose" ] && echo "run ${run_ms} ms; $killed of 20 killed while running," \
    "$caught_writing after the temporary file appeared, $cut left it behind (cut mid-write);" \
    "outcomes: ${!seen[*]} = ${seen[*]}"
# Enough of the points must have hit a running process, some of them while it wrote.
[ $killed -ge 10 ] || fail "only $killed of 20 kills hit a running fit (too fast to test?)"
[ $caught_writing -ge 2 ] || fail "only $caught_writing kills came while the file was written"
exit 0
