// kron:a=PxQ[,terms=S][,dtype=..]
// W (m, n) ~ sum_s A_s kron B_s with A_s (P, Q) and B_s (Mb, Nb) = (m/P, n/Q):
//   W[p Mb + i][q Nb + j] = sum_s A_s[p][q] B_s[i][j].
// Nearest Kronecker product (Van Loan and Pitsianis): the rearrangement
//   R[p Q + q][i Nb + j] = W[p Mb + i][q Nb + j]     (P Q, Mb Nb)
// maps sum_s A_s kron B_s to sum_s vec(A_s) vec(B_s)^T and preserves the Frobenius norm, so the
// rank-S truncated SVD of R gives the optimal terms (Eckart-Young); the singular values are split
// evenly (A_s = sqrt(sigma_s) u_s, B_s = sqrt(sigma_s) v_s).
// apply never forms W: with x reshaped as X (Q, Nb), y reshaped as (P, Mb) = sum_s A_s X B_s^T,
// computed in whichever order costs fewer multiply-adds:
//   order 1 (B first): S (n Mb + m Q) per row;  order 2 (A first): S (n P + m Nb) per row.
// Parts: "A" (S, P, Q), "B" (S, Mb, Nb) (q8/q4: ".codes"/".scales" over (S P, Q) and (S Mb, Nb)).
#include "op_impl.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>


typedef struct kron {
    int64_t P, Q, S, Mb, Nb;
    bool a_first; // order 2
    sm_factor A;  // (S P, Q): A_s = rows [s P, (s+1) P)
    sm_factor B;  // (S Mb, Nb): B_s = rows [s Mb, (s+1) Mb)
} kron;

#define KR(op) ((kron *)(op)->impl)

static void kron_free(void *impl) {
    kron *k = impl;
    sm_factor_free(&k->A);
    sm_factor_free(&k->B);
    free(k);
}

static sm_status kron_sizes(const sm_term *t, int64_t m, int64_t n, int64_t *P, int64_t *Q,
                            int64_t *S) {
    bool present;
    sm_status st = sm_term_dims(t, "a", P, Q, &present);
    if (st != SM_OK) return st;
    if (!present)
        return sm_fail(SM_ERR_SPEC, "kron: needs a=PxQ, the shape of the left factor A (P | out, "
                                    "Q | in)");
    if (m % *P || n % *Q)
        return sm_fail(SM_ERR_SPEC,
                       "kron: a=%lldx%lld does not divide the %lldx%lld matrix "
                       "(P must divide out=%lld and Q must divide in=%lld)",
                       (long long)*P, (long long)*Q, (long long)m, (long long)n, (long long)m,
                       (long long)n);
    int64_t pq = *P * *Q, mn = (m / *P) * (n / *Q), max = pq < mn ? pq : mn;
    st = sm_term_int(t, "terms", 1, 1, INT64_MAX, S);
    if (st != SM_OK) return st;
    if (*S > max)
        return sm_fail(SM_ERR_SPEC,
                       "kron: terms=%lld is too many for a=%lldx%lld on a %lldx%lld "
                       "matrix (at most min(P Q, (m/P)(n/Q)) = %lld)",
                       (long long)*S, (long long)*P, (long long)*Q, (long long)m, (long long)n,
                       (long long)max);
    // S times a side of A or B is a BLAS dimension or leading dimension in apply.
    int64_t side = *P > *Q ? *P : *Q, bside = m / *P > n / *Q ? m / *P : n / *Q;
    if (side < bside) side = bside;
    if (*S > INT_MAX / side)
        return sm_fail(SM_ERR_UNSUPPORTED, "kron: terms=%lld with a=%lldx%lld on a %lldx%lld "
                       "matrix needs BLAS dimensions over %d", (long long)*S, (long long)*P,
                       (long long)*Q, (long long)m, (long long)n, INT_MAX);
    return SM_OK;
}

