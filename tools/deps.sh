#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are missing: as root with
# apt-get (one `apt-get update`, then one install); otherwise prints the exact command and fails.
set -u
missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2 && exit 0
    echo "deps: apt-get failed" >&2
    exit 1
fi
echo "deps: missing Debian packages; run:" >&2
echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
exit 1
