// The golden checkpoint tests/golden/ops-v1.safetensors keeps the operator file format
// (docs/format.md) from drifting. It holds one operator per structure and factor dtype, fitted on
// small fixed matrices and written by sm_ops_save, plus for each operator "<name>" its dense
// matrix "expected.<name>" (F32) and the matrix it was fitted on "input.<x>" (F32). The extra
// tensors are named outside every operator's "<name>." prefix, where sm_op_load would take them
// for stray parts and refuse the operator.
//
// The test only reads the file. For every operator it
//  1. rebuilds the dense matrix from the stored tensors alone, in double, by the layouts
//     docs/format.md gives (nothing from src/ops), and finds it equal to "expected.<name>": the
//     file and the documentation agree;
//  2. loads the operator with sm_op_load and checks its canonical spec and that sm_op_to_dense is
//     "expected.<name>" (bit for bit where it is a pure decode, at every kernel level): this
//     build reads version-1 files as they were meant;
//  3. fits the same spec afresh on the stored input and checks that the parts have exactly the
//     golden names, dtypes and shapes, and that the matrix is close to the golden one: this
//     build still writes what version 1 says;
// and it saves the loaded operators again and finds their tensors and metadata unchanged.
//
// The file is regenerated (on purpose only; see docs/format.md, "The golden checkpoint") by
//     ./build/test_golden --regenerate tests/golden/ops-v1.safetensors [--force]
// and `./build/test_golden PATH` checks another file against the same table.
#include "testutil.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#define GOLDEN_PATH "tests/golden/ops-v1.safetensors"
#define QGROUP 64 // columns per F16 scale of q8/q4 factors (docs/format.md)

// Out of memory or a broken table in a test: stop here.
#define NEED(cond)                                                                                 \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);                             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

// The matrices operators are fitted on: W = sum_t 0.7^t a_t b_t^T + 0.02 noise, so the leading
// singular values are well apart and a fresh fit on another CPU lands near the golden one.
typedef struct golden_input {
    const char *name;
    int64_t m, n;
    unsigned seed;
} golden_input;

static const golden_input k_inputs[] = {
    {"input.a", 48, 32, 11},
    {"input.b", 32, 64, 12},
    {"input.c", 16, 71, 13}, // 71 columns: two scale groups, the last one short; odd q4 rows
};
#define NINPUTS (int)(sizeof k_inputs / sizeof k_inputs[0])

typedef struct golden_case {
    const char *name;  // operator name in the file
    const char *input; // the matrix it is fitted on
    const char *fit;   // spec given to sm_op_fit
    const char *canon; // the canonical spec it must store and print
    bool decode_only;  // to_dense only decodes factors (bit-exact), no products
    double fresh_tol;  // relative Frobenius distance allowed between a fresh fit and the golden
} golden_case;

// fresh_tol: dense and blockdiag fits only copy and round, the same on every CPU, so they must
// match exactly. SVD-based fits of f32 factors differ across CPUs by LAPACK/BLAS rounding over the
// singular-value gaps of these matrices: run under valgrind (which hides AVX-512, so OpenBLAS takes
// other kernels) the fitted factors moved by at most 1.4e-6 relative. A rounded factor (f16,
// bf16, q8, q4) can in addition flip one stored value where the fit lands on a rounding boundary
// (none did there): one q4 step in a 48x32 matrix is about 1% of its norm, so those allow a few
// such flips and no more.
static const golden_case k_cases[] = {
    {"dense_f32.weight", "input.a", "dense", "dense", true, 0},
    {"dense_f16.weight", "input.a", "dense:dtype=f16", "dense:dtype=f16", true, 0},
    {"dense_bf16.weight", "input.b", "dense:dtype=bf16", "dense:dtype=bf16", true, 0},
    {"dense_q8.weight", "input.c", "dense:dtype=q8", "dense:dtype=q8", true, 0},
    {"dense_q4.weight", "input.c", "dense:dtype=q4", "dense:dtype=q4", true, 0},
    {"lowrank_f32.weight", "input.a", "lowrank:ratio=0.25", "lowrank:rank=4", false, 1e-4},
    {"lowrank_q4.weight", "input.c", "lowrank:rank=3,dtype=q4", "lowrank:rank=3,dtype=q4", false,
     0.03},
    {"monarch.weight", "input.b", "monarch:blocks=4", "monarch:blocks=4,rank=2", false, 1e-4},
    {"monarch_q8.weight", "input.a", "monarch:blocks=2,ratio=0.5,dtype=q8",
     "monarch:blocks=2,rank=4,dtype=q8", false, 0.01},
    {"blockdiag_bf16.weight", "input.a", "blockdiag:blocks=4,dtype=bf16",
     "blockdiag:blocks=4,dtype=bf16", true, 0},
    {"blocklowrank.weight", "input.b", "blocklowrank:blocks=2,rank=3",
     "blocklowrank:blocks=2,rank=3", false, 1e-4},
    {"kron.weight", "input.a", "kron:a=6x4,terms=2", "kron:a=6x4,terms=2", false, 1e-4},
    {"kron_f16.weight", "input.b", "kron:a=2x16,dtype=f16", "kron:a=2x16,dtype=f16", false, 0.01},
    {"sum.weight", "input.b", "lowrank:rank=2+dense:dtype=q4", "lowrank:rank=2+dense:dtype=q4",
     false, 0.03},
    // Added later (the entries above were kept bit for bit). BLAST's gradient iterations carry
    // rounding differences further than one SVD does, so a few iterations only and a looser bound.
    {"blast.weight", "input.a", "blast:blocks=2,rank=4,perm=stride,iters=10",
     "blast:blocks=2,rank=4,perm=stride,iters=10", false, 1e-3},
    {"blast_q8.weight", "input.b", "blast:blocks=4,rank=3,iters=10,dtype=q8",
     "blast:blocks=4,rank=3,iters=10,dtype=q8", false, 0.02},
    {"sparse_bitmap.weight", "input.a", "sparse:density=0.5", "sparse:density=0.5,format=bitmap",
     true, 0},
    {"sparse_csr.weight", "input.c", "sparse:density=0.05,format=csr",
     "sparse:density=0.05,format=csr", true, 0},
    {"sparse_nm.weight", "input.b", "sparse:nm=2:4", "sparse:nm=2:4", true, 0},
    {"cur.weight", "input.a", "cur:rank=4", "cur:rank=4", false, 1e-4},
    {"cur_bf16.weight", "input.c", "cur:rank=3,select=leverage,dtype=bf16",
     "cur:rank=3,select=leverage,dtype=bf16", false, 0.01},
};
#define NCASES (int)(sizeof k_cases / sizeof k_cases[0])

