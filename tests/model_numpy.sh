#!/usr/bin/env bash
# Cross-check: greedy generation of models/stories260K.bin (200 ids from BOS) by the C runtime
# against tools/llama2c_ref.py, an independent float64 numpy forward of llama2.c's run.c
# (Debian's python3-numpy through /usr/bin/python3). Under CI=true a missing numpy is a failure.
# Usage: bash tests/model_numpy.sh path/to/structmat   (test_model_stories sits next to it)
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
py=/usr/bin/python3
need_python "$py" "numpy" "numpy (python3-numpy) is not installed for $py"
helper=$(dirname "$bin")/test_model_stories
if [ ! -x "$helper" ]; then
    echo "$helper is not built" >&2
    exit 1
fi
model=models/stories260K.bin
err=$(mktemp)
trap 'rm -f "$err"' EXIT
if ! want=$($py tools/llama2c_ref.py "$model" 200 2>"$err"); then
    cat "$err" >&2
    exit 1
fi
got=$("$helper" --print-ids 200) || exit 1
if [ "$want" != "$got" ]; then
    echo "greedy ids differ from the numpy reference" >&2
    echo "numpy: $want" >&2
    echo "C:     $got" >&2
    cat "$err" >&2
    exit 1
fi
