#!/usr/bin/env bash
# compress --report renders in a browser: headless Chromium (Debian's chromium, installed here
# through tools/deps.sh when missing) loads the report of the shared model's 3 bpw plan from a
# file:// URL, and the DOM it builds has the expected plots: the per-layer allocation (one bar
# per matrix), per matrix an error-versus-bytes curve with exactly one chosen point, and a
# spectrum; a screenshot of the page is written. Skipped (77) when chromium cannot be installed,
# except under CI=true, where that fails.
# Usage: bash tests/compress_report.sh path/to/structmat
set -u
bin=$1
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
model=models/shakespeare-llama-3m
if ! command -v chromium >/dev/null; then
    tools/deps.sh chromium >/dev/null 2>&1
    if ! command -v chromium >/dev/null; then
        echo "chromium is not installed and could not be (tools/deps.sh chromium)"
        [ "${CI:-}" = true ] && exit 1
        exit 77
    fi
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
"$bin" compress $model --methods rtn,lowrank --target 3bpw -o "$tmp/m" --report "$tmp/r.html" \
    >/dev/null 2>"$tmp/err" || { echo "FAIL: compress --report"; cat "$tmp/err"; exit 1; }
grep -q "http" "$tmp/r.html" && { echo "FAIL: the report refers to the network"; fail=1; }
browse() {
    timeout 120 chromium --headless --no-sandbox --disable-gpu --user-data-dir="$tmp/profile" \
        "$@" "file://$tmp/r.html" 2>>"$tmp/chromium.log"
}
browse --dump-dom >"$tmp/dom.html" || { echo "FAIL: chromium --dump-dom"; tail -5 "$tmp/chromium.log"; exit 1; }
count() { grep -o "$1" "$tmp/dom.html" | wc -l; }
[ "$(count '<svg id="allocation"')" = 1 ] || { echo "FAIL: no allocation plot"; fail=1; }
[ "$(count 'class="bar"')" = 29 ] || { echo "FAIL: $(count 'class="bar"') bars, expected 29"; fail=1; }
[ "$(count '<svg class="curve"')" = 29 ] || { echo "FAIL: $(count '<svg class="curve"') curves"; fail=1; }
[ "$(count 'class="chosen"')" = 29 ] || { echo "FAIL: $(count 'class="chosen"') chosen marks"; fail=1; }
[ "$(count '<svg class="spectrum"')" = 29 ] || { echo "FAIL: $(count '<svg class="spectrum"') spectra"; fail=1; }
[ "$(count 'class="cand"')" -gt 1000 ] || { echo "FAIL: $(count 'class="cand"') candidate points"; fail=1; }
browse --screenshot="$tmp/page.png" --window-size=1400,2400 >/dev/null ||
    { echo "FAIL: chromium --screenshot"; fail=1; }
[ "$(stat -c %s "$tmp/page.png" 2>/dev/null || echo 0)" -gt 20000 ] || { echo "FAIL: screenshot"; fail=1; }
exit $fail