// --- an independent reader of the documented layouts ------------------------------------------

static double half_to_double(uint16_t h) {
    int e = (h >> 10) & 31, f = h & 1023;
    double v = e == 0 ? ldexp(f, -24) : e == 31 ? (f ? NAN : INFINITY) : ldexp(f + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

static double bf16_to_double(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t load_u16(const void *p, int64_t i) {
    uint16_t v;
    memcpy(&v, (const unsigned char *)p + 2 * i, 2); // file data need not be aligned
    return v;
}

// The tensor `name` if it has this dtype and shape; NULL (and a failure) otherwise.
static const sm_tensor_info *want_tensor(const sm_st *st, const char *name, sm_dtype dt, int ndim,
                                         const int64_t *shape) {
    const sm_tensor_info *t = sm_st_find(st, name);
    bool ok = t && t->dtype == dt && t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        fprintf(stderr, "golden: tensor %s is %s, expected %s with %d dims [%lld, %lld, ...]\n",
                name, t ? t->dtype_name : "absent", sm_dtype_name(dt), ndim, (long long)shape[0],
                (long long)shape[1]);
        g_failures++;
        return NULL;
    }
    return t;
}

// Factor `<op>.<part>` of (rows, cols) decoded to double by docs/format.md: a plain tensor of
// shape `dims` (ndim of them, product rows x cols) for f32/f16/bf16; for q8/q4 "<part>.codes"
// (I8 (rows, cols), or U8 (rows, ceil(cols/2)) with the even column in the low nibble) and
// "<part>.scales" (F16 (rows, ceil(cols/64))), w = scale * code. NULL when the tensors are not
// as documented.
static double *ref_factor(const sm_st *st, const char *op, const char *part, const char *dtype,
                          int64_t rows, int64_t cols, int ndim, const int64_t *dims) {
    char name[256], sname[256];
    snprintf(name, sizeof name, "%s.%s", op, part);
    double *out = malloc(sizeof(double) * (size_t)(rows * cols));
    if (!out) return NULL;
    bool q8 = !strcmp(dtype, "q8"), q4 = !strcmp(dtype, "q4");
    if (!q8 && !q4) {
        sm_dtype dt = !strcmp(dtype, "f16")    ? SM_DTYPE_F16
                      : !strcmp(dtype, "bf16") ? SM_DTYPE_BF16
                                               : SM_DTYPE_F32;
        const sm_tensor_info *t = want_tensor(st, name, dt, ndim, dims);
        if (!t) return free(out), NULL;
        for (int64_t i = 0; i < rows * cols; i++) {
            if (dt == SM_DTYPE_F32) {
                float f;
                memcpy(&f, (const unsigned char *)t->data + 4 * i, 4);
                out[i] = f;
            } else {
                uint16_t h = load_u16(t->data, i);
                out[i] = dt == SM_DTYPE_F16 ? half_to_double(h) : bf16_to_double(h);
            }
        }
        return out;
    }
    int64_t ng = (cols + QGROUP - 1) / QGROUP, rb = q4 ? (cols + 1) / 2 : cols;
    int64_t cshape[2] = {rows, rb}, sshape[2] = {rows, ng};
    snprintf(sname, sizeof sname, "%s.%s.scales", op, part);
    snprintf(name, sizeof name, "%s.%s.codes", op, part);
    const sm_tensor_info *c = want_tensor(st, name, q4 ? SM_DTYPE_U8 : SM_DTYPE_I8, 2, cshape);
    const sm_tensor_info *s = want_tensor(st, sname, SM_DTYPE_F16, 2, sshape);
    if (!c || !s) return free(out), NULL;
    const unsigned char *codes = c->data;
    bool bad_pad = false;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < cols; j++) {
            int q;
            if (q8) {
                q = (int8_t)codes[r * rb + j];
            } else {
                int nib = (codes[r * rb + j / 2] >> (4 * (j & 1))) & 15;
                q = nib >= 8 ? nib - 16 : nib;
            }
            out[r * cols + j] = half_to_double(load_u16(s->data, r * ng + j / QGROUP)) * q;
        }
        if (q4 && (cols & 1) && (codes[r * rb + rb - 1] >> 4) != 0 && !bad_pad) {
            fprintf(stderr, "golden: %s row %lld: the unused high nibble is not 0\n", name,
                    (long long)r);
            g_failures++;
            bad_pad = true;
        }
    }
    return out;
}

