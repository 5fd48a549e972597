// Bad input to the library: shapes past what BLAS takes, non-finite values in fitted matrices and
// in stored parts, inconsistent parts, operator files that could not be read back, allocation
// failures anywhere in fit/to_dense/apply/load, extreme but legal specs (rank = min(m, n),
// blocks = m, 1 x n, all-zero W). Every case must end in a defined result or a clear error:
// never a crash, an out-of-bounds access (run under the sanitizer build), a leak or a NaN.
#include "ops/op_impl.h"
#include "testutil.h"

#include <limits.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[64];

// --- shapes past BLAS's int dimensions ------------------------------------------------------

static void test_huge_shapes(void) {
    // W is a single float: the shape must be refused before W is read (a read past it is an
    // out-of-bounds access the sanitizer reports; m n = 2^62 also overflows the byte count).
    float w = 1.0f;
    sm_op *op = NULL;
    const int64_t big = (int64_t)INT_MAX + 1;
    CHECK_FAIL(sm_op_fit(&w, big, 1, "dense", NULL, &op), SM_ERR_UNSUPPORTED, "2147483647");
    CHECK_FAIL(sm_op_fit(&w, 1, big, "lowrank:rank=1", NULL, &op), SM_ERR_UNSUPPORTED,
               "longer than");
    CHECK_FAIL(sm_op_fit(&w, (int64_t)1 << 31, (int64_t)1 << 31, "dense", NULL, &op),
               SM_ERR_UNSUPPORTED, "longer than");
    CHECK_FAIL(sm_op_fit(&w, INT64_MAX, INT64_MAX, "dense", NULL, &op), SM_ERR_UNSUPPORTED,
               "longer than");
    CHECK(op == NULL);
    sm_part p = {
        .name = "W", .dtype = SM_DTYPE_F32, .ndim = 2, .shape = {big, 1}, .data = &w, .nbytes = 4};
    CHECK_FAIL(sm_op_from_parts("dense", big, 1, &p, 1, &op), SM_ERR_UNSUPPORTED, "longer than");
    CHECK(op == NULL);
}

// Batches are cut into chunks of sm_apply_chunk_rows rows (the BLAS limit INT_MAX / max(m, n)
// in real use; forced small here): the result must equal the reference for every row, with the
// last chunk short, and nothing written past Y.
static void test_apply_chunks(void) {
    const char *specs[] = {"dense:dtype=q8",
                           "lowrank:rank=3",
                           "monarch:blocks=2,rank=2",
                           "blockdiag:blocks=3",
                           "blocklowrank:blocks=3,rank=1",
                           "kron:a=3x2,terms=2",
                           "kron:a=2x6",
                           "lowrank:rank=2+kron:a=3x3"};
    const int64_t m = 12, n = 18, N = 23;
    float W[12 * 18], D[12 * 18];
    fill_random(W, m * n, 21);
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, m, n, specs[s], NULL, &op));
        if (!op) continue;
        CHECK_OK(sm_op_to_dense(op, D));
        for (int t = 0; t < 2; t++) {
            int64_t in = t ? m : n, out = t ? n : m;
            float *X = malloc(sizeof(float) * (size_t)(N * in));
            float *Y = malloc(sizeof(float) * (size_t)(N * out + 8));
            float *R = malloc(sizeof(float) * (size_t)(N * out));
            fill_random(X, N * in, 5 + t);
            for (int64_t i = 0; i < N * out + 8; i++) Y[i] = -7.0f;
            for (int64_t b = 0; b < N; b++) // R = X D^T or X D, in double
                for (int64_t o = 0; o < out; o++) {
                    double acc = 0;
                    for (int64_t k = 0; k < in; k++)
                        acc += (double)X[b * in + k] * (double)(t ? D[k * n + o] : D[o * n + k]);
                    R[b * out + o] = (float)acc;
                }
            sm_apply_chunk_rows = 5;
            CHECK_OK(t ? sm_op_apply_t(op, N, X, Y, NULL) : sm_op_apply(op, N, X, Y, NULL));
            sm_apply_chunk_rows = 0;
            char what[96];
            snprintf(what, sizeof what, "%s chunked apply%s", specs[s], t ? "_t" : "");
            check_close(what, Y, R, N * out, 1e-5);
            for (int i = 0; i < 8; i++) CHECK(Y[N * out + i] == -7.0f);
            free(X), free(Y), free(R);
        }
        sm_op_free(op);
    }
}

