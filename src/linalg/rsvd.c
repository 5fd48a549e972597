#include "linalg.h"

// Placeholder until the randomized solver lands: refuses instead of answering wrongly.
sm_status sm_rsvd(const float *A, int64_t m, int64_t n, int64_t lda, int64_t r, int64_t p,
                  int q, uint64_t seed, float *U, float *S, float *Vt) {
    (void)A, (void)m, (void)n, (void)lda, (void)r, (void)p, (void)q, (void)seed;
    (void)U, (void)S, (void)Vt;
    return sm_fail(SM_ERR_UNSUPPORTED, "randomized SVD is not built yet");
}