// The integer value of key= in one term of a spec ("rank=4"), or def when absent.
static int64_t term_int(const char *term, const char *key, int64_t def) {
    char pat[32];
    snprintf(pat, sizeof pat, "%s=", key);
    for (const char *p = strchr(term, ':'); p && *p; p = strchr(p + 1, ',')) {
        if (!strncmp(p + 1, pat, strlen(pat))) return strtoll(p + 1 + strlen(pat), NULL, 10);
    }
    return def;
}

static void term_dtype(const char *term, char *out) {
    const char *p = strstr(term, "dtype=");
    snprintf(out, 8, "%s", p ? p + 6 : "f32");
    out[strcspn(out, ",")] = 0;
}

// Adds one term's matrix (m, n) to val and the sum of the magnitudes of its products to bnd
// (a bound that scales the rounding error of a float evaluation). False when the tensors are not
// as documented.
static bool ref_term(const sm_st *st, const char *op, const char *prefix, const char *term,
                     int64_t m, int64_t n, double *val, double *bnd) {
    char dt[8], name[32];
    term_dtype(term, dt);
    snprintf(name, sizeof name, "%.*s", (int)strcspn(term, ":"), term);
    char p1[64], p2[64];
    bool ok = true;
    if (!strcmp(name, "dense")) {
        snprintf(p1, sizeof p1, "%sW", prefix);
        double *W = ref_factor(st, op, p1, dt, m, n, 2, (int64_t[]){m, n});
        if (!W) return false;
        for (int64_t i = 0; i < m * n; i++) val[i] += W[i], bnd[i] += fabs(W[i]);
        free(W);
    } else if (!strcmp(name, "lowrank")) { // W = U (m, r) V (r, n)
        int64_t r = term_int(term, "rank", 0);
        snprintf(p1, sizeof p1, "%sU", prefix);
        snprintf(p2, sizeof p2, "%sV", prefix);
        double *U = ref_factor(st, op, p1, dt, m, r, 2, (int64_t[]){m, r});
        double *V = ref_factor(st, op, p2, dt, r, n, 2, (int64_t[]){r, n});
        ok = U && V;
        for (int64_t i = 0; ok && i < m; i++)
            for (int64_t j = 0; j < n; j++)
                for (int64_t t = 0; t < r; t++) {
                    double x = U[i * r + t] * V[t * n + j];
                    val[i * n + j] += x, bnd[i * n + j] += fabs(x);
                }
        free(U), free(V);
    } else if (!strcmp(name, "monarch")) {
        // W[i K + l][k p + c] = sum_t f2[l][i][k T + t] f1[k][t K + l][c]
        int64_t K = term_int(term, "blocks", 0), T = term_int(term, "rank", 0);
        int64_t p = n / K, s = m / K, Q = K * T;
        snprintf(p1, sizeof p1, "%sf1", prefix);
        snprintf(p2, sizeof p2, "%sf2", prefix);
        double *f1 = ref_factor(st, op, p1, dt, K * Q, p, 3, (int64_t[]){K, Q, p});
        double *f2 = ref_factor(st, op, p2, dt, m, Q, 3, (int64_t[]){K, s, Q});
        ok = f1 && f2;
        for (int64_t k = 0; ok && k < K; k++)
            for (int64_t l = 0; l < K; l++)
                for (int64_t i = 0; i < s; i++)
                    for (int64_t c = 0; c < p; c++)
                        for (int64_t t = 0; t < T; t++) {
                            double x =
                                f2[(l * s + i) * Q + k * T + t] * f1[(k * Q + t * K + l) * p + c];
                            val[(i * K + l) * n + k * p + c] += x;
                            bnd[(i * K + l) * n + k * p + c] += fabs(x);
                        }
        free(f1), free(f2);
    } else if (!strcmp(name, "blockdiag")) { // W[i mb + r][i nb + c] = D[i][r][c]
        int64_t K = term_int(term, "blocks", 0), mb = m / K, nb = n / K;
        snprintf(p1, sizeof p1, "%sD", prefix);
        double *D = ref_factor(st, op, p1, dt, m, nb, 3, (int64_t[]){K, mb, nb});
        if (!D) return false;
        for (int64_t i = 0; i < K; i++)
            for (int64_t r = 0; r < mb; r++)
                for (int64_t c = 0; c < nb; c++) {
                    double x = D[(i * mb + r) * nb + c];
                    val[(i * mb + r) * n + i * nb + c] += x;
                    bnd[(i * mb + r) * n + i * nb + c] += fabs(x);
                }
        free(D);
    } else if (!strcmp(name, "blocklowrank")) {
        // W[i mb + r][j nb + c] = sum_t U[i][r][j T + t] V[j][i T + t][c]
        int64_t K = term_int(term, "blocks", 0), T = term_int(term, "rank", 0);
        int64_t mb = m / K, nb = n / K, KT = K * T;
        snprintf(p1, sizeof p1, "%sU", prefix);
        snprintf(p2, sizeof p2, "%sV", prefix);
        double *U = ref_factor(st, op, p1, dt, m, KT, 3, (int64_t[]){K, mb, KT});
        double *V = ref_factor(st, op, p2, dt, K * KT, nb, 3, (int64_t[]){K, KT, nb});
        ok = U && V;
        for (int64_t i = 0; ok && i < K; i++)
            for (int64_t j = 0; j < K; j++)
                for (int64_t r = 0; r < mb; r++)
                    for (int64_t c = 0; c < nb; c++)
                        for (int64_t t = 0; t < T; t++) {
                            double x =
                                U[(i * mb + r) * KT + j * T + t] * V[(j * KT + i * T + t) * nb + c];
                            val[(i * mb + r) * n + j * nb + c] += x;
                            bnd[(i * mb + r) * n + j * nb + c] += fabs(x);
                        }
        free(U), free(V);
    } else if (!strcmp(name, "kron")) {
        // W[p Mb + i][q Nb + j] = sum_s A[s][p][q] B[s][i][j]
        long long P = 0, Q = 0;
        const char *a = strstr(term, "a=");
        if (!a || sscanf(a + 2, "%lldx%lld", &P, &Q) != 2) return false;
        int64_t S = term_int(term, "terms", 1), Mb = m / P, Nb = n / Q;
        snprintf(p1, sizeof p1, "%sA", prefix);
        snprintf(p2, sizeof p2, "%sB", prefix);
        double *A = ref_factor(st, op, p1, dt, S * P, Q, 3, (int64_t[]){S, P, Q});
        double *B = ref_factor(st, op, p2, dt, S * Mb, Nb, 3, (int64_t[]){S, Mb, Nb});
        ok = A && B;
        for (int64_t s = 0; ok && s < S; s++)
            for (int64_t pp = 0; pp < P; pp++)
                for (int64_t qq = 0; qq < Q; qq++)
                    for (int64_t i = 0; i < Mb; i++)
                        for (int64_t j = 0; j < Nb; j++) {
                            double x = A[(s * P + pp) * Q + qq] * B[(s * Mb + i) * Nb + j];
                            val[(pp * Mb + i) * n + qq * Nb + j] += x;
                            bnd[(pp * Mb + i) * n + qq * Nb + j] += fabs(x);
                        }
        free(A), free(B);
    } else if (!strcmp(name, "blast")) {
        // W[row(i, a)][j q + c] = sum_r U[i][a][r] S[i][j][r] V[j][r][c], row(i, a) = i p + a
        // or (perm=stride) a B + i
        int64_t B = term_int(term, "blocks", 0), R = term_int(term, "rank", 0);
        int64_t p = m / B, q = n / B;
        bool stride = strstr(term, "perm=stride") != NULL;
        char p3[64];
        snprintf(p1, sizeof p1, "%sU", prefix);
        snprintf(p2, sizeof p2, "%sV", prefix);
        snprintf(p3, sizeof p3, "%sS", prefix);
        double *U = ref_factor(st, op, p1, dt, m, R, 3, (int64_t[]){B, p, R});
        double *V = ref_factor(st, op, p2, dt, B * R, q, 3, (int64_t[]){B, R, q});
        double *S = ref_factor(st, op, p3, "f32", B * B, R, 3, (int64_t[]){B, B, R});
        ok = U && V && S;
        for (int64_t i = 0; ok && i < B; i++)
            for (int64_t j = 0; j < B; j++)
                for (int64_t a = 0; a < p; a++)
                    for (int64_t c = 0; c < q; c++)
                        for (int64_t r = 0; r < R; r++) {
                            int64_t row = stride ? a * B + i : i * p + a;
                            double x = U[(i * p + a) * R + r] * S[(i * B + j) * R + r] *
                                       V[(j * R + r) * q + c];
                            val[row * n + j * q + c] += x;
                            bnd[row * n + j * q + c] += fabs(x);
                        }
        free(U), free(V), free(S);
    } else if (!strcmp(name, "sparse")) {
        // bitmap/nm: bit c % 8 of mask[i][c / 8] marks a stored entry, values in row-major
        // order; csr: indptr (m + 1), indices U16 (n <= 65536), values
        char nm[64], pv[64];
        snprintf(pv, sizeof pv, "%s.%svalues", op, prefix);
        const char *nmk = strstr(term, "nm=");
        long long N = 0, M = 0;
        if (nmk && sscanf(nmk + 3, "%lld:%lld", &N, &M) != 2) return false;
        if (strstr(term, "format=csr")) {
            char pi[64];
            snprintf(nm, sizeof nm, "%s.%sindptr", op, prefix);
            snprintf(pi, sizeof pi, "%s.%sindices", op, prefix);
            const sm_tensor_info *tp = want_tensor(st, nm, SM_DTYPE_I32, 1, (int64_t[]){m + 1});
            if (!tp) return false;
            int32_t nnz;
            memcpy(&nnz, (const char *)tp->data + 4 * m, 4);
            const sm_tensor_info *ti = want_tensor(st, pi, SM_DTYPE_U16, 1, (int64_t[]){nnz});
            const sm_tensor_info *tv = want_tensor(st, pv, SM_DTYPE_F32, 1, (int64_t[]){nnz});
            if (!ti || !tv) return false;
            for (int64_t i = 0; i < m; i++) {
                int32_t k0, k1;
                memcpy(&k0, (const char *)tp->data + 4 * i, 4);
                memcpy(&k1, (const char *)tp->data + 4 * (i + 1), 4);
                for (int32_t k = k0; k < k1; k++) {
                    int64_t c = load_u16(ti->data, k);
                    float x;
                    memcpy(&x, (const char *)tv->data + 4 * (int64_t)k, 4);
                    if (c >= n || (k > k0 && c <= load_u16(ti->data, k - 1))) return false;
                    val[i * n + c] += x, bnd[i * n + c] += fabs(x);
                }
            }
        } else {
            int64_t mb = (n + 7) / 8;
            snprintf(nm, sizeof nm, "%s.%smask", op, prefix);
            const sm_tensor_info *tm = want_tensor(st, nm, SM_DTYPE_U8, 2, (int64_t[]){m, mb});
            if (!tm) return false;
            const unsigned char *mask = tm->data;
            int64_t nnz = 0;
            for (int64_t k = 0; k < m * mb; k++) nnz += __builtin_popcount(mask[k]);
            const sm_tensor_info *tv =
                M ? want_tensor(st, pv, SM_DTYPE_F32, 2, (int64_t[]){m, n / M * N})
                  : want_tensor(st, pv, SM_DTYPE_F32, 1, (int64_t[]){nnz});
            if (!tv) return false;
            int64_t k = 0;
            for (int64_t i = 0; i < m; i++) {
                int64_t row = 0;
                for (int64_t c = 0; c < n; c++) {
                    if (!((mask[i * mb + c / 8] >> (c % 8)) & 1)) continue;
                    float x;
                    memcpy(&x, (const char *)tv->data + 4 * k++, 4);
                    val[i * n + c] += x, bnd[i * n + c] += fabs(x);
                    row++;
                }
                if (M && row != N * (n / M)) return false;
            }
        }
    } else if (!strcmp(name, "cur")) { // W = C (m, r) U (r, r) R (r, n); cols, rows I32 (r)
        int64_t r = term_int(term, "rank", 0);
        char p3[64], ic[64], ir[64];
        snprintf(p1, sizeof p1, "%sC", prefix);
        snprintf(p2, sizeof p2, "%sU", prefix);
        snprintf(p3, sizeof p3, "%sR", prefix);
        snprintf(ic, sizeof ic, "%s.%scols", op, prefix);
        snprintf(ir, sizeof ir, "%s.%srows", op, prefix);
        double *C = ref_factor(st, op, p1, dt, m, r, 2, (int64_t[]){m, r});
        double *U = ref_factor(st, op, p2, "f32", r, r, 2, (int64_t[]){r, r});
        double *R = ref_factor(st, op, p3, dt, r, n, 2, (int64_t[]){r, n});
        ok = C && U && R && want_tensor(st, ic, SM_DTYPE_I32, 1, (int64_t[]){r}) &&
             want_tensor(st, ir, SM_DTYPE_I32, 1, (int64_t[]){r});
        for (int64_t a = 0; ok && a < m; a++)
            for (int64_t b = 0; b < n; b++)
                for (int64_t x = 0; x < r; x++)
                    for (int64_t y = 0; y < r; y++) {
                        double v = C[a * r + x] * U[x * r + y] * R[y * n + b];
                        val[a * n + b] += v, bnd[a * n + b] += fabs(v);
                    }
        free(C), free(U), free(R);
    } else {
        fprintf(stderr, "golden: no reference for structure \"%s\"\n", name);
        return false;
    }
    return ok;
}

