// BPE tokenizers (tokenizer_bpe.c): Hugging Face tokenizer.json and GGUF vocabularies, behind
// the sm_tokenizer of tokenizer.c (which forwards encode and decode here when t->bpe is set).
#ifndef SM_TOKENIZER_BPE_H
#define SM_TOKENIZER_BPE_H

#include "model.h"

typedef struct sm_bpe sm_bpe;

void sm_bpe_free(sm_bpe *b);
int64_t sm_bpe_vocab(const sm_bpe *b); // largest id + 1
// text -> *ids (*n, malloc'd), bos (>= 0) first.
sm_status sm_bpe_encode(const sm_bpe *b, int32_t bos, const char *text, size_t len, int32_t **ids,
                        int64_t *n);
// The bytes of id; first: the first token of a text (prev -1 or BOS), whose SentencePiece
// prefix space is dropped.
const char *sm_bpe_decode(const sm_bpe *b, bool first, int32_t id, size_t *len);

// tokenizer.c: an sm_tokenizer that forwards to b (taking ownership, also on failure).
sm_status sm_tokenizer_wrap_bpe(sm_bpe *b, int32_t bos, int32_t eos, sm_tokenizer **out);
// tokenizer.c: a tokenizer.bin-style tokenizer (llama2.c's score-greedy SentencePiece) from n
// pieces (bytes, lengths) and scores.
sm_status sm_tokenizer_from_pieces(int64_t n, const char *const *pieces, const size_t *lens,
                                   const float *scores, int32_t bos, int32_t eos,
                                   sm_tokenizer **out);

#endif
