#!/usr/bin/env bash
# A tokenizer.json next to a model is what eval and generate tokenize with: the embedded
# byte-level model gets a byte-level BPE tokenizer.json built by Hugging Face's tokenizers (256
# tokens, GPT-2's byte alphabet in byte order, no merges, so its ids are the bytes). Through the
# CLI: eval's NLL and token count equal the original's to the last digit, generate prints the
# same text (decoding through the byte alphabet), the tokens eval stores equal tokenizers' own
# encoding of the text, and a tokenizer.json with more tokens than the model embeds is refused.
# (test_tokenizer_bpe checks the tokenizers themselves against tokenizers on trained vocabularies.)
# Usage: bash tests/tokenizer_bpe.sh path/to/structmat
set -u
. "${BASH_SOURCE%/*}/testlib.bash"
bin=$1
py=python3
need_python "$py" "tokenizers, numpy" "the tokenizers and numpy Python packages are missing (make test-deps-py)"
model=models/shakespeare-llama-3m
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
mkdir "$tmp/m" "$tmp/big"
for d in m big; do
    cp "$model/config.json" "$tmp/$d/"
    ln -s "$PWD/$model/model.safetensors" "$tmp/$d/model.safetensors"
done
tail -c 20000 data/tinyshakespeare.txt | head -c 1100 >"$tmp/text.txt"
printf 'caf\xc3\xa9 \xe2\x80\x94 na\xc3\xafve\n' >>"$tmp/text.txt" # multi-byte characters too
$py - "$tmp" <<'EOF' || exit 1
import sys
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
tmp = sys.argv[1]
keep = list(range(33, 127)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
b2u, extra = {}, 0
for b in range(256):
    b2u[b] = chr(b) if b in keep else chr(256 + extra)
    extra += b not in keep
for name, n in (("m", 256), ("big", 300)):
    vocab = {b2u[b]: b for b in range(256)}
    for i in range(256, n):
        vocab[f"<extra_{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(f"{tmp}/{name}/tokenizer.json")
text = open(f"{tmp}/text.txt", encoding="utf-8").read()
ids = Tokenizer.from_file(f"{tmp}/m/tokenizer.json").encode(text).ids
open(f"{tmp}/ref_ids.txt", "w").write(" ".join(map(str, ids)))
EOF
"$bin" eval "$model" -f "$tmp/text.txt" -c 128 --json >"$tmp/a.json" 2>/dev/null || fail=1
"$bin" eval "$tmp/m" -f "$tmp/text.txt" -c 128 --json --kl-divergence-base "$tmp/b.kld" \
    >"$tmp/b.json" 2>"$tmp/err" || { echo "FAIL: eval with tokenizer.json"; cat "$tmp/err"; fail=1; }
for k in nll tokens_scored bytes; do
    a=$(grep -o "\"$k\":[^,}]*" "$tmp/a.json") b=$(grep -o "\"$k\":[^,}]*" "$tmp/b.json")
    [ -n "$a" ] && [ "$a" = "$b" ] || { echo "FAIL: eval $k: $a (bytes) vs $b (tokenizer.json)"; fail=1; }
done
$py - "$tmp/b.kld" "$tmp/ref_ids.txt" <<'EOF' || fail=1
import struct, sys
import numpy as np
d = open(sys.argv[1], "rb").read()
vocab, n_ctx, n_chunks, first = struct.unpack_from("<4q", d, 16)
tok = np.frombuffer(d, "<i4", n_chunks * n_ctx, 64)
ref = np.array(list(map(int, open(sys.argv[2]).read().split())))
if not (tok == ref[:len(tok)]).all():
    sys.exit("FAIL: the tokens eval used are not tokenizers' ids")
EOF
for m in "$model" "$tmp/m"; do
    "$bin" generate "$m" --prompt "ROMEO: caf$(printf '\xc3\xa9')" -n 60 --temp 0 \
        >"$tmp/gen.$(basename "$m")" 2>/dev/null || { echo "FAIL: generate $m"; fail=1; }
done
cmp -s "$tmp/gen.m" "$tmp/gen.$(basename "$model")" ||
    { echo "FAIL: generate through tokenizer.json printed other text"; fail=1; }
if "$bin" eval "$tmp/big" -f "$tmp/text.txt" -c 128 >/dev/null 2>"$tmp/err"; then
    echo "FAIL: a 300-token tokenizer.json for a 256-token model was accepted"
    fail=1
elif ! grep -q "the tokenizer has 300 tokens, the model embeds 256" "$tmp/err"; then
    echo "FAIL: refusal message:"
    cat "$tmp/err"
    fail=1
fi
exit $fail