// The dense matrix of operator `op` with canonical spec `spec` from the file's tensors: a sum
// "t0+t1+..." stores term i's parts as "i.<part>".
static bool ref_dense(const sm_st *st, const char *op, const char *spec, int64_t m, int64_t n,
                      double *val, double *bnd) {
    memset(val, 0, sizeof(double) * (size_t)(m * n));
    memset(bnd, 0, sizeof(double) * (size_t)(m * n));
    bool sum = strchr(spec, '+') != NULL;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    int i = 0;
    for (char *save = NULL, *t = strtok_r(buf, "+", &save); t; t = strtok_r(NULL, "+", &save)) {
        char prefix[16] = "";
        if (sum) snprintf(prefix, sizeof prefix, "%d.", i);
        if (!ref_term(st, op, prefix, t, m, n, val, bnd)) return false;
        i++;
    }
    return true;
}

// --- inputs ---------------------------------------------------------------------------------

static float *make_input(const golden_input *in) {
    int64_t m = in->m, n = in->n, k = 8;
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    float *a = malloc(sizeof(float) * (size_t)(k * m)),
          *b = malloc(sizeof(float) * (size_t)(k * n));
    NEED(W && a && b);
    fill_random(W, m * n, in->seed);
    fill_random(a, k * m, in->seed + 100);
    fill_random(b, k * n, in->seed + 200);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double w = 0.02 * W[i * n + j];
            for (int64_t t = 0; t < k; t++) w += pow(0.7, (double)t) * a[t * m + i] * b[t * n + j];
            W[i * n + j] = (float)w;
        }
    free(a), free(b);
    return W;
}

