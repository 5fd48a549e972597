#!/usr/bin/env bash
# fuzz/run.sh BUILD SECONDS [TARGET...]: runs each libFuzzer harness built in BUILD (cmake
# -DSM_FUZZ=ON) for SECONDS, one after another, and prints a line per harness: executions, corpus
# growth, findings. The corpus of each target grows in BUILD/corpus/<target> (seeds from
# BUILD/seeds/<target>, regression inputs from tests/regress/<target> are read too); a finding
# (crash, sanitizer report, failed invariant, leak, timeout, out of memory) is written to
# BUILD/findings/<target>-* with the log in BUILD/logs/<target>.log. Exit status 1 on any finding.
# Environment: FUZZ_NICE (niceness, default 0), FUZZ_TIMEOUT (seconds per input, default 30),
# FUZZ_RSS_MB (memory limit, default 2048).
set -u
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: fuzz/run.sh BUILD SECONDS [TARGET...]" >&2
    exit 2
fi
build=$1 secs=$2
shift 2
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz/fuzz_*.c; do
        t=${f#fuzz/fuzz_}
        targets+=("${t%.c}")
    done
fi
mkdir -p "$build/findings" "$build/logs"
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
fail=0
printf '%-14s %8s %12s %10s %8s  %s\n' target seconds executions exec/s new findings
for t in "${targets[@]}"; do
    bin=$build/fuzz_$t
    if [ ! -x "$bin" ]; then
        echo "fuzz/run.sh: $bin is not built" >&2
        fail=1
        continue
    fi
    dirs=("$build/corpus/$t")
    [ -d "$build/seeds/$t" ] && dirs+=("$build/seeds/$t")
    [ -d "tests/regress/$t" ] && dirs+=("tests/regress/$t")
    mkdir -p "$build/corpus/$t"
    log=$build/logs/$t.log
    # Findings: crash, leak, timeout, oom. libFuzzer's slow-unit-* files (an input that took over
    # 10 s, often only because other jobs share the machine) are reported apart, not as failures.
    before=$(ls "$build/findings" | grep -cE "^$t-(crash|leak|timeout|oom)-" || true)
    t0=$SECONDS
    nice -n "${FUZZ_NICE:-0}" "$bin" "${dirs[@]}" -max_total_time="$secs" \
        -timeout="${FUZZ_TIMEOUT:-30}" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" -print_final_stats=1 \
        -artifact_prefix="$build/findings/$t-" >"$log" 2>&1
    rc=$?
    execs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    rate=$(grep -a 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
    new=$(grep -a 'stat::new_units_added' "$log" | awk '{print $2}')
    after=$(ls "$build/findings" | grep -cE "^$t-(crash|leak|timeout|oom)-" || true)
    found=$((after - before))
    [ $rc -ne 0 ] && [ $found -eq 0 ] && found=1 # e.g. a crash before any input ran
    slow=$(grep -a -c '^Slowest unit:' "$log" || true)
    printf '%-14s %8d %12s %10s %8s  %s%s\n' "$t" $((SECONDS - t0)) "${execs:-?}" "${rate:-?}" \
        "${new:-?}" "$found" "$([ "$slow" -gt 0 ] && echo " ($slow slow-unit reports)")"
    if [ $rc -ne 0 ]; then
        fail=1
        echo "--- $t: exit status $rc; the end of $log:" >&2
        grep -a -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse|INITED|RELOAD)' "$log" | tail -40 >&2
        ls "$build/findings" | grep "^$t-" | sed "s|^|    $build/findings/|" >&2
    fi
done
exit $fail
