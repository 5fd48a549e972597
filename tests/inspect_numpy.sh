#!/usr/bin/env bash
# Cross-check: `structmat inspect --json` on the embedded model against numpy (Debian's
# python3-numpy, through /usr/bin/python3). Under CI=true a missing numpy is a failure.
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
py=/usr/bin/python3
need_python "$py" "numpy" "numpy (python3-numpy) is not installed for $py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=models/shakespeare-llama-3m
"$bin" inspect "$model" --json >"$tmp/inspect.jsonl" || exit 1
$py tools/inspect_ref.py "$model/model.safetensors" "$tmp/inspect.jsonl" 1e-4