// --- checks -----------------------------------------------------------------------------------

static bool has_prefix(const char *s, const char *pre) {
    return strncmp(s, pre, strlen(pre)) == 0;
}

// Whether tensor `t` is a part of operator `op` ("<op>.<part>").
static bool is_part_of(const char *t, const char *op) {
    size_t l = strlen(op);
    return strncmp(t, op, l) == 0 && t[l] == '.';
}

static void check_meta(const sm_st *st, const char *key, const char *want) {
    const char *v = sm_st_meta(st, key);
    if (!v || strcmp(v, want) != 0) {
        fprintf(stderr, "golden: metadata %s = %s, expected %s\n", key, v ? v : "(absent)", want);
        g_failures++;
    }
}

// got (m n) against the expected matrix: bit for bit when exact, else within 1e-6 of the sum of
// the magnitudes of the products (bnd). A float evaluation of a sum of k products errs by at most
// about k * 2^-24 of that sum; k <= 8 here, so 1e-6 holds on any CPU and BLAS, and a wrong layout
// (an entry from the wrong place) is off by the size of the entries themselves.
static void check_dense(const char *what, const float *got, const float *exp, const double *bnd,
                        int64_t count, bool exact) {
    for (int64_t i = 0; i < count; i++) {
        bool ok = exact ? memcmp(&got[i], &exp[i], sizeof(float)) == 0
                        : fabs((double)got[i] - (double)exp[i]) <= 1e-6 * bnd[i];
        if (!ok) {
            fprintf(stderr, "%s: mismatch at %lld: %.9g vs expected %.9g (%s)\n", what,
                    (long long)i, (double)got[i], (double)exp[i],
                    exact ? "bit-exact expected" : "beyond 1e-6 of the product magnitudes");
            g_failures++;
            return;
        }
    }
}

