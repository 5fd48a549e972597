#!/usr/bin/env bash
# fit --save-model DIR killed right after DIR/model.safetensors appears: DIR is left with the
# weights but no config.json (not loadable), i.e. neither absent nor complete.
bin=${1:?structmat}
dir=$(mktemp -d /tmp/sm-savemodel-XXXXXX)
incomplete=0
for k in $(seq 1 10); do
    out=$dir/m$k
    "$bin" fit models/shakespeare-llama-3m --all --spec lowrank:ratio=0.5 --threads 1 \
        --save-model "$out" >/dev/null 2>&1 &
    pid=$!
    while kill -0 $pid 2>/dev/null && [ ! -e "$out/model.safetensors" ]; do :; done
    kill -KILL $pid 2>/dev/null
    wait $pid 2>/dev/null
    if [ -d "$out" ] && [ ! -e "$out/config.json" ]; then
        incomplete=$((incomplete + 1))
        echo "run $k: $out has $(ls "$out" | tr '\n' ' ')but no config.json"
    fi
done
rm -rf "$dir"
echo "$incomplete of 10 kills left an incomplete directory"
[ $incomplete -eq 0 ]