static kron *kron_new(int64_t P, int64_t Q, int64_t S, int64_t m, int64_t n) {
    kron *k = calloc(1, sizeof *k);
    if (k) {
        k->P = P;
        k->Q = Q;
        k->S = S;
        k->Mb = m / P;
        k->Nb = n / Q;
        int64_t c1 = S * (n * k->Mb + m * Q), c2 = S * (n * P + m * k->Nb);
        k->a_first = c2 < c1;
    }
    return k;
}

static sm_status kron_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    (void)o;
    int64_t P, Q, S, m = op->m, n = op->n;
    sm_store store;
    sm_status st = kron_sizes(t, m, n, &P, &Q, &S);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    kron *k = kron_new(P, Q, S, m, n);
    int64_t Mb = m / P, Nb = n / Q, PQ = P * Q, MN = Mb * Nb;
    float *R = sm_alloc((size_t)(m * n) * sizeof(float));  // (P Q, Mb Nb)
    float *L = sm_alloc((size_t)(PQ * S) * sizeof(float)); // (P Q, S)
    float *A = sm_alloc((size_t)(S * PQ) * sizeof(float)); // (S P, Q)
    float *B = sm_alloc((size_t)(S * MN) * sizeof(float)); // (S Mb, Nb)
    if (!k || !R || !L || !A || !B) {
        free(k), sm_free(R), sm_free(L), sm_free(A), sm_free(B);
        return sm_fail(SM_ERR_ALLOC, "kron: out of memory");
    }
    for (int64_t p = 0; p < P; p++)
        for (int64_t q = 0; q < Q; q++)
            for (int64_t i = 0; i < Mb; i++)
                memcpy(R + (p * Q + q) * MN + i * Nb, W + (p * Mb + i) * n + q * Nb,
                       (size_t)Nb * sizeof(float));
    st = sm_lowrank_factors(R, PQ, MN, MN, S, NULL, L, S, B, MN);
    if (st == SM_OK)
        for (int64_t s = 0; s < S; s++)
            for (int64_t pq = 0; pq < PQ; pq++) A[s * PQ + pq] = L[pq * S + s];
    if (st == SM_OK) st = sm_factor_init(&k->A, S * P, Q, store, A, Q);
    if (st == SM_OK) st = sm_factor_init(&k->B, S * Mb, Nb, store, B, Nb);
    sm_free(R), sm_free(L), sm_free(A), sm_free(B);
    if (st != SM_OK) {
        kron_free(k);
        return st;
    }
    op->impl = k;
    sm_canon c;
    sm_canon_init(&c, "kron");
    sm_canon_add(&c, "a", "%lldx%lld", (long long)P, (long long)Q);
    if (S != 1) sm_canon_add(&c, "terms", "%lld", (long long)S);
    if (store != SM_STORE_F32) sm_canon_add(&c, "dtype", "%s", sm_store_name(store));
    return sm_op_set_spec(op, &c);
}

static sm_status kron_load(sm_op *op, const sm_term *t, const sm_part *parts, int nparts) {
    int64_t P, Q, S;
    sm_store store;
    sm_status st = kron_sizes(t, op->m, op->n, &P, &Q, &S);
    if (st == SM_OK) st = sm_store_from_term(t, &store);
    if (st != SM_OK) return st;
    kron *k = kron_new(P, Q, S, op->m, op->n);
    if (!k) return sm_fail(SM_ERR_ALLOC, "out of memory");
    st = sm_factor_load_3d(&k->A, S, P, Q, store, "A", parts, nparts);
    if (st == SM_OK) st = sm_factor_load_3d(&k->B, S, k->Mb, k->Nb, store, "B", parts, nparts);
    if (st != SM_OK) {
        kron_free(k);
        return st;
    }
    op->impl = k;
    return SM_OK;
}

// Scratch: the decoded A (S P Q) and its rearrangement (S P Q), the intermediate (order 1:
// N Q S Mb; order 2: N P S Nb), then B's scratch.
static size_t kron_workspace(const sm_op *op, int64_t N) {
    const kron *k = KR(op);
    int64_t mid = k->a_first ? N * k->P * k->S * k->Nb : N * k->Q * k->S * k->Mb;
    return (size_t)(2 * k->S * k->P * k->Q + mid) + sm_factor_workspace(&k->B, N);
}