static const sm_tensor_info *f32_matrix(const sm_st *st, const char *name, int64_t m, int64_t n) {
    return want_tensor(st, name, SM_DTYPE_F32, 2, (int64_t[]){m, n});
}

static float *copy_f32(const sm_tensor_info *t) {
    float *x = malloc(t->nbytes ? t->nbytes : 1);
    if (x) memcpy(x, t->data, t->nbytes);
    return x;
}

static const golden_input *find_input(const char *name) {
    for (int i = 0; i < NINPUTS; i++)
        if (!strcmp(k_inputs[i].name, name)) return &k_inputs[i];
    NEED(!"unknown input");
    return NULL;
}

// The fresh fit's parts must be exactly the golden ones: same names, dtypes and shapes.
static void check_fresh_parts(const sm_st *st, const char *name, const sm_op *fresh) {
    sm_part *parts = NULL;
    int np = 0;
    CHECK_OK(sm_op_parts(fresh, &parts, &np));
    int stored = 0;
    for (int i = 0; i < sm_st_count(st); i++) stored += is_part_of(sm_st_get(st, i)->name, name);
    if (stored != np) {
        fprintf(stderr, "golden: %s: a fresh fit has %d parts, the golden file %d\n", name, np,
                stored);
        g_failures++;
    }
    for (int j = 0; j < np; j++) {
        char tn[256];
        snprintf(tn, sizeof tn, "%s.%s", name, parts[j].name);
        const sm_tensor_info *t = sm_st_find(st, tn);
        bool ok = t && t->dtype == parts[j].dtype && t->ndim == parts[j].ndim &&
                  t->nbytes == parts[j].nbytes;
        for (int d = 0; ok && d < t->ndim; d++) ok = t->shape[d] == parts[j].shape[d];
        if (!ok) {
            fprintf(stderr,
                    "golden: %s: a fresh fit writes part %s as %s %dD [%lld, %lld, %lld],"
                    " the golden file as %s %dD [%lld, %lld, %lld]\n",
                    name, parts[j].name, sm_dtype_name(parts[j].dtype), parts[j].ndim,
                    (long long)parts[j].shape[0], (long long)parts[j].shape[1],
                    (long long)(parts[j].ndim > 2 ? parts[j].shape[2] : 0),
                    t ? t->dtype_name : "(absent)", t ? t->ndim : 0,
                    (long long)(t ? t->shape[0] : 0),
                    (long long)(t && t->ndim > 1 ? t->shape[1] : 0),
                    (long long)(t && t->ndim > 2 ? t->shape[2] : 0));
            g_failures++;
        }
    }
    free(parts);
}

