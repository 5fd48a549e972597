#!/usr/bin/python3
"""Independent reference for llama2.c checkpoints: the forward pass of karpathy/llama2.c's run.c
written out in numpy, in float64, one token at a time with a KV cache.

    /usr/bin/python3 tools/llama2c_ref.py MODEL.bin STEPS [FIRST_ID]

Greedy generation (argmax, ties to the lowest id) from FIRST_ID (default 1, BOS) for STEPS new
tokens; prints the new ids separated by spaces on stdout, and on stderr the smallest gap between
the best and second-best logit over the steps (how close greedy came to a tie). Reads version-0
(legacy) and version-1 ("ak42") F32 checkpoints. Needs only numpy (Debian python3-numpy)."""
import struct
import sys

import numpy as np


def load(path):
    data = open(path, "rb").read()
    (magic,) = struct.unpack_from("<I", data, 0)
    if magic == 0x616B3432:
        (version,) = struct.unpack_from("<i", data, 4)
        if version != 1:
            sys.exit(f"{path}: version {version} not handled")
        dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack_from("<7i", data, 8)
        shared = data[36] != 0
        offset = 256
    else:
        version = 0
        dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack_from("<7i", data, 0)
        shared = vocab > 0
        vocab = abs(vocab)
        offset = 28
    flat = np.frombuffer(data, dtype="<f4", offset=offset).astype(np.float64)
    hs = dim // n_heads
    kv_dim = n_kv * hs
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        t = flat[pos:pos + n].reshape(shape)
        pos += n
        return t

    w = {}
    if version == 0:
        w["emb"] = take(vocab, dim)
        w["rms_att"] = take(n_layers, dim)
        w["wq"] = take(n_layers, dim, dim)
        w["wk"] = take(n_layers, kv_dim, dim)
        w["wv"] = take(n_layers, kv_dim, dim)
        w["wo"] = take(n_layers, dim, dim)
        w["rms_ffn"] = take(n_layers, dim)
        w["w1"] = take(n_layers, hidden, dim)
        w["w2"] = take(n_layers, dim, hidden)
        w["w3"] = take(n_layers, hidden, dim)
        w["rms_final"] = take(dim)
        take(seq_len * hs // 2)  # freq_cis_real
        take(seq_len * hs // 2)  # freq_cis_imag
    else:
        w["rms_att"] = take(n_layers, dim)
        w["rms_ffn"] = take(n_layers, dim)
        w["rms_final"] = take(dim)
        w["emb"] = take(vocab, dim)
        w["wq"] = take(n_layers, dim, dim)
        w["wk"] = take(n_layers, kv_dim, dim)
        w["wv"] = take(n_layers, kv_dim, dim)
        w["wo"] = take(n_layers, dim, dim)
        w["w1"] = take(n_layers, hidden, dim)
        w["w2"] = take(n_layers, dim, hidden)
        w["w3"] = take(n_layers, hidden, dim)
    w["wcls"] = w["emb"] if shared else take(vocab, dim)
    if pos != flat.size:
        sys.exit(f"{path}: {flat.size - pos} floats left over")
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv,
               vocab=vocab, seq_len=seq_len, hs=hs, kv_dim=kv_dim)
    return cfg, w


def rmsnorm(x, weight):
    return weight * (x / np.sqrt(np.mean(x * x) + 1e-5))


def rope(vec, pos, hs):
    """Interleaved pairs (2i, 2i+1) of each head, as run.c rotates them."""
    out = vec.copy()
    for i in range(0, vec.size, 2):
        freq = 1.0 / 10000.0 ** ((i % hs) / hs)
        c, s = np.cos(pos * freq), np.sin(pos * freq)
        out[i] = vec[i] * c - vec[i + 1] * s
        out[i + 1] = vec[i] * s + vec[i + 1] * c
    return out


def forward(cfg, w, cache, token, pos):
    hs, n_heads, group = cfg["hs"], cfg["n_heads"], cfg["n_heads"] // cfg["n_kv"]
    x = w["emb"][token].copy()
    for l in range(cfg["n_layers"]):
        xb = rmsnorm(x, w["rms_att"][l])
        q = rope(w["wq"][l] @ xb, pos, hs)
        cache["k"][l, pos] = rope(w["wk"][l] @ xb, pos, hs)
        cache["v"][l, pos] = w["wv"][l] @ xb
        att = np.zeros(cfg["dim"])
        for h in range(n_heads):
            kh = (h // group) * hs
            qh = q[h * hs:(h + 1) * hs]
            keys = cache["k"][l, :pos + 1, kh:kh + hs]  # (pos + 1, hs)
            scores = keys @ qh / np.sqrt(hs)
            p = np.exp(scores - scores.max())
            p /= p.sum()
            att[h * hs:(h + 1) * hs] = p @ cache["v"][l, :pos + 1, kh:kh + hs]
        x = x + w["wo"][l] @ att
        xb = rmsnorm(x, w["rms_ffn"][l])
        g = w["w1"][l] @ xb
        x = x + w["w2"][l] @ (g / (1.0 + np.exp(-g)) * (w["w3"][l] @ xb))
    return w["wcls"] @ rmsnorm(x, w["rms_final"])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cfg, w = load(sys.argv[1])
    steps = int(sys.argv[2])
    token = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    if steps + 1 > cfg["seq_len"]:
        sys.exit(f"{steps} steps do not fit the context of {cfg['seq_len']}")
    cache = {"k": np.zeros((cfg["n_layers"], cfg["seq_len"], cfg["kv_dim"])),
             "v": np.zeros((cfg["n_layers"], cfg["seq_len"], cfg["kv_dim"]))}
    out, gap = [], np.inf
    for pos in range(steps):
        logits = forward(cfg, w, cache, token, pos)
        token = int(np.argmax(logits))  # the first maximum: ties to the lowest id
        top2 = np.sort(logits)[-2:]
        gap = min(gap, top2[1] - top2[0])
        out.append(token)
    print(" ".join(map(str, out)))
    print(f"smallest top-1/top-2 logit gap: {gap:.3g}", file=sys.stderr)


if __name__ == "__main__":
    main()
