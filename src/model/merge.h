// The merge loop both BPE flavours share (tokenizer.c: llama2.c's score-greedy SentencePiece;
// tokenizer_bpe.c: rank-ordered merges of tokenizer.json and GGUF vocabularies). Symbols sit in
// a linked list; every adjacent pair that merges sits in a heap, the best key first (the leftmost
// pair on ties). A popped pair whose symbols changed since it was pushed is stale and skipped;
// each merge pushes at most the two new neighbouring pairs, so 3 ns heap entries suffice.
#ifndef SM_MERGE_H
#define SM_MERGE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct sm_merge_pair {
    double key;          // lower merges first (a rank, or minus a score)
    int64_t left, right; // symbol positions
    int32_t lid, rid;    // their ids when the pair was pushed
    int32_t res;         // the merged symbol
} sm_merge_pair;

// Whether symbols a, b (in this order) merge; if so *key and *res.
typedef bool (*sm_merge_fn)(const void *ctx, int32_t a, int32_t b, double *key, int32_t *res);

// Merges sym (ns) in place as far as merges go; on return the live symbols are the list from 0
// along next (ns; -1 ends it). prev (ns) is scratch, heap holds 3 ns + 1 entries.
void sm_merge_symbols(int32_t *sym, int64_t ns, int64_t *next, int64_t *prev, sm_merge_pair *heap,
                      sm_merge_fn fn, const void *ctx);

#endif
