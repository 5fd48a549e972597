#!/usr/bin/env python3
"""Writes a Hugging Face Llama checkpoint (config.json + model.safetensors, F32) as a GGUF file
with the writer and quantizers of the `gguf` package (llama.cpp's own, from PyPI), the way
llama.cpp's convert_hf_to_gguf.py lays it out. Used by tests/gguf_model.sh as the independent
writer of the GGUF files structmat must read.

    python3 tools/gguf_convert.py MODEL_DIR OUT.gguf [--type T] [--arch llama|qwen2]
                                  [--ref-dir DIR] [--version 2|3] [--alignment A]

--type: the ggml type of every 2-D weight (token_embd and output included), one the package can
quantize: F32 (default), F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, TQ1_0, TQ2_0, MXFP4. Norms
stay F32, as llama-quantize keeps them.
--arch llama (default): attn_q / attn_k rows are permuted for llama.cpp's adjacent-pair RoPE, as
convert_hf_to_gguf.py does; qwen2: not permuted (llama.cpp runs qwen2 with NEOX RoPE).
--ref-dir: also writes DIR/config.json + DIR/model.safetensors holding the weights as the
package's own dequantizer decodes the quantized ones (Hugging Face layout, F32): the model the
GGUF file should compute exactly, so a reader can be checked apart from quantization error.
--version 2 writes the header's version field as 2 (the v2 and v3 layouts are the same for
little-endian files). The tokenizer written is the model's byte-level one: tokenizer.ggml.model
gpt2 with the 256 GPT-2 byte-to-unicode characters as tokens in byte order and no merges, so ids
equal bytes.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

try:
    import gguf
    from gguf.quants import dequantize, quantize
except ImportError:
    sys.exit("gguf_convert.py: the gguf package is missing (python3 -m pip install gguf)")


def read_safetensors(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            sys.exit(f"{path}: tensor {name} is {info['dtype']}, F32 expected")
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data, dtype="<f4", count=(e - b) // 4, offset=8 + n + b) \
            .reshape(info["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        b = np.ascontiguousarray(t, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (HF rotate_half -> adjacent pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_rope_permutation():
    """The permutation turns rotate_half RoPE into adjacent-pair RoPE: for a random head,
    rope_pairs(P q) == P rope_half(q). A wrong direction of the permutation fails here."""
    rng = np.random.default_rng(1)
    hd, pos = 8, 5
    q = rng.standard_normal(hd)
    theta = pos * 10000.0 ** (-np.arange(hd // 2) * 2 / hd)
    c, s = np.cos(theta), np.sin(theta)
    half = np.concatenate([q[:hd // 2] * c - q[hd // 2:] * s, q[:hd // 2] * s + q[hd // 2:] * c])
    pq = permute(q.reshape(hd, 1), 1).ravel()
    pairs = pq.copy()
    pairs[0::2] = pq[0::2] * c - pq[1::2] * s
    pairs[1::2] = pq[0::2] * s + pq[1::2] * c
    assert np.allclose(pairs, permute(half.reshape(hd, 1), 1).ravel()), "RoPE permutation"


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (byte-level BPE alphabets)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    parts = hf.split(".")
    assert parts[0] == "model" and parts[1] == "layers", hf
    mod = ".".join(parts[3:-1])
    return f"blk.{parts[2]}.{HF_TO_GGUF[mod]}.{parts[-1]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--type", default="F32")
    ap.add_argument("--arch", default="llama", choices=["llama", "qwen2"])
    ap.add_argument("--ref-dir")
    ap.add_argument("--version", type=int, default=3, choices=[2, 3])
    ap.add_argument("--alignment", type=int, default=0)
    a = ap.parse_args()
    check_rope_permutation()
    qtype = gguf.GGMLQuantizationType[a.type.upper()]
    cfg = json.load(open(os.path.join(a.model_dir, "config.json")))
    w = read_safetensors(os.path.join(a.model_dir, "model.safetensors"))
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim", cfg["hidden_size"] // n_head)

    wr = gguf.GGUFWriter(a.out, a.arch)
    if a.alignment:
        wr.add_custom_alignment(a.alignment)
    wr.add_name(os.path.basename(os.path.normpath(a.model_dir)))
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(cfg["hidden_size"])
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_rope_dimension_count(head_dim)
    wr.add_head_count(n_head)
    wr.add_head_count_kv(n_kv)
    wr.add_key_length(head_dim)
    wr.add_value_length(head_dim)
    wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    wr.add_rope_freq_base(cfg["rope_theta"])
    wr.add_vocab_size(cfg["vocab_size"])
    if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        wr.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # The byte-level vocabulary: token i is byte i in GPT-2's alphabet, no merges.
    assert cfg["vocab_size"] == 256, "only the byte-level vocabulary is written"
    b2u = bytes_to_unicode()
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("default")
    wr.add_token_list([b2u[b] for b in range(256)])
    wr.add_token_types([gguf.TokenType.NORMAL] * 256)
    wr.add_add_bos_token(False)

    ref = {}
    for name, t in w.items():
        gname = gguf_name(name)
        if t.ndim == 2:
            q = quantize(t, qtype)  # (rows, row bytes) for block types, F32/F16 values otherwise
            deq = dequantize(q, qtype).reshape(t.shape).astype(np.float32) \
                if qtype != gguf.GGMLQuantizationType.F32 else t
            if a.arch == "llama" and name.endswith("q_proj.weight"):
                q = permute(q, n_head)
            elif a.arch == "llama" and name.endswith("k_proj.weight"):
                q = permute(q, n_kv)
            raw = None if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else qtype
            wr.add_tensor(gname, np.ascontiguousarray(q), raw_dtype=raw)
            ref[name] = deq
        else:
            wr.add_tensor(gname, t.astype(np.float32))
            ref[name] = t
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    if a.version == 2:
        with open(a.out, "r+b") as f:
            f.seek(4)
            f.write(struct.pack("<I", 2))
    if a.ref_dir:
        os.makedirs(a.ref_dir, exist_ok=True)
        json.dump(cfg, open(os.path.join(a.ref_dir, "config.json"), "w"), indent=2)
        write_safetensors(os.path.join(a.ref_dir, "model.safetensors"), ref)


if __name__ == "__main__":
    main()