// --- non-finite values ----------------------------------------------------------------------

static void test_nonfinite_fit(void) {
    float W[6 * 5];
    fill_random(W, 30, 1);
    W[13] = NAN;
    sm_op *op = NULL;
    CHECK_FAIL(sm_op_fit(W, 6, 5, "lowrank:rank=2", NULL, &op), SM_ERR_NUMERIC,
               "index 13 (row 2, column 3)");
    W[13] = 0;
    W[29] = -INFINITY;
    CHECK_FAIL(sm_op_fit(W, 6, 5, "dense+lowrank:rank=1", NULL, &op), SM_ERR_NUMERIC,
               "(row 5, column 4)");
    CHECK(op == NULL);
}

// A part of `spec` fitted to a random (m, n) with one value made non-finite: loading must refuse
// with SM_ERR_NUMERIC naming the part (and the sum term) and the position.
static void nonfinite_part(const char *spec, int64_t m, int64_t n, const char *part, int64_t at,
                           bool scale, const char *needle) {
    float *W = malloc(sizeof(float) * (size_t)(m * n));
    fill_random(W, m * n, 9);
    sm_op *op = NULL, *back = NULL;
    sm_part *parts = NULL;
    int np = 0;
    CHECK_OK(sm_op_fit(W, m, n, spec, NULL, &op));
    if (op) CHECK_OK(sm_op_parts(op, &parts, &np));
    int k = -1;
    for (int i = 0; i < np; i++)
        if (strcmp(parts[i].name, part) == 0) k = i;
    CHECK(k >= 0);
    if (k >= 0) {
        unsigned char *copy = malloc(parts[k].nbytes);
        memcpy(copy, parts[k].data, parts[k].nbytes);
        if (parts[k].dtype == SM_DTYPE_F32) {
            float nan = NAN;
            memcpy(copy + 4 * at, &nan, 4);
        } else { // F16 or BF16 values, or F16 scales
            uint16_t bits = parts[k].dtype == SM_DTYPE_BF16 ? 0xff80 : (scale ? 0x7c00 : 0x7e00);
            memcpy(copy + 2 * at, &bits, 2);
        }
        parts[k].data = copy;
        CHECK_FAIL(sm_op_from_parts(sm_op_spec(op), m, n, parts, np, &back), SM_ERR_NUMERIC,
                   needle);
        CHECK(back == NULL);
        sm_op_free(back);
        // The untouched parts still load.
        parts[k].data = NULL;
        sm_part *orig = NULL;
        int no = 0;
        CHECK_OK(sm_op_parts(op, &orig, &no));
        CHECK_OK(sm_op_from_parts(sm_op_spec(op), m, n, orig, no, &back));
        sm_op_free(back);
        free(orig);
        free(copy);
    }
    free(parts);
    sm_op_free(op);
    free(W);
}

static void test_nonfinite_parts(void) {
    nonfinite_part("dense", 4, 6, "W", 9, false, "part \"W\" has a non-finite value at [1, 3]");
    nonfinite_part("lowrank:rank=2,dtype=f16", 5, 7, "V", 13, false, "part \"V\" has a non-finite");
    nonfinite_part("lowrank:rank=2,dtype=bf16", 5, 7, "U", 0, false,
                   "\"U\" has a non-finite value at [0, 0]");
    // q8/q4: an Inf scale; the scale of row 3, group 1 of a 70-column factor.
    nonfinite_part("dense:dtype=q8", 5, 70, "W.scales", 7, true,
                   "\"W.scales\" has a non-finite value at [3, 1]");
    nonfinite_part("dense:dtype=q4", 5, 70, "W.scales", 0, true, "\"W.scales\"");
    // 3-D parts: the position is given in the (rows, cols) factor.
    nonfinite_part("monarch:blocks=2,rank=1", 8, 8, "f2", 5, false,
                   "\"f2\" has a non-finite value at [2, 1]");
    nonfinite_part("kron:a=2x2", 8, 6, "B", 11, false, "part \"B\"");
    nonfinite_part("blocklowrank:blocks=2,rank=1", 8, 6, "V", 1, false, "part \"V\"");
    nonfinite_part("blockdiag:blocks=2", 8, 6, "D", 3, false, "part \"D\"");
    // In a sum the message says which term's parts are at fault.
    nonfinite_part("lowrank:rank=1+dense:dtype=f16", 4, 6, "1.W", 2, false,
                   "term 1 (parts \"1.*\"): part \"W\" has a non-finite");
}

