"""Independent reference for `structmat inspect`: the same figures computed by numpy (float64 SVD).

usage: /usr/bin/python3 tools/inspect_ref.py MODEL.safetensors INSPECT.jsonl [rel_tol]
Reads the safetensors file itself (header JSON + raw little-endian data), recomputes every figure
and compares it with the JSON lines `structmat inspect --json` printed. Exit 1 on any mismatch.
"""
import json
import struct
import sys

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    types = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or len(info["shape"]) != 2:
            continue
        b, e = info["data_offsets"]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw[base + b : base + e], dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32)
        else:
            a = np.frombuffer(raw[base + b : base + e], dtype=types[info["dtype"]])
        out[name] = a.astype(np.float64).reshape(info["shape"])
    return out


def ww_alpha(sigma):
    # WeightWatcher's "ww" power-law fit on the eigenvalues of W^T W above 1e-5.
    x = np.sort(sigma**2)
    x = x[x > 1e-5]
    lx = np.log(x)
    best = (np.inf, np.nan, np.nan)
    for i in range(len(x) - 1):
        n = len(x) - i
        alpha = 1 + n / (lx[i:].sum() - n * lx[i])
        d = 1.0
        if alpha > 1:
            d = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - alpha) - np.arange(n) / n))
        if d < best[0]:
            best = (d, alpha, x[i])
    return best[1], best[2], best[0]


def figures(w):
    s = np.linalg.svd(w, compute_uv=False)
    e = np.cumsum(s**2)
    p = s / s.sum()
    p = p[p > 0]
    d = w - w.mean()
    alpha, xmin, ks = ww_alpha(s)
    return {
        "fro_norm": np.sqrt((w**2).sum()),
        "spectral_norm": s[0],
        "stable_rank": (w**2).sum() / s[0] ** 2,
        "effective_rank": np.exp(-(p * np.log(p)).sum()),
        "k90": int(np.searchsorted(e, 0.90 * e[-1]) + 1),
        "k99": int(np.searchsorted(e, 0.99 * e[-1]) + 1),
        "max_over_rms": np.abs(w).max() / np.sqrt((w**2).mean()),
        "kurtosis": (d**4).mean() / (d**2).mean() ** 2 - 3,
        "alpha": alpha,
        "alpha_xmin": xmin,
    }


def main():
    model, jsonl = sys.argv[1], sys.argv[2]
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
    tensors = load_safetensors(model)
    rows = [json.loads(l) for l in open(jsonl) if l.strip()]
    rows = [r for r in rows if "tensor" in r]
    seen = {r["tensor"] for r in rows}
    bad = 0
    if seen != set(tensors):
        print("tensor sets differ:", sorted(set(tensors) ^ seen))
        bad += 1
    for r in rows:
        ref = figures(tensors[r["tensor"]])
        if list(r["shape"]) != list(tensors[r["tensor"]].shape):
            print(r["tensor"], "shape", r["shape"])
            bad += 1
        for k, v in ref.items():
            got = r[k]
            ok = got == v if isinstance(v, int) else abs(got - v) <= tol * max(abs(v), 1e-12)
            if not ok:
                print(f"{r['tensor']} {k}: structmat {got!r} numpy {v!r}")
                bad += 1
    print(f"inspect cross-check: {len(rows)} tensors, {bad} mismatches (rel tol {tol})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
