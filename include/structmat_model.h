// structmat model runtime: Llama-family transformers in which every linear layer is an sm_op.
//
// A model (sm_model) holds the weights and is read-only once loaded, so several threads may run
// their own contexts (sm_context: the activations and the KV cache of one sequence) on one model.
// The linear layers are operators (include/structmat.h): dense as the checkpoint stores them today
// (F32 -> "dense", BF16 -> "dense:dtype=bf16", F16 -> "dense:dtype=f16"), or any structure a
// structmat checkpoint holds, with no change to the runtime.
//
// Usage (error checks shortened; every call returns an sm_status):
//
//     sm_model *model;
//     if (sm_model_load("models/shakespeare-llama-3m", &model) != SM_OK) {
//         fprintf(stderr, "%s\n", sm_last_error());
//         return 1;
//     }
//     sm_model_info info;
//     sm_model_get_info(model, &info);
//     sm_tokenizer *tok;                         // byte-level here (vocab 256, no tokenizer file)
//     sm_tokenizer_load_for_model("models/shakespeare-llama-3m", model, &tok);
//     int32_t *ids;                              // (n) token ids, free() them
//     int64_t n;
//     sm_tokenizer_encode(tok, "ROMEO:\n", 7, true, &ids, &n);  // BOS only if the vocab has one
//     sm_context *ctx;
//     sm_context_init(model, 0, 0, &ctx);        // default context and batch sizes
//     float *logits = malloc(info.vocab_size * sizeof(float));   // (vocab)
//     sm_context_forward(ctx, ids, n, SM_LOGITS_LAST, logits);  // prefill: one batch, GEMMs
//     sm_sampler *smp;
//     sm_sampler_init(&(sm_sampler_params){.temperature = 0.8f, .top_p = 0.95f, .seed = 42},
//                     info.vocab_size, &smp);
//     int32_t prev = ids[n - 1];
//     while (sm_context_pos(ctx) < sm_context_size(ctx)) {
//         int32_t next = sm_sampler_sample(smp, logits);
//         if (next == info.eos_id) break;
//         size_t len;
//         const char *piece = sm_tokenizer_decode(tok, prev, next, &len);
//         fwrite(piece, 1, len, stdout);
//         sm_context_forward(ctx, &next, 1, SM_LOGITS_LAST, logits);  // decode: one token
//         prev = next;
//     }
//     free(logits); free(ids);
//     sm_sampler_free(smp); sm_context_free(ctx); sm_tokenizer_free(tok); sm_model_free(model);
//
// Numerics: activations, the KV cache and all sums are F32 (RMSNorm's mean of squares in double);
// weights stay in the dtype they are stored in and are decoded inside the operator kernels.
#ifndef STRUCTMAT_MODEL_H
#define STRUCTMAT_MODEL_H

#include "structmat.h"