// --- inconsistent parts -------------------------------------------------------------------------

static void test_sum_parts(void) {
    float W[8 * 8];
    fill_random(W, 64, 3);
    sm_op *op = NULL, *back = NULL;
    CHECK_OK(sm_op_fit(W, 8, 8, "lowrank:rank=2+dense:dtype=f16+kron:a=2x2", NULL, &op));
    if (!op) return;
    sm_part *parts = NULL, sub[16];
    int np = 0, ns = 0;
    CHECK_OK(sm_op_parts(op, &parts, &np));
    for (int i = 0; i < np; i++)
        if (strncmp(parts[i].name, "1.", 2) != 0) sub[ns++] = parts[i];
    CHECK_FAIL(sm_op_from_parts(sm_op_spec(op), 8, 8, sub, ns, &back), SM_ERR_FORMAT,
               "term 1 (parts \"1.*\"): missing part \"W\"");
    CHECK(back == NULL);
    // Parts of term 2 offered under prefix 1: wrong names for term 1.
    ns = 0;
    for (int i = 0; i < np; i++) {
        sub[ns] = parts[i];
        if (parts[i].name[0] == '1') continue;
        if (parts[i].name[0] == '2') sub[ns].name[0] = '1';
        ns++;
    }
    CHECK_FAIL(sm_op_from_parts(sm_op_spec(op), 8, 8, sub, ns, &back), SM_ERR_FORMAT, "term 1");
    // Eight terms (the most a spec has) round-trip; a failing middle term leaks nothing.
    sm_op *eight = NULL;
    const char *spec8 = "lowrank:rank=1+lowrank:rank=1+dense:dtype=q4+lowrank:rank=1+"
                        "kron:a=2x2+monarch:blocks=2,rank=1+blockdiag:blocks=4+dense:dtype=bf16";
    CHECK_OK(sm_op_fit(W, 8, 8, spec8, NULL, &eight));
    if (eight) {
        float D[64];
        CHECK_OK(sm_op_to_dense(eight, D));
        CHECK(rel_fro(D, W, 64) < 1e-2); // the last term is dense bf16 on the residual
        sm_part *p8 = NULL;
        int n8 = 0;
        CHECK_OK(sm_op_parts(eight, &p8, &n8));
        CHECK(n8 == 14);
        CHECK_OK(sm_op_from_parts(sm_op_spec(eight), 8, 8, p8, n8, &back));
        sm_op_free(back);
        free(p8);
    }
    sm_op_free(eight);
    back = NULL;
    CHECK_FAIL(sm_op_fit(W, 8, 8, "lowrank:rank=1+dense+monarch:blocks=3+dense", NULL, &back),
               SM_ERR_SPEC, "monarch: blocks=3 does not divide");
    CHECK(back == NULL);
    // A stored lowrank spec states its rank, and nothing else that sizes it.
    sm_part lr[2];
    int nl = 0;
    for (int i = 0; i < np; i++)
        if (parts[i].name[0] == '0') {
            lr[nl] = parts[i];
            memmove(lr[nl].name, lr[nl].name + 2, sizeof lr[nl].name - 2);
            nl++;
        }
    CHECK_OK(sm_op_from_parts("lowrank:rank=2", 8, 8, lr, nl, &back));
    sm_op_free(back);
    back = NULL;
    CHECK_FAIL(sm_op_from_parts("lowrank:rank=2,ratio=0.9", 8, 8, lr, nl, &back), SM_ERR_SPEC,
               "no ratio=");
    CHECK(back == NULL);
    free(parts);
    sm_op_free(op);
}

