#!/usr/bin/env python3
"""Random ggml blocks and what the gguf package (llama.cpp's, PyPI) makes of them, in one GGUF
file written by the package's writer, for tests/test_gguf_blocks.c:

    python3 tools/gguf_blocks.py OUT.gguf [SEED]

For every block type the package decodes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K,
Q6_K, TQ1_0, TQ2_0, MXFP4, IQ4_NL, and BF16 as raw bytes):
  blocks.T  64 blocks of random bytes (scale fields: random finite halves, MXFP4 exponents at
            most 250, so no NaN or Inf appears), stored with type T;
  deq.T     the package's dequantization of them, F32 (1, 64 * block).
For every type the package quantizes (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1):
  x.T       F32 rows (8, 256): Gaussian, plus awkward rows (all zero, constant, one outlier, ties
            at the rounding points, tiny values below F16's normal range);
  q.T       the package's quantization of x.T, stored with type T.
"""
import sys

import numpy as np

try:
    import gguf
    from gguf.quants import dequantize, quantize
except ImportError:
    sys.exit("gguf_blocks.py: the gguf package is missing (python3 -m pip install gguf)")

Q = gguf.GGMLQuantizationType
# type -> byte offsets of its F16 scale fields within a block
SCALES = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
          Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
          Q.TQ1_0: [52], Q.TQ2_0: [64], Q.IQ4_NL: [0], Q.MXFP4: [], Q.BF16: []}


def random_blocks(rng, t, n):
    block, size = gguf.GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for off in SCALES[t]:
        h = (rng.standard_normal(n) * 0.05).astype(np.float16)
        h[0] = np.float16(6.0e-8)  # a subnormal half
        raw[:, off:off + 2] = h.view(np.uint8).reshape(n, 2)
    if t == Q.MXFP4:
        raw[:, 0] = rng.integers(0, 251, size=n)
    if t == Q.BF16:  # finite bfloat16 values: exponent bits not all ones
        v = raw.view(np.uint16)
        v &= np.uint16(0xBFFF)
    return raw.reshape(1, n * size)


def awkward_rows(rng):
    x = rng.standard_normal((8, 256)).astype(np.float32)
    x[1] = 0
    x[2] = 0.37
    x[3] = rng.standard_normal(256) * 1e-3
    x[3, 17] = 50.0
    x[4] = (rng.integers(-16, 17, size=256) / 2.0 + 0.25).astype(np.float32)
    x[5] = rng.standard_normal(256) * 1e-6
    x[6, :32] = -x[6, :32].max()  # a block whose signed maximum is negative
    x[7] = np.abs(x[7])
    return x


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
    w = gguf.GGUFWriter(out, "blocks")
    for t in SCALES:
        b = random_blocks(rng, t, 64)
        d = dequantize(b, t).astype(np.float32)
        w.add_tensor(f"blocks.{t.name}", b, raw_dtype=t)
        w.add_tensor(f"deq.{t.name}", d)
    for t in (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1):
        x = awkward_rows(rng)
        w.add_tensor(f"x.{t.name}", x)
        w.add_tensor(f"q.{t.name}", quantize(x, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
