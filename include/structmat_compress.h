// structmat compress: a whole checkpoint to a size budget, choosing per matrix the structure and
// precision that lose least (DESIGN.md, layer "compress").
//
// Three phases keep memory near a few matrices whatever the model's size:
//   1. measure: each matrix is read from the mapped checkpoint, every candidate of the chosen
//      methods is fitted and its error and exact bytes recorded; only that error-versus-bytes
//      curve is kept (the operators are freed, the matrix's pages released);
//   2. allocate: one candidate per matrix minimising the summed error under the budget;
//   3. write: each chosen candidate is fitted again and its parts streamed into the output
//      checkpoint (a Hugging Face directory written atomically: the old one or the new one).
//
//     sm_compress *c;
//     sm_compress_open("models/shakespeare-llama-3m",
//                      &(sm_compress_opts){.methods = "rtn,gptq,lowrank", .calib = cal}, &c);
//     sm_compress_measure(c);                          // phase 1 (the slow one)
//     int64_t budget;
//     sm_compress_parse_size(c, "3bpw", &budget);      // or "1.2MB", "1200000"
//     sm_compress_allocate(c, budget);                 // phase 2
//     sm_compress_write(c, "out-3bpw", false);         // phase 3
//     sm_compress_free(c);
//
// Sizes are DESIGN.md's: the tensor-data bytes of the compressed matrices, which are every 2-D
// weight of the checkpoint but the token embedding (lm_head included); bpw = bytes * 8 / their
// weight count; MB = 10^6 bytes. Embeddings, norms and biases are copied as they are.
#ifndef STRUCTMAT_COMPRESS_H
#define STRUCTMAT_COMPRESS_H

#include "structmat_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sm_objective {
    SM_OBJECTIVE_AUTO = 0,   // activation with calibration statistics, else weight
    SM_OBJECTIVE_WEIGHT,     // ||W - W_hat||_F^2
    SM_OBJECTIVE_ACTIVATION, // ||X (W - W_hat)^T||_F^2 = tr(dW H dW^T), H = X^T X (needs calib)
} sm_objective;

// What the progress callback is told: after each matrix of phase 1 (measured) and phase 3
// (written), with the matrix's index among sm_compress_count.
typedef struct sm_compress_event {
    int phase;        // 1 measure, 3 write
    int index, count; // matrix index, matrices
    const char *name; // the matrix
    int candidates;   // phase 1: candidates measured
    const char *spec; // phase 3: the chosen spec (canonical)
    double rel_error; // phase 3: sqrt(error / energy) in the objective
    int64_t bytes;    // phase 3: its bytes
    double seconds;   // time spent on this matrix
} sm_compress_event;

// Returns false to stop: the running phase then fails with SM_ERR_IO "interrupted" and nothing
// is left behind.
typedef bool (*sm_compress_progress)(void *user, const sm_compress_event *ev);

typedef struct sm_compress_opts {
    // Comma-separated method names (rtn, gptq, onebit, bitstack, lowrank, monarch, blast,
    // blockdiag, sparse, lorc = quantizer + low-rank residual, dense); NULL or "": all that
    // apply (gptq and lorc's gptq only with calibration). dense (the matrix as stored, or F16)
    // is always a candidate, so a budget up to the model's own size is reachable.
    const char *methods;
    sm_objective objective;
    sm_calib *calib; // calibration statistics (structmat calibrate), or NULL; not owned
    // Pins: a matrix whose name matches pin_regex[i] (POSIX extended, searched anywhere in the
    // name; the first match wins) gets exactly pin_spec[i]; one matching keep[j] stays as stored.
    int npin;
    const char *const *pin_regex, *const *pin_spec;
    int nkeep;
    const char *const *keep;
    // One spec for every matrix (pins and keeps still apply): no candidates, no allocation.
    const char *uniform;
    // SVD solver of the low-rank ladders (lowrank, lorc): 0 exact (LAPACK), 1 randomized.
    int solver;
    uint64_t seed; // randomized solvers and rotations (0: 24301)
    bool spectra;  // phase 1 also keeps each matrix's singular values (the report)
    sm_compress_progress progress;
    void *user;
    // Phase 3 hands each written operator to keep_op (which then owns it) instead of freeing
    // it: how a caller builds the compressed model in memory. NULL: freed.
    void (*keep_op)(void *user, int index, sm_op *op);
} sm_compress_opts;