// Every registered structure name, even one whose fit or load is not built yet, gives an error
// for an impossible stored operator (no parts), never a crash; and a spec naming one in a file
// is refused by sm_op_load.
static void test_every_name_loads_safely(void) {
    const char *names[] = {"dense", "lowrank:rank=1", "monarch:blocks=1", "blockdiag:blocks=1",
                           "blocklowrank:blocks=1,rank=1", "kron:a=1x1", "blast", "sparse",
                           "cur", "rtn", "gptq", "onebit", "bitstack", "dense+blast",
                           "blast+dense"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        sm_op *op = NULL;
        sm_status s = sm_op_from_parts(names[i], 4, 4, NULL, 0, &op);
        if (s == SM_OK || op) {
            fprintf(stderr, "%s loaded from no parts\n", names[i]);
            g_failures++;
        }
        sm_op_free(op);
    }
}

// --- operator files -----------------------------------------------------------------------------

static void test_save_names(void) {
    float W[4 * 4];
    fill_random(W, 16, 4);
    sm_op *op = NULL;
    CHECK_OK(sm_op_fit(W, 4, 4, "lowrank:rank=1", NULL, &op));
    if (!op) return;
    char path[128];
    snprintf(path, sizeof path, "%s/names.safetensors", g_dir);
    // "x" and "x.y": every tensor "x.*" is a part of x when loading, so the file would be
    // unreadable; sm_ops_save must refuse it and write nothing.
    const char *names[] = {"x", "x.y"};
    const sm_op *ops[] = {op, op};
    CHECK_FAIL(sm_ops_save(path, 2, names, ops, false), SM_ERR_ARG,
               "\"x.y\" would be read as a part of \"x\"");
    CHECK(access(path, F_OK) != 0);
    const char *rev[] = {"a.b.weight", "a.b"};
    CHECK_FAIL(sm_ops_save(path, 2, rev, ops, false), SM_ERR_ARG, "part of \"a.b\"");
    // Names that only share a prefix without the dot are fine, and both load back.
    const char *ok[] = {"x", "xy"};
    CHECK_OK(sm_ops_save(path, 2, ok, ops, false));
    sm_st *st = NULL;
    CHECK_OK(sm_st_open(path, &st));
    for (int i = 0; st && i < 2; i++) {
        sm_op *back = NULL;
        CHECK_OK(sm_op_load(st, ok[i], &back));
        sm_op_free(back);
    }
    sm_st_close(st);
    sm_op_free(op);
}

// A one-operator file whose shape metadata and parts are given, for the loader to judge.
static sm_status load_with(const char *shape, const char *spec, const sm_part *parts, int np,
                           sm_op **out) {
    char path[128];
    snprintf(path, sizeof path, "%s/load.safetensors", g_dir);
    sm_st_writer *w = sm_st_writer_init();
    CHECK_OK(sm_st_writer_meta(w, "structmat.format_version", "1"));
    CHECK_OK(sm_st_writer_meta(w, "structmat.spec.m", spec));
    CHECK_OK(sm_st_writer_meta(w, "structmat.shape.m", shape));
    for (int i = 0; i < np; i++) {
        char name[64];
        snprintf(name, sizeof name, "m.%s", parts[i].name);
        CHECK_OK(sm_st_writer_add(w, name, parts[i].dtype, parts[i].ndim, parts[i].shape,
                                  parts[i].data, parts[i].nbytes));
    }
    CHECK_OK(sm_st_writer_write(w, path, true));
    sm_st_writer_free(w);
    sm_st *st = NULL;
    sm_status s = sm_st_open(path, &st);
    if (s == SM_OK) s = sm_op_load(st, "m", out);
    sm_st_close(st);
    return s;
}