#ifdef __cplusplus
extern "C" {
#endif

// --- models -------------------------------------------------------------------------------------

typedef struct sm_model sm_model;

// Rotary embedding layouts. HALF: a head's dimension i pairs with i + head_dim/2 (Hugging Face's
// rotate_half, every config.json checkpoint); INTERLEAVED: 2i pairs with 2i+1 (llama2.c, Meta).
typedef enum sm_rope_layout { SM_ROPE_HALF = 0, SM_ROPE_INTERLEAVED = 1 } sm_rope_layout;

typedef struct sm_model_info {
    char arch[16];      // "llama" or "qwen2" (model_type; llama2.c checkpoints: "llama")
    char format[16];    // "safetensors" or "llama2c"
    int64_t dim;        // hidden size
    int64_t hidden_dim; // MLP intermediate size
    int64_t n_layers, n_heads, n_kv_heads, head_dim;
    int64_t vocab_size;
    int64_t max_seq_len; // trained context: max_position_embeddings, or llama2.c's seq_len
    double rms_eps, rope_theta;
    sm_rope_layout rope_layout;
    bool tied;     // the output head shares the token embedding
    bool qkv_bias; // q, k and v projections have biases (Qwen2)
    // From config.json (-1 when null or absent). llama2.c checkpoints: bos 1, eos 2, as its
    // tokenizer.bin defines them (llama2.c's own run.c stops generating at BOS).
    int32_t bos_id, eos_id;
    int64_t n_linear;      // 7 n_layers + 1 operators (see sm_model_linear)
    int64_t linear_params; // sums over the linear operators, lm_head included (DESIGN.md's size)
    int64_t linear_bytes;
    int64_t embed_bytes; // the token embedding table (0 when it is a view of a tied lm_head)
    int64_t other_bytes; // norms and biases (F32)
} sm_model_info;

// Loads a model from
//   - a Hugging Face directory: config.json + model.safetensors, or shards listed in
//     model.safetensors.index.json (F32, F16, BF16 tensors; structmat operators as stored);
//   - a .safetensors or .safetensors.index.json file with config.json next to it;
//   - a llama2.c checkpoint (.bin): the legacy header (version 0) or version 1 (magic "ak42");
//   - a GGUF file (llama.cpp, architectures llama and qwen2; structmat_gguf.h): F32, F16 and
//     BF16 matrices as dense operators, block-quantized ones (Q4_K, Q8_0, ...) as "ggml"
//     operators that keep their blocks; llama.cpp's q/k row permutation is undone.
// Inputs are validated against the config: missing keys or tensors, shapes that contradict it,
// an unknown architecture, a file too short are errors naming the file.
sm_status sm_model_load(const char *path, sm_model **out);
void sm_model_free(sm_model *m);
void sm_model_get_info(const sm_model *m, sm_model_info *info);

// The linear layers, i in [0, 7 n_layers]: layer l has q, k, v, o, gate, up, down at 7 l + 0..6
// (llama2.c's wq, wk, wv, wo, w1, w3, w2), and i = 7 n_layers is the output head. Names are the
// Hugging Face tensor names ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight").
const sm_op *sm_model_linear(const sm_model *m, int64_t i);
const char *sm_model_linear_name(const sm_model *m, int64_t i);
// Replaces linear layer i by op (same shape; the model takes ownership on success and frees the
// old operator). Refused while a context of the model exists (contexts size their scratch for
// the operators they were created with). Replacing a tied lm_head unties it.
sm_status sm_model_linear_set(sm_model *m, int64_t i, sm_op *op);

// --- contexts: one sequence's activations and KV cache -------------------------------------------

typedef struct sm_context sm_context;

// n_ctx: positions the KV cache holds (0: min(max_seq_len, 4096); at most max_seq_len).
// n_batch: tokens per forward step (0: min(n_ctx, 512)); longer inputs run in steps of n_batch.
// Everything a forward pass needs is allocated here, in one arena: no allocation per token.
sm_status sm_context_init(const sm_model *m, int64_t n_ctx, int64_t n_batch, sm_context **out);
void sm_context_free(sm_context *c);
int64_t sm_context_size(const sm_context *c);  // n_ctx
int64_t sm_context_pos(const sm_context *c);   // tokens in the cache so far
size_t sm_context_nbytes(const sm_context *c); // bytes of its arena (KV cache included)
// Keeps the first pos tokens of the cache and forgets the rest (0: start a new sequence).
sm_status sm_context_rewind(sm_context *c, int64_t pos);

typedef enum sm_logits {
    SM_LOGITS_NONE = 0, // only fill the cache
    SM_LOGITS_LAST = 1, // logits (vocab) of the last token
    SM_LOGITS_ALL = 2,  // logits (n, vocab) of every token
} sm_logits;

// Appends tokens (n) at positions pos .. pos + n - 1 and writes the logits asked for. The linear
// layers see every step's tokens as one batch (GEMM), so n = 1 is the decode path and n > 1
// prefill. Errors (nothing is changed): n = 0, an id outside [0, vocab), pos + n > n_ctx.
sm_status sm_context_forward(sm_context *c, const int32_t *tokens, int64_t n, sm_logits which,
                             float *logits);

// An observer sees the input of every linear layer as the forward pass reaches it: layer i
// (sm_model_linear's numbering) and X (T, in) row-major, the T tokens of one step (T <= n_batch).
// q, k and v see the same X, as do gate and up; the output head sees only the rows whose logits
// are computed (all with SM_LOGITS_ALL). A status other than SM_OK stops the pass, which returns
// it (the context's position is then unchanged). Calibration (below) is one; NULL fn: none, the
// default, which costs one branch per linear layer.
typedef sm_status (*sm_linear_observer)(void *user, int64_t i, int64_t T, const float *X);
void sm_context_set_observer(sm_context *c, sm_linear_observer fn, void *user);

// --- tokenizers ----------------------------------------------------------------------------------

typedef struct sm_tokenizer sm_tokenizer;

// Byte-level: 256 tokens, token = byte, no BOS or EOS.
sm_status sm_tokenizer_init_bytes(sm_tokenizer **out);
// A llama2.c tokenizer.bin: int32 max_token_length, then per token float score, int32 length and
// the bytes. vocab_size > 0 is the model's (the file does not store it; it must hold exactly
// that many tokens), 0 reads tokens to the end of the file. BOS = 1, EOS = 2.
sm_status sm_tokenizer_load(const char *path, int64_t vocab_size, sm_tokenizer **out);
// A Hugging Face tokenizer.json with a BPE model: byte-level (GPT-2, Llama-3, Qwen2, SmolLM:
// the pre-tokenizer's regular expression through PCRE2 with Unicode classes, GPT-2's byte
// alphabet, merges by rank, ignore_merges, added tokens cut out first) or SentencePiece-style
// (Llama-2: "▁" for spaces and prepended, "<0xNN>" byte fallback, unk fusing). Supported parts:
// normalizers none / NFC (taken as already applied) / Prepend("▁") + Replace(" ", "▁");
// pre-tokenizers ByteLevel, Split (Regex, Isolated) and Sequences of them. BOS is the special
// token a TemplateProcessing post-processor puts first (-1 without one); EOS is -1 (the model's,
// through sm_tokenizer_load_for_model). Unsupported parts are refused naming them.
sm_status sm_tokenizer_load_json(const char *path, sm_tokenizer **out);
// The vocabulary inside a GGUF file: tokenizer.ggml.model "gpt2" (tokens, merges, token types:
// control and user-defined tokens match in text; tokenizer.ggml.pre default/gpt2, llama-bpe/
// llama3 or qwen2 selects the regex) or "llama" (SentencePiece pieces and scores, encoded as
// llama.cpp does: "▁" prefix, characters, byte fallback, highest-scoring merges). BOS when
// tokenizer.ggml.add_bos_token (default: true for llama, false for gpt2), EOS from its id.
sm_status sm_tokenizer_load_gguf(const char *path, sm_tokenizer **out);
// The tokenizer of a model loaded from model_path: a GGUF file's own vocabulary, else
// tokenizer.json in its directory (EOS from the model's config when the file has none), else
// tokenizer.bin there (or next to a llama2.c .bin), else byte-level when the vocabulary has 256
// tokens, else SM_ERR_NOT_FOUND. A tokenizer with more tokens than the model embeds is refused.
sm_status sm_tokenizer_load_for_model(const char *model_path, const sm_model *m,
                                      sm_tokenizer **out);
void sm_tokenizer_free(sm_tokenizer *t);
int64_t sm_tokenizer_vocab_size(const sm_tokenizer *t);
int32_t sm_tokenizer_bos(const sm_tokenizer *t); // -1 when none
int32_t sm_tokenizer_eos(const sm_tokenizer *t); // -1 when none
// text (len bytes) -> *ids (*n), malloc'd (free() it). add_bos prepends BOS when there is one.
// tokenizer.bin: as llama2.c's run.c: a " " prefix, UTF-8 characters (else byte tokens <0xNN>),
// then repeatedly the highest-scoring adjacent pair that is a token is merged (leftmost on ties).
sm_status sm_tokenizer_encode(const sm_tokenizer *t, const char *text, size_t len, bool add_bos,
                              int32_t **ids, int64_t *n);
// The bytes of token id (*len of them, not NUL-terminated; owned by t). prev is the token before
// it (-1: none): after BOS a piece's leading space is dropped; "<0xNN>" pieces are the byte NN.
// BPE tokenizers: byte-level pieces decode to their bytes; SentencePiece-style ones drop the
// prepended space on the first token (prev -1 or BOS), so the pieces of encode's ids (BOS
// skipped), each decoded after the one before, concatenate to the text.
// An id outside the vocabulary gives "" (len 0).
const char *sm_tokenizer_decode(const sm_tokenizer *t, int32_t prev, int32_t id, size_t *len);

// --- sampling ------------------------------------------------------------------------------------

typedef struct sm_sampler sm_sampler;

typedef struct sm_sampler_params {
    float temperature; // <= 0: greedy (argmax, ties to the lowest id)
    float top_p;       // in (0, 1): nucleus sampling; <= 0 or >= 1: the whole distribution
    uint64_t seed;     // the same seed and logits give the same tokens
} sm_sampler_params;

sm_status sm_sampler_init(const sm_sampler_params *p, int64_t vocab_size, sm_sampler **out);
void sm_sampler_free(sm_sampler *s);
// The next token for logits (vocab_size); no allocation.
int32_t sm_sampler_sample(sm_sampler *s, const float *logits);

// Index of the largest of x (n); ties go to the lowest index.
int32_t sm_argmax(const float *x, int64_t n);
// The k (<= n) largest of x (n) in decreasing order into ids (k); ties to the lowest index.
void sm_topk(const float *x, int64_t n, int k, int32_t *ids);
// log sum_i exp(x_i), in double (so NLL = sm_logsumexp(logits, V) - logits[target]).
double sm_logsumexp(const float *x, int64_t n);

// --- evaluation: perplexity and KL divergence ----------------------------------------------------
//
// llama.cpp's llama-perplexity conventions: the token stream is cut into non-overlapping chunks of
// n_ctx tokens, each run from an empty cache (a BOS, when used, replaces the chunk's first token);
// the logits of positions first .. n_ctx - 2 predict the tokens at first + 1 .. n_ctx - 1, with
// first = n_ctx / 2 (the second half: llama-perplexity's scoring) or 0 (every position).

// logp (n, vocab) = log-softmax of the logits of tokens (n), run from position 0 of c, a context
// of m (rewound first): each row is logit - logsumexp(row) in double, rounded to F32.
sm_status sm_eval_logprobs(const sm_model *m, sm_context *c, const int32_t *tokens, int64_t n,
                           float *logp);

// Running sums over scored positions (zero-initialise, then sm_eval_add per position).
typedef struct sm_eval_stats {
    int64_t count;     // positions scored
    double nll, nll2;  // sums of -ln p(target) and of its square
    int64_t kld_count; // positions compared with a base (the others: 0)
    double kld, kld2, kld_max;
    double nll_base;   // sum of -ln p_base(target)
    int64_t top1_same; // positions where both argmaxes (ties to the lowest id) agree
} sm_eval_stats;

// Adds a position: logp (vocab) the model's log-probabilities, target the true next token, base
// (vocab) the base model's log-probabilities there or NULL. Returns KLD(base || model) =
// sum_v p_base(v) (ln p_base(v) - ln p_model(v)) in double, each side renormalised in double
// (identical rows give exactly 0), or 0 without a base.
double sm_eval_add(sm_eval_stats *s, const float *logp, const float *base, int64_t vocab,
                   int32_t target);

typedef struct sm_eval_summary {
    int64_t count;
    double nll;          // mean -ln p(target)
    double ppl, ppl_err; // exp(nll); llama-perplexity's +/-: ppl sqrt(var(nll_i) / (count - 1))
    // Against the base (NAN without one):
    double nll_base, ppl_base;
    double dnll;                          // nll - nll_base
    double ppl_ratio;                     // ppl / ppl_base = exp(dnll)
    double kld_mean, kld_stderr, kld_max; // stderr: sqrt(var(kld_i) / (count - 1))
    double top1;                          // share of positions whose argmaxes agree
} sm_eval_summary;
void sm_eval_summarize(const sm_eval_stats *s, sm_eval_summary *out);

// A KL-divergence base file: the tokens of every chunk and, per scored position, the base
// model's log-probabilities. Little-endian: a 64-byte header (char magic[8] "SMKLDIV\0",
// uint32 version 1, uint32 dtype 0 = F32, int64 vocab, n_ctx, n_chunks, first, int32 bos,
// 12 zero bytes), the tokens int32 (n_chunks, n_ctx), then per chunk the F32 log-softmax rows
// (n_ctx - 1 - first, vocab); the file size must be exactly that. Written chunk by chunk to a
// temporary sibling and renamed into place by sm_kld_base_commit; read back chunk by chunk.
typedef struct sm_kld_base sm_kld_base;

typedef struct sm_kld_base_info {
    int64_t vocab;    // vocabulary size
    int64_t n_ctx;    // tokens per chunk
    int64_t n_chunks; // chunks
    int64_t first;    // rows first .. n_ctx - 2 of each chunk are stored
    int32_t bos;      // the BOS that replaced each chunk's first token; -1: none
} sm_kld_base_info;

// tokens (n_chunks, n_ctx) as evaluated. An existing path is refused (SM_ERR_EXISTS) unless force.
sm_status sm_kld_base_create(const char *path, const sm_kld_base_info *info, const int32_t *tokens,
                             bool force, sm_kld_base **out);
// Appends the next chunk's rows: logp (n_ctx - 1 - first, vocab).
sm_status sm_kld_base_write(sm_kld_base *b, const float *logp);
// After every chunk: flushes, renames into place and frees b (also on failure).
sm_status sm_kld_base_commit(sm_kld_base *b);
sm_status sm_kld_base_open(const char *path, sm_kld_base **out);
void sm_kld_base_get_info(const sm_kld_base *b, sm_kld_base_info *info);
const int32_t *sm_kld_base_tokens(const sm_kld_base *b); // (n_chunks, n_ctx)
// logp (n_ctx - 1 - first, vocab) = the stored rows of chunk (0 <= chunk < n_chunks).
sm_status sm_kld_base_read(sm_kld_base *b, int64_t chunk, float *logp);
// Frees b; a file being written and not committed is removed.
void sm_kld_base_free(sm_kld_base *b);

// --- saving
// ----------------------------------------------------------------------------------------

// The token embedding table (vocab, dim) as the model holds it, in *dtype (F32, F16 or BF16).
const void *sm_model_embedding(const sm_model *m, sm_dtype *dtype);
// Writes m as a Hugging Face directory dir that sm_model_load reads back: config.json (with a
// "structmat" object: the format version) and model.safetensors, where plain dense layers (f32,
// f16, bf16) and the embedding are ordinary tensors, every other operator its structmat parts
// and metadata, norms and biases F32. The directory is written as a whole (a temporary sibling
// renamed into place), so it is absent, the old one or the complete new one at every moment. An
// existing dir is refused (SM_ERR_EXISTS) unless force, and even then unless it holds a
// checkpoint (config.json) or nothing; it is replaced entirely (other files in it go too).
// Interleaved-RoPE models (llama2.c) are refused: config.json cannot say so.
sm_status sm_model_save(const sm_model *m, const char *dir, bool force);

// --- calibration statistics ------------------------------------------------------------------
//
// For activation-aware fitting (sm_fit_opts.stats): per distinct linear input x of a model, over
// the tokens of a calibration text, H = sum x x^T (F64), sum x^2 per channel (F64) and max |x|
// per channel (F32). An input is named after the first linear layer that reads it, less
// ".weight":
//     q_proj, k_proj, v_proj -> model.layers.L.self_attn.q_proj
//     o_proj                 -> model.layers.L.self_attn.o_proj
//     gate_proj, up_proj     -> model.layers.L.mlp.gate_proj
//     down_proj              -> model.layers.L.mlp.down_proj
//     lm_head                -> lm_head
// The file (docs/format.md, "Calibration statistics") also records which input each linear
// layer reads, so readers need not know the rule.
//
//     sm_calib *cal;
//     sm_calib_init(model, 256, &cal);              // a context of 256 tokens inside
//     for (each chunk of at most 256 tokens) sm_calib_run(cal, chunk, len);
//     sm_calib_save(cal, "stats.safetensors", &(sm_calib_source){...}, false);
//     sm_calib_free(cal);
//     ...
//     sm_calib_open("stats.safetensors", &cal);
//     sm_stats s;                                   // views into cal
//     sm_calib_get(cal, "model.layers.0.self_attn.k_proj.weight", 256, &s);
//     sm_op_fit(W, 128, 256, "lowrank:ratio=0.5", &(sm_fit_opts){.stats = &s}, &op);

#define SM_CALIB_FORMAT_VERSION 1 // structmat.calib.format_version

typedef struct sm_calib sm_calib;

// Zeroed statistics for every distinct input of m (4 per layer, then the head's) and a context of
// n_ctx tokens (0: as sm_context_init) to run m in, so m may not change until sm_calib_free.
sm_status sm_calib_init(const sm_model *m, int64_t n_ctx, sm_calib **out);
int64_t sm_calib_ctx_size(const sm_calib *cal); // the context's n_ctx (0 for an opened file)
// Runs tokens (n, 1 <= n <= the context size) as one sequence from an empty cache and adds every
// linear input of every token, the output head's included (it runs on every position).
sm_status sm_calib_run(sm_calib *cal, const int32_t *tokens, int64_t n);
int64_t sm_calib_tokens(const sm_calib *cal); // tokens added (each input saw every one)

// Where the tokens came from, for the file's metadata.
typedef struct sm_calib_source {
    const char *model;               // the model's path, or NULL
    const char *text;                // the text file's path, or NULL
    int64_t text_begin, text_end;    // the bytes [begin, end) of the text the tokens cover
    int64_t ctx;                     // tokens per chunk (the last may be shorter)
    int64_t chunks;                  // sequences run
    int32_t bos;                     // the BOS id that starts every chunk, -1: none
} sm_calib_source;
// Writes collected statistics (src may be NULL) as safetensors, to a temporary sibling renamed
// into place; an existing path is refused (SM_ERR_EXISTS) unless force.
sm_status sm_calib_save(sm_calib *cal, const char *path, const sm_calib_source *src, bool force);

// Reads a statistics file (checked: format version, token count, every input's three tensors
// with their dtypes and shapes; values are checked when an input is got).
sm_status sm_calib_open(const char *path, sm_calib **out);
void sm_calib_free(sm_calib *cal);
const char *sm_calib_meta(const sm_calib *cal, const char *key); // an opened file's, or NULL

typedef struct sm_calib_input {
    const char *name;     // "model.layers.0.self_attn.q_proj"
    int64_t n;            // channels: the input size of the layers reading it
    const double *gram;   // (n, n) sum of x x^T over the tokens, symmetric
    const double *sqsum;  // (n) sum of x_j^2
    const float *absmax;  // (n) max |x_j|
} sm_calib_input;
int sm_calib_count(const sm_calib *cal); // distinct inputs
// Input i (0 <= i < count). The pointers are views into cal (or the mapped file), valid until
// the next sm_calib_input_get or sm_calib_get on cal or its free. SM_ERR_FORMAT for a file whose
// values are not finite, or negative where sums of squares are.
sm_status sm_calib_input_get(sm_calib *cal, int i, sm_calib_input *in);
// The index of the input linear layer `layer` reads ("model.layers.0.self_attn.k_proj.weight",
// ".weight" optional); SM_ERR_NOT_FOUND naming the file when it has none.
sm_status sm_calib_find(const sm_calib *cal, const char *layer, int *i);
// The statistics to fit linear layer `layer`, whose input has n channels, with: SM_ERR_NOT_FOUND
// as sm_calib_find, SM_ERR_SHAPE when the stored input has another size (stats of another
// model). stats points into cal as sm_calib_input_get's pointers do; tokens = sm_calib_tokens.
sm_status sm_calib_get(sm_calib *cal, const char *layer, int64_t n, sm_stats *stats);

// The activation-aware relative error sqrt(tr(dW H dW^T) / tr(W H W^T)), dW = W - W_hat, for
// W, W_hat (m, n) and H (n, n) symmetric positive semidefinite, in double (sqrt of the numerator
// when the denominator is 0).
sm_status sm_act_rel_error(const float *W, const float *W_hat, int64_t m, int64_t n,
                           const double *H, double *rel);

#ifdef __cplusplus
}
#endif
#endif