typedef struct sm_compress sm_compress;

// Opens a Hugging Face checkpoint directory (config.json + model.safetensors or a sharded
// index) and lists its matrices; checks the options (methods, regexes, pinned specs, the
// calibration statistics of every matrix when the objective is activation).
sm_status sm_compress_open(const char *model_dir, const sm_compress_opts *opts, sm_compress **out);
void sm_compress_free(sm_compress *c);

int sm_compress_count(const sm_compress *c);              // matrices compressed
int64_t sm_compress_weights(const sm_compress *c);        // their weights (m n summed)
sm_objective sm_compress_objective(const sm_compress *c); // the resolved objective

// A size: "3.5bpw" (bits per weight of the compressed matrices), "120MB" (10^6 bytes), "120kB",
// "1.5GB", "12345" or "12345B" (bytes) -> bytes.
sm_status sm_compress_parse_size(const sm_compress *c, const char *text, int64_t *bytes);

// Phase 1. With uniform or pins only, it measures those single candidates.
sm_status sm_compress_measure(sm_compress *c);
// The measured curves as JSON (the candidates of every matrix, with the model, methods,
// objective and calibration they were made for), and back: a second target reuses one ladder.
// Loading refuses curves of another model, method list, objective or statistics file.
sm_status sm_compress_save_curves(const sm_compress *c, const char *path, bool force);
sm_status sm_compress_load_curves(sm_compress *c, const char *path);

// The smallest and largest total any choice reaches (after measure).
void sm_compress_range(const sm_compress *c, int64_t *min_bytes, int64_t *max_bytes);

// Phase 2: one candidate per matrix, total bytes <= budget, summed error minimal (a Lagrangian
// sweep over the lower convex hulls of the curves, then the slack filled greedily; see
// src/compress/allocate.c). SM_ERR_ARG naming the smallest reachable size when budget is below
// it. With uniform, checks nothing and chooses the one candidate.
sm_status sm_compress_allocate(sm_compress *c, int64_t budget);

// Phase 3: writes the model with the chosen operators to out_dir atomically (an existing
// directory is refused with SM_ERR_EXISTS unless force, and is never damaged).
sm_status sm_compress_write(sm_compress *c, const char *out_dir, bool force);

// One matrix, after measure (and allocate / write for the chosen and final fields).
typedef struct sm_compress_matrix {
    const char *name;
    int64_t rows, cols;
    const char *dtype; // as stored ("F32", "BF16")
    double energy;     // ||W||_F^2 or tr(W H W^T): rel_error = sqrt(error / energy)
    int candidates;
    int chosen;         // -1 before allocate
    const char *pinned; // "keep", the pinned spec, or NULL
    // After write: the written operator's canonical spec, bytes and error.
    const char *final_spec;
    int64_t final_bytes;
    double final_error;
    // Leading singular values (for the report) when a low-rank ladder computed them, else 0.
    int nsigma;
    const float *sigma;
} sm_compress_matrix;
void sm_compress_get_matrix(const sm_compress *c, int i, sm_compress_matrix *out);

typedef struct sm_compress_candidate {
    const char *method; // "rtn", "lowrank", ...
    const char *spec;   // canonical
    int64_t bytes;
    double error; // in the objective (absolute)
} sm_compress_candidate;
void sm_compress_get_candidate(const sm_compress *c, int i, int j, sm_compress_candidate *out);

// A self-contained HTML file: per matrix the error-versus-bytes points of every candidate with
// the choice marked and its spectrum, and the per-layer allocation, as inline SVG.
sm_status sm_compress_report_html(const sm_compress *c, const char *path, bool force);

// Writes the dense Hugging Face checkpoint of a model (compressed or not) to out_dir atomically:
// every operator as its dense matrix in dtype (F32, F16 or BF16), the rest as stored.
sm_status sm_export_dense(const char *model_dir, const char *out_dir, sm_dtype dtype, bool force);

#ifdef __cplusplus
}
#endif
#endif
