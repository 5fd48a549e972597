# Helpers the script tests (tests/*.sh) source: `. "${BASH_SOURCE%/*}/testlib.bash"` (not *.sh,
# which CMake registers as tests).

# need_python PY "MODULES" MESSAGE: the cross-check needs these modules in interpreter PY. Missing:
# MESSAGE on stderr, then a failure under CI=true (a cross-check must not vanish silently), else
# a skip (77), or the failure status when checks before it already failed ($fail).
need_python() {
    local py=$1 modules=$2 message=$3
    "$py" -c "import $modules" 2>/dev/null && return 0
    echo "$message" >&2
    [ "${CI:-}" = "true" ] && exit 1
    [ "${fail:-0}" = 0 ] && exit 77
    exit "$fail"
}

# refuse DESCRIPTION NEEDLE COMMAND...: COMMAND must fail with NEEDLE on stderr; otherwise says
# so and sets fail=1. Uses "$tmp/err".
refuse() {
    local what=$1 needle=$2; shift 2
    if "$@" >/dev/null 2>"$tmp/err"; then echo "FAIL: $what succeeded"; fail=1; return; fi
    grep -qF -- "$needle" "$tmp/err" || { echo "FAIL: $what: no \"$needle\" in:"; cat "$tmp/err"; fail=1; }
}