static void test_load_values(void) {
    float U[3] = {1, 2, 3}, V[2] = {0.5f, NAN};
    sm_part p[2] = {
        {.name = "U", .dtype = SM_DTYPE_F32, .ndim = 2, .shape = {3, 1}, .data = U, .nbytes = 12},
        {.name = "V", .dtype = SM_DTYPE_F32, .ndim = 2, .shape = {1, 2}, .data = V, .nbytes = 8},
    };
    sm_op *op = NULL;
    // The message names the file's operator and the part.
    CHECK_FAIL(load_with("3,2", "lowrank:rank=1", p, 2, &op), SM_ERR_NUMERIC,
               "operator \"m\" (lowrank:rank=1, 3x2): part \"V\" has a non-finite value at [0, 1]");
    CHECK(op == NULL);
    V[1] = 4;
    CHECK_OK(load_with("3,2", "lowrank:rank=1", p, 2, &op));
    if (op) {
        float D[6];
        CHECK_OK(sm_op_to_dense(op, D));
        float want[6] = {0.5f, 4, 1, 8, 1.5f, 12};
        check_close("loaded lowrank", D, want, 6, 0);
    }
    sm_op_free(op);
    op = NULL;
    // Sides are at most INT_MAX (what BLAS takes): 2^31 is not a shape, 2^31 - 1 is one (whose
    // parts then do not match).
    CHECK_FAIL(load_with("2147483648,2", "lowrank:rank=1", p, 2, &op), SM_ERR_FORMAT,
               "is not \"out,in\"");
    CHECK_FAIL(load_with("2147483647,2", "lowrank:rank=1", p, 2, &op), SM_ERR_FORMAT, "part \"U\"");
    CHECK(op == NULL);
}

// --- allocation failures ----------------------------------------------------------------------

// Child: fit, to_dense, apply (allocating its workspace), parts, from_parts and to_dense of the
// copy; the k-th allocation and all later ones fail (STRUCTMAT_FAIL_ALLOC_AFTER). Exit 0 on a
// clean SM_ERR_ALLOC, 2 when every step succeeded (k is past the last allocation), 1 otherwise.
static int alloc_child(const char *spec) {
    const int64_t m = 12, n = 8;
    float W[12 * 8], D[12 * 8], X[3 * 12], Y[3 * 12];
    fill_random(W, m * n, 6);
    fill_random(X, 3 * 12, 7);
    sm_op *op = NULL, *back = NULL;
    sm_part *parts = NULL;
    int np = 0;
    sm_status s = sm_op_fit(W, m, n, spec, NULL, &op);
    if (s == SM_OK) s = sm_op_to_dense(op, D);
    if (s == SM_OK) s = sm_op_apply(op, 3, X, Y, NULL);
    if (s == SM_OK) s = sm_op_apply_t(op, 3, X, Y, NULL);
    if (s == SM_OK) s = sm_op_parts(op, &parts, &np);
    if (s == SM_OK) s = sm_op_from_parts(sm_op_spec(op), m, n, parts, np, &back);
    if (s == SM_OK) s = sm_op_to_dense(back, D);
    free(parts);
    sm_op_free(back);
    sm_op_free(op);
    if (s == SM_OK) return 2;
    if (s == SM_ERR_ALLOC && strstr(sm_last_error(), "out of memory")) return 0;
    fprintf(stderr, "%s: %s: %s\n", spec, sm_status_str(s), sm_last_error());
    return 1;
}

static void test_alloc_failures(void) {
    const char *specs[] = {"dense:dtype=q4",
                           "lowrank:rank=3,dtype=f16",
                           "lowrank:rank=2,solver=random",
                           "monarch:blocks=2,rank=2,dtype=q8",
                           "blockdiag:blocks=4,dtype=bf16",
                           "blocklowrank:blocks=2,rank=2",
                           "kron:a=3x2,terms=2,dtype=q4",
                           "lowrank:rank=2+monarch:blocks=2,rank=1+kron:a=2x2"};
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        int k = 1, status = 0;
        for (; k <= 400; k++) {
            pid_t pid = fork();
            if (pid == 0) {
                char v[16];
                snprintf(v, sizeof v, "%d", k);
                setenv("STRUCTMAT_FAIL_ALLOC_AFTER", v, 1);
                execl("/proc/self/exe", "test_hostile", "--alloc-child", specs[s], (char *)NULL);
                _exit(127);
            }
            CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) break;
        }
        // Every k up to the last allocation gave a clean failure; then everything succeeded.
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 2 || k == 1) {
            fprintf(stderr, "%s with allocation %d failing: child status %d (signal %d)\n",
                    specs[s], k, WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                    WIFSIGNALED(status) ? WTERMSIG(status) : 0);
            g_failures++;
        }
    }
}

// --- extreme but legal specs ----------------------------------------------------------------