static void check_case(const sm_st *st, const golden_case *c, sm_op **loaded) {
    const golden_input *in = find_input(c->input);
    int64_t m = in->m, n = in->n, mn = m * n;
    char key[256], shape[64], what[300];
    snprintf(key, sizeof key, "structmat.spec.%s", c->name);
    check_meta(st, key, c->canon);
    snprintf(key, sizeof key, "structmat.shape.%s", c->name);
    snprintf(shape, sizeof shape, "%lld,%lld", (long long)m, (long long)n);
    check_meta(st, key, shape);
    snprintf(key, sizeof key, "expected.%s", c->name);
    const sm_tensor_info *te = f32_matrix(st, key, m, n), *ti = f32_matrix(st, c->input, m, n);
    if (!te || !ti) return;
    float *exp = copy_f32(te), *input = copy_f32(ti), *got = malloc(sizeof(float) * (size_t)mn);
    double *val = malloc(sizeof(double) * (size_t)mn), *bnd = malloc(sizeof(double) * (size_t)mn);
    NEED(exp && input && got && val && bnd);

    // 1. The documented layouts, applied to the stored tensors, give the stored matrix.
    if (ref_dense(st, c->name, c->canon, m, n, val, bnd)) {
        for (int64_t i = 0; i < mn; i++) got[i] = (float)val[i];
        snprintf(what, sizeof what, "%s: docs/format.md layout vs expected", c->name);
        check_dense(what, got, exp, NULL, mn, true);
    } else {
        fprintf(stderr, "golden: %s: tensors not as docs/format.md says\n", c->name);
        g_failures++;
    }

    // 2. This build loads it and computes the same matrix, at every kernel level.
    sm_op *op = NULL;
    CHECK_OK(sm_op_load(st, c->name, &op));
    if (op) {
        if (strcmp(sm_op_spec(op), c->canon) != 0) {
            fprintf(stderr, "golden: %s loads with spec %s, expected %s\n", c->name, sm_op_spec(op),
                    c->canon);
            g_failures++;
        }
        CHECK(sm_op_rows(op) == m && sm_op_cols(op) == n);
        int64_t bytes = 0;
        for (int i = 0; i < sm_st_count(st); i++)
            if (is_part_of(sm_st_get(st, i)->name, c->name)) bytes += sm_st_get(st, i)->nbytes;
        CHECK(sm_op_nbytes(op) == bytes);
        sm_isa keep = sm_isa_active();
        for (int isa = SM_ISA_SCALAR; isa <= (int)sm_isa_detect(); isa++) {
            CHECK_OK(sm_isa_set((sm_isa)isa));
            CHECK_OK(sm_op_to_dense(op, got));
            snprintf(what, sizeof what, "%s: sm_op_to_dense (%s) vs expected", c->name,
                     sm_isa_name((sm_isa)isa));
            check_dense(what, got, exp, bnd, mn, c->decode_only);
        }
        sm_isa_set(keep);
    }
    *loaded = op;

    // 3. A fresh fit of the same spec writes the same parts and about the same matrix.
    sm_op *fresh = NULL;
    CHECK_OK(sm_op_fit(input, m, n, c->fit, NULL, &fresh));
    if (fresh) {
        if (strcmp(sm_op_spec(fresh), c->canon) != 0) {
            fprintf(stderr, "golden: %s: a fresh fit of %s prints %s, expected %s\n", c->name,
                    c->fit, sm_op_spec(fresh), c->canon);
            g_failures++;
        }
        check_fresh_parts(st, c->name, fresh);
        CHECK_OK(sm_op_to_dense(fresh, got));
        double d = rel_fro(got, exp, mn);
        if (!(d <= c->fresh_tol)) {
            fprintf(stderr, "golden: %s: a fresh fit is %.3g from the golden matrix (> %.3g)\n",
                    c->name, d, c->fresh_tol);
            g_failures++;
        }
        sm_op_free(fresh);
    }
    free(exp), free(input), free(got), free(val), free(bnd);
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

// Saving the loaded operators again gives the same tensors, bytes and structmat metadata.
static void check_resave(const sm_st *st, sm_op *const *ops) {
    char dir[] = "/tmp/sm_golden_XXXXXX", path[64];
    if (!mkdtemp(dir)) {
        fprintf(stderr, "golden: mkdtemp failed\n");
        g_failures++;
        return;
    }
    snprintf(path, sizeof path, "%s/ops.safetensors", dir);
    const char *names[NCASES];
    for (int i = 0; i < NCASES; i++) names[i] = k_cases[i].name;
    CHECK_OK(sm_ops_save(path, NCASES, names, (const sm_op *const *)ops, false));
    sm_st *again = NULL;
    CHECK_OK(sm_st_open(path, &again));
    if (again) {
        int nparts = 0;
        for (int i = 0; i < sm_st_count(st); i++) {
            const sm_tensor_info *t = sm_st_get(st, i);
            if (has_prefix(t->name, "expected.") || has_prefix(t->name, "input.")) continue;
            nparts++;
            const sm_tensor_info *u = sm_st_find(again, t->name);
            bool ok = u && u->dtype == t->dtype && u->ndim == t->ndim && u->nbytes == t->nbytes &&
                      !memcmp(u->data, t->data, t->nbytes);
            for (int d = 0; ok && d < t->ndim; d++) ok = u->shape[d] == t->shape[d];
            if (!ok) {
                fprintf(stderr, "golden: tensor %s changes when saved again\n", t->name);
                g_failures++;
            }
        }
        CHECK(sm_st_count(again) == nparts);
        for (int i = 0; i < sm_st_meta_count(st); i++) {
            const char *k, *v;
            sm_st_meta_get(st, i, &k, &v);
            if (has_prefix(k, "structmat.")) check_meta(again, k, v);
        }
        sm_st_close(again);
    }
    remove_dir(dir);
}

static void verify(const char *path) {
    sm_st *st = NULL;
    CHECK_OK(sm_st_open(path, &st));
    if (!st) return;
    check_meta(st, "structmat.format_version", "1");
    // Every tensor belongs to a listed operator or is an input or an expected matrix, and every
    // operator is listed: a file that grew or lost an operator needs this table updated too.
    for (int i = 0; i < sm_st_count(st); i++) {
        const char *t = sm_st_get(st, i)->name;
        bool known = has_prefix(t, "expected.") || has_prefix(t, "input.");
        for (int j = 0; j < NCASES && !known; j++) known = is_part_of(t, k_cases[j].name);
        if (!known) {
            fprintf(stderr, "golden: tensor %s belongs to no listed operator\n", t);
            g_failures++;
        }
    }
    int nspecs = 0;
    for (int i = 0; i < sm_st_meta_count(st); i++) {
        const char *k, *v;
        sm_st_meta_get(st, i, &k, &v);
        nspecs += has_prefix(k, "structmat.spec.");
    }
    CHECK(nspecs == NCASES);

    sm_op *ops[NCASES] = {0};
    for (int i = 0; i < NCASES; i++) check_case(st, &k_cases[i], &ops[i]);
    bool all = true;
    for (int i = 0; i < NCASES; i++) all = all && ops[i];
    if (all) check_resave(st, ops);
    for (int i = 0; i < NCASES; i++) sm_op_free(ops[i]);
    sm_st_close(st);
}

// --- regeneration -----------------------------------------------------------------------------

// Fits every case, saves the operators with sm_ops_save, and rewrites that file with the inputs
// and the expected matrices (computed from the saved tensors by the documented layouts) added.
static int regenerate(const char *path, bool force) {
    float *inputs[NINPUTS];
    for (int i = 0; i < NINPUTS; i++) inputs[i] = make_input(&k_inputs[i]);
    sm_op *ops[NCASES] = {0};
    const char *names[NCASES];
    int bad = 0;
    for (int i = 0; i < NCASES && !bad; i++) {
        const golden_case *c = &k_cases[i];
        const golden_input *in = find_input(c->input);
        names[i] = c->name;
        if (sm_op_fit(inputs[in - k_inputs], in->m, in->n, c->fit, NULL, &ops[i]) != SM_OK) {
            fprintf(stderr, "%s: fit %s: %s\n", c->name, c->fit, sm_last_error());
            bad = 1;
        } else if (strcmp(sm_op_spec(ops[i]), c->canon) != 0) {
            fprintf(stderr, "%s: %s fits as %s; update the table\n", c->name, c->fit,
                    sm_op_spec(ops[i]));
            bad = 1;
        }
    }
    char dir[] = "/tmp/sm_golden_XXXXXX", tmp[64];
    if (!bad && !mkdtemp(dir)) bad = 1;
    snprintf(tmp, sizeof tmp, "%s/ops.safetensors", dir);
    sm_st *st = NULL;
    if (!bad && (sm_ops_save(tmp, NCASES, names, (const sm_op *const *)ops, false) != SM_OK ||
                 sm_st_open(tmp, &st) != SM_OK)) {
        fprintf(stderr, "save: %s\n", sm_last_error());
        bad = 1;
    }
    float *expected[NCASES] = {0};
    sm_st_writer *w = sm_st_writer_init();
    for (int i = 0; !bad && i < sm_st_meta_count(st); i++) {
        const char *k, *v;
        sm_st_meta_get(st, i, &k, &v);
        if (sm_st_writer_meta(w, k, v) != SM_OK) bad = 1;
    }
    for (int i = 0; !bad && i < sm_st_count(st); i++) {
        const sm_tensor_info *t = sm_st_get(st, i);
        if (sm_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes) != SM_OK)
            bad = 1;
    }
    for (int i = 0; !bad && i < NINPUTS; i++) {
        int64_t shape[2] = {k_inputs[i].m, k_inputs[i].n};
        if (sm_st_writer_add(w, k_inputs[i].name, SM_DTYPE_F32, 2, shape, inputs[i],
                             sizeof(float) * (size_t)(shape[0] * shape[1])) != SM_OK)
            bad = 1;
    }
    static char enames[NCASES][128];
    for (int i = 0; !bad && i < NCASES; i++) {
        const golden_input *in = find_input(k_cases[i].input);
        int64_t mn = in->m * in->n, shape[2] = {in->m, in->n};
        double *val = malloc(sizeof(double) * (size_t)mn),
               *bnd = malloc(sizeof(double) * (size_t)mn);
        expected[i] = malloc(sizeof(float) * (size_t)mn);
        float *got = malloc(sizeof(float) * (size_t)mn);
        NEED(val && bnd && expected[i] && got);
        if (!ref_dense(st, k_cases[i].name, k_cases[i].canon, in->m, in->n, val, bnd)) bad = 1;
        for (int64_t j = 0; j < mn; j++) expected[i][j] = (float)val[j];
        // The layouts in the reference and in src/ops must agree before the file is written.
        sm_op_to_dense(ops[i], got);
        check_dense(k_cases[i].name, got, expected[i], bnd, mn, k_cases[i].decode_only);
        snprintf(enames[i], sizeof enames[i], "expected.%s", k_cases[i].name);
        if (!bad && sm_st_writer_add(w, enames[i], SM_DTYPE_F32, 2, shape, expected[i],
                                     sizeof(float) * (size_t)mn) != SM_OK)
            bad = 1;
        free(val), free(bnd), free(got);
    }
    sm_st_writer_meta(w, "golden.about",
                      "structmat golden checkpoint: operators, expected.<name> (their dense "
                      "matrices), input.<x> (the fitted matrices); tests/test_golden.c");
    if (bad || g_failures || sm_st_writer_write(w, path, force) != SM_OK) {
        fprintf(stderr, "regenerate: %s\n", bad || g_failures ? "failed" : sm_last_error());
        bad = 1;
    }
    sm_st_writer_free(w);
    sm_st_close(st);
    if (dir[strlen(dir) - 1] != 'X') remove_dir(dir);
    for (int i = 0; i < NCASES; i++) sm_op_free(ops[i]), free(expected[i]);
    for (int i = 0; i < NINPUTS; i++) free(inputs[i]);
    return bad;
}

int main(int argc, char **argv) {
    const char *path = GOLDEN_PATH;
    if (argc >= 3 && !strcmp(argv[1], "--regenerate")) {
        bool force = argc >= 4 && !strcmp(argv[3], "--force");
        if (regenerate(argv[2], force)) return 1;
        path = argv[2];
    } else if (argc == 2 && argv[1][0] != '-') {
        path = argv[1]; // another file, e.g. a damaged copy to see that the test notices
    } else if (argc > 1) {
        fprintf(stderr, "usage: %s [PATH | --regenerate PATH [--force]]\n", argv[0]);
        return 2;
    }
    verify(path);
    TEST_END();
}
