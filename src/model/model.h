// Internal model layer: the weights every loader fills and the forward pass reads.
#ifndef SM_MODEL_INTERNAL_H
#define SM_MODEL_INTERNAL_H

#include "../base/base.h"
#include "structmat_model.h"

// The linear layers of one transformer block, in the order of sm_model_linear.
enum {
    SM_LIN_Q,
    SM_LIN_K,
    SM_LIN_V,
    SM_LIN_O,
    SM_LIN_GATE,
    SM_LIN_UP,
    SM_LIN_DOWN,
    SM_LIN_PER_LAYER
};

#define SM_MAX_HEAD_DIM 1024 // RoPE keeps one head on the stack

struct sm_model {
    sm_model_info info;
    sm_op **ops;          // (7 n_layers + 1): per layer q, k, v, o, gate, up, down; then lm_head
    char **names;         // (7 n_layers + 1) Hugging Face tensor names of the operators
    float *params;        // one allocation for the F32 vectors below ("malloc and point")
    float *rms_att;       // (n_layers, dim) input_layernorm
    float *rms_ffn;       // (n_layers, dim) post_attention_layernorm
    float *rms_final;     // (dim) model.norm
    float *bias;          // (n_layers, q_dim + 2 kv_dim) q, k, v biases back to back, or NULL
    const void *embed;    // (vocab, dim) of embed_dtype: embed_own, or a tied lm_head's part
    sm_dtype embed_dtype; // F32, F16 or BF16
    void *embed_own;      // owned table (sm_alloc), or NULL when embed is a view
    int n_contexts;       // live contexts (atomic): operators may not change under them
};

static inline int64_t sm_model_q_dim(const sm_model *m) {
    return m->info.n_heads * m->info.head_dim;
}
static inline int64_t sm_model_kv_dim(const sm_model *m) {
    return m->info.n_kv_heads * m->info.head_dim;
}
static inline sm_op *sm_model_op(const sm_model *m, int64_t layer, int which) {
    return m->ops[layer * SM_LIN_PER_LAYER + which];
}

// Checks the shapes of info make a model this runtime runs (positive sizes, heads dividing,
// an even head_dim of at most SM_MAX_HEAD_DIM); errors start with where.
sm_status sm_model_check_dims(const sm_model_info *info, const char *where);
// Allocates a model for the shapes in info (dims, layers, heads, vocab, qkv_bias set): the
// operator and name tables and the F32 vectors. Loaders then fill ops, vectors and embedding.
sm_status sm_model_alloc(const sm_model_info *info, sm_model **out);
// Points a tied model's embedding at lm_head's stored matrix when lm_head is plain dense (f32,
// f16, bf16), freeing embed_own; returns whether it did. Loaders call it before copying a table.
bool sm_model_share_embedding(sm_model *m);
// After a loader filled everything: checks every operator's shape and that there is an
// embedding (embed_own or a tied view), fills the sums in info.
sm_status sm_model_finish(sm_model *m);

// The shape (rows, cols) operator i must have.
void sm_model_linear_shape(const sm_model *m, int64_t i, int64_t *rows, int64_t *cols);

sm_status sm_model_load_hf(const char *path, sm_model **out);
sm_status sm_model_load_llama2c(const char *path, sm_model **out);
sm_status sm_model_load_gguf(const char *path, sm_model **out); // load_gguf.c
// Whether path is a file starting with GGUF's magic.
bool sm_model_is_gguf(const char *path);
// Whether a tensor name is a token embedding (Hugging Face, llama2.c-style, GPT-2, GGUF, BERT
// names): a lookup table, not a linear map, so fit --all and compress leave it out.
bool sm_is_embedding_name(const char *name);
// Whether path looks like a llama2.c checkpoint (a regular file not named *.safetensors/*.json).
bool sm_model_is_llama2c(const char *path);

#endif