// Decodes A into a (S P Q floats) and writes the rearrangement order 1 or 2 uses into out:
//   order 1: A1 (P, Q S), A1[p][q S + s] = A_s[p][q]
//   order 2: A2 (P S, Q), A2[p S + s][q] = A_s[p][q]
static void kron_rearrange_a(const kron *k, float *a, float *out) {
    int64_t P = k->P, Q = k->Q, S = k->S;
    sm_factor_decode(&k->A, a, Q);
    for (int64_t s = 0; s < S; s++)
        for (int64_t p = 0; p < P; p++)
            for (int64_t q = 0; q < Q; q++) {
                float v = a[(s * P + p) * Q + q];
                if (k->a_first)
                    out[(p * S + s) * Q + q] = v;
                else
                    out[p * Q * S + q * S + s] = v;
            }
}

static void kron_apply(const sm_op *op, int64_t N, const float *X, float *Y, float *work) {
    const kron *k = KR(op);
    int64_t P = k->P, Q = k->Q, S = k->S, Mb = k->Mb, Nb = k->Nb;
    float *a = work, *Ar = a + S * P * Q, *Z = Ar + S * P * Q;
    kron_rearrange_a(k, a, Ar);
    if (!k->a_first) {
        float *sub = Z + N * Q * S * Mb;
        // Z (N Q, S Mb) = X as (N Q, Nb) times B^T: Z[b Q + q][s Mb + i] = (X_b B_s^T)[q][i]
        sm_factor_mm(&k->B, N * Q, X, Nb, Z, S * Mb, 0.0f, sub);
        // Y_b (P, Mb) = A1 (P, Q S) Z_b (Q S, Mb), Z_b rows q S + s
        for (int64_t b = 0; b < N; b++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)P, (int)Mb, (int)(Q * S),
                        1.0f, Ar, (int)(Q * S), Z + b * Q * S * Mb, (int)Mb, 0.0f, Y + b * op->m,
                        (int)Mb);
    } else {
        float *sub = Z + N * P * S * Nb;
        // Z_b (P S, Nb) = A2 (P S, Q) X_b (Q, Nb): Z[b P + p][s Nb + j] = (A_s X_b)[p][j]
        for (int64_t b = 0; b < N; b++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(P * S), (int)Nb, (int)Q,
                        1.0f, Ar, (int)Q, X + b * op->n, (int)Nb, 0.0f, Z + b * P * S * Nb,
                        (int)Nb);
        // Y as (N P, Mb) = sum_s Z_s (N P, Nb) B_s^T
        for (int64_t s = 0; s < S; s++) {
            sm_factor Bs = sm_factor_rows(&k->B, s * Mb, (s + 1) * Mb);
            sm_factor_mm(&Bs, N * P, Z + s * Nb, S * Nb, Y, Mb, s ? 1.0f : 0.0f, sub);
        }
    }
}

static void kron_apply_t(const sm_op *op, int64_t N, const float *Y, float *X, float *work) {
    const kron *k = KR(op);
    int64_t P = k->P, Q = k->Q, S = k->S, Mb = k->Mb, Nb = k->Nb;
    float *a = work, *Ar = a + S * P * Q, *Z = Ar + S * P * Q;
    kron_rearrange_a(k, a, Ar);
    if (!k->a_first) {
        float *sub = Z + N * Q * S * Mb;
        // Z_b (Q S, Mb) = A1^T (Q S, P) Y_b (P, Mb)
        for (int64_t b = 0; b < N; b++)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(Q * S), (int)Mb, (int)P,
                        1.0f, Ar, (int)(Q * S), Y + b * op->m, (int)Mb, 0.0f, Z + b * Q * S * Mb,
                        (int)Mb);
        // X as (N Q, Nb) = Z (N Q, S Mb) B (S Mb, Nb)
        sm_factor_mm_t(&k->B, N * Q, Z, S * Mb, X, Nb, 0.0f, sub);
    } else {
        float *sub = Z + N * P * S * Nb;
        // Z[:, s Nb ..] (N P, Nb) = Y as (N P, Mb) times B_s
        for (int64_t s = 0; s < S; s++) {
            sm_factor Bs = sm_factor_rows(&k->B, s * Mb, (s + 1) * Mb);
            sm_factor_mm_t(&Bs, N * P, Y, Mb, Z + s * Nb, S * Nb, 0.0f, sub);
        }
        // X_b (Q, Nb) = A2^T (Q, P S) Z_b (P S, Nb)
        for (int64_t b = 0; b < N; b++)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Q, (int)Nb, (int)(P * S),
                        1.0f, Ar, (int)Q, Z + b * P * S * Nb, (int)Nb, 0.0f, X + b * op->n,
                        (int)Nb);
    }
}

