#!/usr/bin/env bash
# Crash-safe output (DESIGN.md, "Command-line conventions"), for a file and for directories:
#   structmat fit --all -o OUT                 (one safetensors file)
#   structmat compress --methods rtn -o OUT    (a checkpoint directory)
#   structmat fit --all --save-model OUT       (a checkpoint directory)
# Each is killed with SIGKILL at 20 seeded points -- half at a random time in the run, half just
# after the temporary sibling OUT.tmp-XXXXXX appears (while the output is written, fsynced,
# renamed) -- and OUT must then be absent or identical to a complete run's output; when OUT
# existed and --force replaces it, OUT is the old output or the new one, never a mix or a cut.
# A killed run leaves its OUT.tmp-* behind: nothing can remove it after SIGKILL. A point whose
# kill came after the run had ended is retried with half the delay, up to 4 times.
# Usage: bash tests/crash_safe.sh path/to/structmat [-v]   (KEEP=1 keeps the scratch directory)
set -u
bin=${1:?usage: crash_safe.sh path/to/structmat [-v]}
verbose=${2:-}
model=models/shakespeare-llama-3m
dir=$(mktemp -d "${TMPDIR:-/tmp}/sm-crash-XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
fail() {
    echo "crash_safe: $*" >&2
    exit 1
}
now_ms() {
    echo $(($(date +%s%N) / 1000000))
}
sleep_ms() {
    sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"
}
same() { # files or directories with the same contents
    if [ -d "$1" ]; then diff -r -q "$1" "$2" >/dev/null 2>&1; else cmp -s "$1" "$2"; fi
}
# The two writers, one thread and a fixed seed so that complete runs are identical; each array
# is a command that takes OUT (and --force) after it.
run_fit=("$bin" fit "$model" --all --spec lowrank:ratio=0.5 --threads 1 --seed 5 -o)
old_fit=("$bin" fit "$model" --all --spec dense:dtype=bf16 --threads 1 -o)
run_compress=("$bin" compress "$model" --methods rtn --target 4bpw --threads 1 --seed 5 -o)
old_compress=("$bin" compress "$model" --methods rtn --target 3bpw --threads 1 -o)
run_save=("$bin" fit "$model" --all --spec lowrank:ratio=0.5 --threads 1 --seed 5 --save-model)
old_save=("$bin" fit "$model" --all --spec dense:dtype=bf16 --threads 1 --save-model)

# kill_points NAME EXT WRITE_MS: 20 kills of run_NAME; WRITE_MS bounds the delay after the
# temporary output appears (a file is written in milliseconds, a directory is streamed).
kill_points() {
    local name=$1 ext=$2 write_ms=$3
    local new=$dir/$name-new$ext old=$dir/$name-old$ext
    local -n run=run_$name old_cmd=old_$name
    # References: a complete run (timed; a second must be identical, else "identical to a
    # complete run" would mean nothing) and an older output for OUT to replace.
    local t0
    t0=$(now_ms)
    "${run[@]}" "$new" >/dev/null 2>&1 || fail "$name: the reference run failed"
    local run_ms=$(($(now_ms) - t0))
    "$bin" inspect "$new" >/dev/null 2>&1 || fail "$name: the reference output does not load"
    t0=$(now_ms)
    "${run[@]}" "$dir/$name-new2$ext" >/dev/null 2>&1 || fail "$name: the second run failed"
    # The shorter of the two: under a varying load a slow reference put half the random kills
    # after the end of the later, faster runs ("only 9 of 20 kills hit a running process").
    local run2_ms=$(($(now_ms) - t0))
    [ $run2_ms -lt $run_ms ] && run_ms=$run2_ms
    same "$new" "$dir/$name-new2$ext" || fail "$name: two complete runs wrote different outputs"
    "${old_cmd[@]}" "$old" >/dev/null 2>&1 || fail "$name: writing the old output failed"
    same "$old" "$new" && fail "$name: old and new outputs are the same"
    local killed=0 caught=0 cut=0 k
    local -A seen=()
    for k in $(seq 1 20); do
        local out=$dir/$name-out$k$ext existing=$((k % 2)) in_write=$((((k - 1) / 2) % 2))
        # A point whose kill came after the process had ended is tried again with half the
        # delay (up to 4 tries; the outcome of every try is checked): the run times move with
        # the machine's load, and a kill that hits nothing tests nothing.
        local try status=0
        for try in 1 2 3 4; do
            rm -rf "$out" "$out".tmp-*
            local args=("$out")
            if [ $existing = 1 ]; then
                cp -r "$old" "$out"
                args+=(--force)
            fi
            # A simple command, so that $! is structmat itself (killing a subshell or function
            # around it would leave the writer running).
            "${run[@]}" "${args[@]}" >/dev/null 2>&1 &
            local pid=$!
            if [ $in_write = 1 ]; then
                # Busy-wait with builtins (an external sleep per poll could miss a short write).
                while kill -0 $pid 2>/dev/null && ! compgen -G "$out.tmp-*" >/dev/null; do :; done
                if compgen -G "$out.tmp-*" >/dev/null; then
                    [ $try = 1 ] && caught=$((caught + 1))
                    local d=$((RANDOM % write_ms >> (try - 1)))
                    [ $d -gt 0 ] && sleep_ms $d
                fi
            else
                sleep_ms $((RANDOM % (run_ms * 9 / 10 + 1) >> (try - 1)))
            fi
            kill -KILL $pid 2>/dev/null
            wait $pid 2>/dev/null
            status=$?
            local state
            if [ ! -e "$out" ]; then
                [ $existing = 1 ] && fail "$name point $k: the existing OUT is gone"
                state=absent
            elif same "$out" "$new"; then
                state=new
            elif [ $existing = 1 ] && same "$out" "$old"; then
                state=old
            else
                fail "$name point $k: OUT is neither $([ $existing = 1 ] && echo "the old output" ||
                    echo absent) nor the complete new output (kept in $out)"
            fi
            local left
            left=$(compgen -G "$out.tmp-*" | wc -l)
            [ -n "$verbose" ] && echo "$name point $k try $try: existing=$existing" \
                "in_write=$in_write -> $state (temporary outputs left: $left)"
            if [ $status = 137 ]; then # it was still running
                killed=$((killed + 1))
                [ "$left" -gt 0 ] && cut=$((cut + 1))
                seen[$state]=$((${seen[$state]:-0} + 1))
                break
            fi
        done
    done
    [ -n "$verbose" ] && echo "$name: run ${run_ms} ms; $killed of 20 killed while running," \
        "$caught after the temporary output appeared, $cut left one behind; outcomes:" \
        "${!seen[*]} = ${seen[*]}"
    # Enough of the points must have hit a running process, some of them while it wrote.
    [ $killed -ge 16 ] || fail "$name: only $killed of 20 points hit a running process in 4 tries"
    [ $caught -ge 2 ] || fail "$name: only $caught kills came while the output was written"
    return 0
}

RANDOM=24301 # the points are seeded
kill_points fit .safetensors 6
kill_points compress "" 300
kill_points save "" 15
exit 0