// All-zero W: every structure fits it exactly (zero factors), with a finite error of 0.
static void test_zero_matrix(void) {
    const char *specs[] = {"dense:dtype=q4",
                           "lowrank:rank=3",
                           "lowrank:rank=2,solver=random",
                           "lowrank:ratio=0.5,dtype=q8",
                           "monarch:blocks=2,rank=1",
                           "blockdiag:blocks=6",
                           "blocklowrank:blocks=3,rank=1",
                           "kron:a=2x3,terms=2,dtype=f16",
                           "lowrank:rank=1+dense:dtype=q8"};
    float W[6 * 12] = {0}, D[6 * 12];
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        sm_op *op = NULL;
        CHECK_OK(sm_op_fit(W, 6, 12, specs[s], NULL, &op));
        if (!op) continue;
        for (int i = 0; i < 72; i++) D[i] = 1.0f;
        CHECK_OK(sm_op_to_dense(op, D));
        int bad = 0;
        for (int i = 0; i < 72; i++) bad += D[i] != 0.0f; // also catches NaN
        if (bad) {
            fprintf(stderr, "%s on zeros: %d entries of to_dense are not 0\n", specs[s], bad);
            g_failures++;
        }
        sm_op_free(op);
    }
}

// Sizes at their limits, each against what it must equal exactly.
static void test_limits(void) {
    float W[9 * 9], D[9 * 9];
    fill_random(W, 81, 8);
    sm_op *op = NULL;
    // rank = min(m, n): W itself (to float rounding).
    const char *full[] = {"lowrank:rank=9", "lowrank:rank=9,solver=random",
                          "blocklowrank:blocks=3,rank=3", "monarch:blocks=3,rank=3",
                          "kron:a=3x3,terms=9"};
    for (size_t s = 0; s < sizeof full / sizeof *full; s++) {
        CHECK_OK(sm_op_fit(W, 9, 9, full[s], NULL, &op));
        if (op && sm_op_to_dense(op, D) == SM_OK && !(rel_fro(D, W, 81) < 1e-5)) {
            fprintf(stderr, "%s: rel error %g, expected exact\n", full[s], rel_fro(D, W, 81));
            g_failures++;
        }
        sm_op_free(op);
        op = NULL;
    }
    // blocks = m on a square matrix: the diagonal, and nothing else.
    CHECK_OK(sm_op_fit(W, 9, 9, "blockdiag:blocks=9", NULL, &op));
    if (op && sm_op_to_dense(op, D) == SM_OK)
        for (int i = 0; i < 9; i++)
            for (int j = 0; j < 9; j++) CHECK(D[i * 9 + j] == (i == j ? W[i * 9 + j] : 0.0f));
    sm_op_free(op);
    op = NULL;
    // One row and one column: every structure that can hold the matrix holds it exactly.
    const char *thin[] = {"dense",
                          "lowrank:rank=1",
                          "monarch:blocks=1,rank=1",
                          "blockdiag:blocks=1",
                          "blocklowrank:blocks=1,rank=1",
                          "kron:a=1x1",
                          "kron:a=1x9",
                          "lowrank:rank=1+dense"};
    for (int t = 0; t < 2; t++)
        for (size_t s = 0; s < sizeof thin / sizeof *thin; s++) {
            int64_t m = t ? 9 : 1, n = t ? 1 : 9;
            sm_status st = sm_op_fit(W, m, n, thin[s], NULL, &op);
            if (t == 1 && strcmp(thin[s], "kron:a=1x9") == 0) { // 9 does not divide in = 1
                CHECK(st == SM_ERR_SPEC);
                continue;
            }
            CHECK_OK(st);
            if (op && sm_op_to_dense(op, D) == SM_OK && !(rel_fro(D, W, 9) < 1e-6)) {
                fprintf(stderr, "%s on %lldx%lld: rel error %g\n", thin[s], (long long)m,
                        (long long)n, rel_fro(D, W, 9));
                g_failures++;
            }
            sm_op_free(op);
            op = NULL;
        }
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--alloc-child") == 0) return alloc_child(argv[2]);
    snprintf(g_dir, sizeof g_dir, "/tmp/sm-hostile-XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_huge_shapes();
    test_apply_chunks();
    test_nonfinite_fit();
    test_nonfinite_parts();
    test_sum_parts();
    test_every_name_loads_safely();
    test_save_names();
    test_load_values();
    test_alloc_failures();
    test_zero_matrix();
    test_limits();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    TEST_END();
}