static sm_status kron_to_dense(const sm_op *op, float *W) {
    const kron *k = KR(op);
    int64_t P = k->P, Q = k->Q, S = k->S, Mb = k->Mb, Nb = k->Nb, n = op->n;
    float *A = sm_alloc((size_t)(S * P * Q) * sizeof(float));
    float *B = sm_alloc((size_t)(S * Mb * Nb) * sizeof(float));
    if (!A || !B) {
        sm_free(A), sm_free(B);
        return sm_fail(SM_ERR_ALLOC, "kron: out of memory in to_dense");
    }
    sm_factor_decode(&k->A, A, Q);
    sm_factor_decode(&k->B, B, Nb);
    memset(W, 0, (size_t)(op->m * n) * sizeof(float));
    for (int64_t s = 0; s < S; s++)
        for (int64_t p = 0; p < P; p++)
            for (int64_t q = 0; q < Q; q++) {
                float c = A[(s * P + p) * Q + q];
                for (int64_t i = 0; i < Mb; i++) {
                    const float *b = B + (s * Mb + i) * Nb;
                    float *w = W + (p * Mb + i) * n + q * Nb;
                    for (int64_t j = 0; j < Nb; j++) w[j] += c * b[j];
                }
            }
    sm_free(A), sm_free(B);
    return SM_OK;
}

static int64_t kron_nparams(const sm_op *op) {
    const kron *k = KR(op);
    return k->S * (k->P * k->Q + k->Mb * k->Nb);
}

static int64_t kron_nbytes(const sm_op *op) {
    return sm_factor_nbytes(&KR(op)->A) + sm_factor_nbytes(&KR(op)->B);
}

// The multiply-adds of the sgemm calls of apply (decoding A is not counted: it is S P Q copies).
static int64_t kron_macs(const sm_op *op) {
    const kron *k = KR(op);
    return k->a_first ? k->S * (op->n * k->P + op->m * k->Nb)
                      : k->S * (op->n * k->Mb + op->m * k->Q);
}

static int kron_parts(const sm_op *op, sm_part *out, int cap) {
    const kron *k = KR(op);
    int a = sm_factor_parts_3d(&k->A, "A", k->S, k->P, NULL);
    int b = sm_factor_parts_3d(&k->B, "B", k->S, k->Mb, NULL);
    if (out && cap >= a + b) {
        sm_factor_parts_3d(&k->A, "A", k->S, k->P, out);
        sm_factor_parts_3d(&k->B, "B", k->S, k->Mb, out + a);
    }
    return a + b;
}

const sm_op_vtbl sm_vtbl_kron = {
    .name = "kron",
    .keys = "a,terms,dtype",
    .help = "  a=PxQ        shape of the left factors A_s (required; P | out, Q | in); B_s is\n"
            "               (out/P, in/Q)\n"
            "  terms=1      number S of Kronecker products summed (S <= min(P Q, (m/P)(n/Q)))\n"
            "  dtype=f32    factor storage: f32, f16, bf16, q8, q4",
    .fit = kron_fit,
    .load = kron_load,
    .apply = kron_apply,
    .apply_t = kron_apply_t,
    .workspace = kron_workspace,
    .to_dense = kron_to_dense,
    .nparams = kron_nparams,
    .nbytes = kron_nbytes,
    .macs = kron_macs,
    .parts = kron_parts,
    .free_impl = kron_free,
};
