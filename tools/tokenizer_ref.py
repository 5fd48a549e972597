#!/usr/bin/env python3
"""Reference tokenizations for tests/test_tokenizer_bpe.c, made with Hugging Face's `tokenizers`
(PyPI) and, for the GGUF vocabularies, llama.cpp's `gguf` writer:

    python3 tools/tokenizer_ref.py OUTDIR

Trains BPE tokenizers (a few hundred merges each) on data/tinyshakespeare.txt and writes
OUTDIR/<name>.json for
  gpt2      ByteLevel pre-tokenizer (GPT-2's regex), special token <|endoftext|>
  gpt2sp    the same with add_prefix_space
  llama3    Split(Llama-3's regex, Isolated) + ByteLevel(use_regex false), ignore_merges,
            <|begin_of_text|> put first by a TemplateProcessing post-processor (BOS)
  qwen2     Split(Qwen2's regex) + ByteLevel, NFC normalizer
  spm       SentencePiece-style like Llama-2's tokenizer.json: Prepend("▁") + Replace(" ", "▁"),
            no pre-tokenizer, byte_fallback with <0xNN> tokens, <unk> fused
and OUTDIR/<name>.gguf for gpt2, llama3 and qwen2 (tokenizer.ggml.model gpt2 with tokens,
merges, token types and tokenizer.ggml.pre default / llama-bpe / qwen2) and for spm
(tokenizer.ggml.model llama: pieces, scores = -(merge rank) of the piece, byte tokens type 6).
OUTDIR/cases.json holds the hard texts, which of them NFC changes, and, per tokenizer, the ids
tokenizers gives each (add_special_tokens=False) and the BOS id (-1: none).
"""
import json
import os
import sys
import unicodedata

try:
    import gguf
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, \
        processors, trainers
except ImportError:
    sys.exit("tokenizer_ref.py: the tokenizers and gguf packages are missing")

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")

TEXTS = [
    "",
    "Hello world",
    "ROMEO:\nWhat light through yonder window breaks?\n",
    "  two leading spaces, trailing three   ",
    "multiple      spaces\tand\t\ttabs\n\n\nand newlines\r\nCRLF",
    "I'm you're we've they'll she'd it's DON'T He'S o'clock 'tis",
    "1234567 3.14159 1,000,000 2024-01-01 +42 -7 0x1F \u0663\u0664\u0665 \u2167",
    "na\u00efve caf\u00e9 \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u0440\u0443\u0441\u0441\u043a\u0438\u0439 "
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4",
    "emoji \U0001F642\U0001F44D\U0001F3FD family \U0001F468\u200d\U0001F469\u200d\U0001F467 e\u0301",
    "!!!??? ... --- ((( ))) <tag> @user #hash $100 % ^&* ~`|\\",
    "def f(x):\n    return x**2  # square\n\n\tprint(f(3))\n",
    "before<|endoftext|>after <|begin_of_text|> end",
    "\u2581already \u2581 has the block",
    "                                                                long run of spaces",
]


def bytes_to_unicode():
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out, extra = {}, 0
    for b in range(256):
        out[b] = chr(b) if b in keep else chr(256 + extra)
        extra += b not in keep
    return out


def train_bytelevel(corpus, pre, special, n_merges, ignore_merges=False, normalizer=None):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre
    if normalizer:
        tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=256 + len(special) + n_merges, special_tokens=special,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, tr)
    return tok


def train_spm(corpus, n_merges):
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tr = trainers.BpeTrainer(vocab_size=3 + 120 + n_merges, special_tokens=["<unk>", "<s>", "</s>"],
                             limit_alphabet=120, show_progress=False)
    tok.train_from_iterator(corpus, tr)
    # Byte tokens <0xNN> as ordinary vocabulary entries after the trained ones, as Llama-2 has them.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return Tokenizer.from_str(json.dumps(spec))


def write_gguf_bpe(path, tok, pre):
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    added = {a["id"]: a["content"] for a in spec["added_tokens"]}
    n = max(list(vocab.values()) + list(added.keys())) + 1
    tokens, types = [""] * n, [gguf.TokenType.NORMAL] * n
    for s, i in vocab.items():
        tokens[i] = s
    for i, s in added.items():
        tokens[i], types[i] = s, gguf.TokenType.CONTROL
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in spec["model"]["merges"]]
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


def write_gguf_spm(path, tok):
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    n = len(vocab)
    rank = {}
    for r, m in enumerate(spec["model"]["merges"]):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(a + b, r)
    tokens, scores, types = [""] * n, [0.0] * n, [gguf.TokenType.NORMAL] * n
    for s, i in vocab.items():
        tokens[i] = s
        scores[i] = -float(rank.get(s, 0)) if s in rank else 0.0
        if s.startswith("<0x") and len(s) == 6:
            types[i] = gguf.TokenType.BYTE
    for s in ("<unk>", "<s>", "</s>"):
        types[vocab[s]] = gguf.TokenType.CONTROL
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(vocab["<s>"])
    w.add_eos_token_id(vocab["</s>"])
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    text = open("data/tinyshakespeare.txt", encoding="utf-8").read()
    corpus = [text[i:i + 2000] for i in range(0, 400000, 2000)]
    toks = {}
    toks["gpt2"] = train_bytelevel(corpus, pre_tokenizers.ByteLevel(add_prefix_space=False),
                                   ["<|endoftext|>"], 400)
    toks["gpt2sp"] = train_bytelevel(corpus, pre_tokenizers.ByteLevel(add_prefix_space=True),
                                     ["<|endoftext|>"], 300)
    split = lambda p: pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(p), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    toks["llama3"] = train_bytelevel(corpus, split(LLAMA3), ["<|begin_of_text|>", "<|end_of_text|>"],
                                     400, ignore_merges=True)
    toks["llama3"].post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    toks["qwen2"] = train_bytelevel(corpus, split(QWEN2), ["<|endoftext|>"], 400,
                                    normalizer=normalizers.NFC())
    toks["spm"] = train_spm(corpus, 400)
    cases = {"texts": TEXTS + [text[-3000:]], "tokenizers": []}
    # Texts the NFC normalizer changes (qwen2's; structmat takes text to be NFC already).
    cases["not_nfc"] = [unicodedata.normalize("NFC", t) != t for t in cases["texts"]]
    for name, tok in toks.items():
        tok.save(os.path.join(out, f"{name}.json"))
        ids = [tok.encode(t, add_special_tokens=False).ids for t in cases["texts"]]
        bos = tok.token_to_id("<|begin_of_text|>") if name == "llama3" else -1
        entry = {"name": name, "ids": ids, "bos": bos, "gguf": None}
        if name in ("gpt2", "llama3", "qwen2"):
            entry["gguf"] = f"{name}.gguf"
            write_gguf_bpe(os.path.join(out, entry["gguf"]), tok,
                           {"gpt2": "default", "llama3": "llama-bpe", "qwen2": "qwen2"}[name])
        elif name == "spm":
            entry["gguf"] = "spm.gguf"  # SentencePiece scores: round trips only
            write_gguf_spm(os.path.join(out, "spm.gguf"), tok)
        cases["tokenizers"].append(entry)
    json.dump(cases, open(os.path.join(out, "cases.json"), "w"), ensure_ascii=True)


if __name__ == "__main__":
    main()
