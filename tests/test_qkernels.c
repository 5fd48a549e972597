// The low-bit kernels (src/kernels/qkernels.h) at every ISA level this CPU has, against
// references written here from the documented layouts, in double:
// - qgemv of random B-bit codes (B = 2, 3, 4, 8; symmetric and with zero points) is within
//   1e-5 * sum |w x| of the dot products of the weights decoded here, on awkward shapes: groups
//   that are and are not multiples of the vector paths' 16 / 32 columns, one row, odd row
//   counts, unaligned buffers, and a matrix large enough for the threaded path; also with x
//   spanning eight orders of magnitude (the AVX512-VNNI 4-bit path splits x into 8-bit digit
//   planes with one scale per group: groups of 8, 16, 32, 64 and multiples of 128);
// - qdecode is bit for bit s * (q - z) as a float product, for any row range;
// - signmm / signmm_t of random sign bits equal sum_c (+-1) x_c for 1..5 vectors, column counts
//   around the 8 / 16-column steps;
// - fwht equals the product with the Sylvester-Hadamard matrix H_ij = (-1)^popcount(i & j),
//   acting on rows of b floats, for p2 up to 1024 and b in {1, 3, 5, 16, 43}.
// The program runs once more with STRUCTMAT_NO_VNNI=1 so that 4-bit codes also go through the
// table path on CPUs that have VNNI (the choice is made once per process).
#include "kernels/qkernels.h"
#include "testutil.h"

#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t g_rng = 0x0123456789abcdefull;

static uint64_t rnd(void) { // splitmix64
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rnd_unit(void) { // [-1, 1)
    return (double)(rnd() >> 11) * 0x1.0p-52 - 1.0;
}

// Code c of a little-endian bit stream of b-bit codes, read bit by bit (independent of the
// library's accessor).
static int code_at(const uint8_t *row, int64_t c, int b) {
    int v = 0;
    for (int k = 0; k < b; k++) {
        int64_t bit = c * b + k;
        v |= ((row[bit / 8] >> (bit % 8)) & 1) << k;
    }
    return v;
}

static const char *isa_name(int isa) {
    return sm_isa_name((sm_isa)isa);
}

// One random quantized matrix through one kernel table.
static void check_q(const sm_qkernels *k, int isa, int bits, int64_t rows, int64_t cols,
                    int64_t group, bool sym, bool wide) {
    int64_t ng = cols / group;
    size_t rb = (size_t)((cols * bits + 7) / 8), zb = sym ? 0 : (size_t)((ng * bits + 7) / 8);
    // Unaligned views into padded buffers (kernels may read up to 64 bytes past the end).
    uint8_t *cbuf = calloc((size_t)rows * rb + 128, 1), *zbuf = calloc((size_t)rows * zb + 128, 1);
    uint16_t *sbuf = calloc((size_t)(rows * ng) + 64, 2);
    float *xbuf = malloc(sizeof(float) * (size_t)(cols + 8)), *y = malloc(sizeof(float) * (size_t)rows);
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    float *dec = malloc(sizeof(float) * (size_t)(rows * cols) + 4);
    float *work = malloc(sizeof(float) * (sm_qgemv_workspace(cols, group) + 1));
    uint8_t *codes = cbuf + 3, *zeros = zbuf + 5;
    uint16_t *scales = sbuf + 1;
    float *x = xbuf + 1;
    for (size_t i = 0; i < (size_t)rows * rb; i++) codes[i] = (uint8_t)rnd();
    for (size_t i = 0; i < (size_t)rows * zb; i++) zeros[i] = (uint8_t)rnd();
    for (int64_t i = 0; i < rows * ng; i++)
        scales[i] = sm_f32_to_f16((float)(0.01 + 0.2 * (rnd_unit() + 1)));
    for (int64_t i = 0; i < cols; i++) x[i] = (float)rnd_unit();
    if (wide) // magnitudes from 1e-4 to 1e4 within each group
        for (int64_t i = 0; i < cols; i++) x[i] *= powf(10.0f, (float)(i * 7 % 9) - 4.0f);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            int64_t g = c / group;
            int z = sym ? 1 << (bits - 1) : code_at(zeros + r * zb, g, bits);
            float s = sm_f16_to_f32(scales[r * ng + g]);
            w[r * cols + c] = s * (float)(code_at(codes + r * rb, c, bits) - z);
        }
    sm_qview v = {.rows = rows, .cols = cols, .bits = bits, .group = group, .rb = rb, .zb = zb,
                  .codes = codes, .scales = scales, .zeros = sym ? NULL : zeros};
    k->qgemv(&v, x, y, work);
    for (int64_t r = 0; r < rows; r++) {
        double ref = 0, mag = 0;
        for (int64_t c = 0; c < cols; c++) {
            ref += (double)w[r * cols + c] * x[c];
            mag += fabs((double)w[r * cols + c] * x[c]);
        }
        if (!(fabs(y[r] - ref) <= 1e-5 * mag + 1e-30)) {
            fprintf(stderr, "qgemv %s B=%d %lldx%lld group %lld %s%s: row %lld: %.9g vs %.9g\n",
                    isa_name(isa), bits, (long long)rows, (long long)cols, (long long)group,
                    sym ? "sym" : "asym", wide ? " wide x" : "", (long long)r, (double)y[r], ref);
            g_failures++;
            break;
        }
    }
    // Decode of all rows, and of a middle range.
    k->qdecode(&v, 0, rows, dec);
    if (memcmp(dec, w, sizeof(float) * (size_t)(rows * cols)) != 0) {
        fprintf(stderr, "qdecode %s B=%d %lldx%lld group %lld %s differs\n", isa_name(isa), bits,
                (long long)rows, (long long)cols, (long long)group, sym ? "sym" : "asym");
        g_failures++;
    }
    if (rows > 2) {
        dec[(rows - 2) * cols] = 12345.0f; // the guard after the range must stay
        k->qdecode(&v, 1, rows - 2, dec);
        CHECK(memcmp(dec, w + cols, sizeof(float) * (size_t)((rows - 3) * cols)) == 0);
        CHECK(dec[(rows - 2) * cols] == 12345.0f);
    }
    free(cbuf), free(zbuf), free(sbuf), free(xbuf), free(y), free(w), free(dec), free(work);
}

static void check_sign(const sm_qkernels *k, int isa, int64_t rows, int64_t cols, int64_t nv) {
    size_t rb = (size_t)(cols + 7) / 8;
    uint8_t *bbuf = calloc((size_t)rows * rb + 64, 1), *bits = bbuf + 1;
    float *X = malloc(sizeof(float) * (size_t)(nv * cols)), *Y = malloc(sizeof(float) * (size_t)(nv * rows));
    float *Yt = malloc(sizeof(float) * (size_t)(nv * rows)), *Xt = malloc(sizeof(float) * (size_t)(nv * cols));
    for (size_t i = 0; i < (size_t)rows * rb; i++) bits[i] = (uint8_t)rnd();
    for (int64_t i = 0; i < nv * cols; i++) X[i] = (float)rnd_unit();
    for (int64_t i = 0; i < nv * rows; i++) Yt[i] = (float)rnd_unit();
    k->signmm(rows, cols, bits, rb, nv, X, Y);
    k->signmm_t(rows, cols, bits, rb, nv, Yt, Xt);
    int bad = 0;
    for (int64_t v = 0; v < nv && !bad; v++)
        for (int64_t r = 0; r < rows && !bad; r++) {
            double ref = 0, mag = 0;
            for (int64_t c = 0; c < cols; c++) {
                double s = (bits[r * rb + c / 8] >> (c % 8)) & 1 ? 1 : -1;
                ref += s * X[v * cols + c];
                mag += fabs(X[v * cols + c]);
            }
            if (!(fabs(Y[v * rows + r] - ref) <= 1e-5 * mag + 1e-30)) {
                fprintf(stderr, "signmm %s %lldx%lld nv=%lld: [%lld, %lld] %.9g vs %.9g\n",
                        isa_name(isa), (long long)rows, (long long)cols, (long long)nv,
                        (long long)v, (long long)r, (double)Y[v * rows + r], ref);
                bad = 1;
            }
        }
    for (int64_t v = 0; v < nv && !bad; v++)
        for (int64_t c = 0; c < cols && !bad; c++) {
            double ref = 0, mag = 0;
            for (int64_t r = 0; r < rows; r++) {
                double s = (bits[r * rb + c / 8] >> (c % 8)) & 1 ? 1 : -1;
                ref += s * Yt[v * rows + r];
                mag += fabs(Yt[v * rows + r]);
            }
            if (!(fabs(Xt[v * cols + c] - ref) <= 1e-5 * mag + 1e-30)) {
                fprintf(stderr, "signmm_t %s %lldx%lld nv=%lld: [%lld, %lld] %.9g vs %.9g\n",
                        isa_name(isa), (long long)rows, (long long)cols, (long long)nv,
                        (long long)v, (long long)c, (double)Xt[v * cols + c], ref);
                bad = 1;
            }
        }
    g_failures += bad;
    free(bbuf), free(X), free(Y), free(Yt), free(Xt);
}

static void check_fwht(const sm_qkernels *k, int isa, int64_t p2, int64_t b) {
    int64_t n = p2 * b;
    float *x = malloc(sizeof(float) * (size_t)(n + 1)), *x0 = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x0[i] = x[i + 1] = (float)rnd_unit();
    k->fwht(x + 1, p2, b);
    for (int64_t i = 0; i < p2; i++)
        for (int64_t j = 0; j < b; j++) {
            double ref = 0, mag = 0;
            for (int64_t l = 0; l < p2; l++) {
                double h = __builtin_popcountll((unsigned long long)(i & l)) & 1 ? -1 : 1;
                ref += h * x0[l * b + j];
                mag += fabs(x0[l * b + j]);
            }
            if (!(fabs(x[1 + i * b + j] - ref) <= 1e-6 * mag)) {
                fprintf(stderr, "fwht %s p2=%lld b=%lld: [%lld, %lld] %.9g vs %.9g\n",
                        isa_name(isa), (long long)p2, (long long)b, (long long)i, (long long)j,
                        (double)x[1 + i * b + j], ref);
                g_failures++;
                free(x), free(x0);
                return;
            }
        }
    free(x), free(x0);
}

int main(int argc, char **argv) {
    (void)argc;
    static const struct {
        int64_t rows, cols, group;
    } shapes[] = {
        {1, 32, 32},   {3, 64, 32},    {17, 128, 64},  {5, 256, 128}, {9, 96, 96},
        {7, 48, 16},   {4, 80, 16},    {6, 91, 7},     {2, 53, 53},   {3, 24, 8},
        {33, 192, 64}, {650, 512, 128}, // threaded path (rows * cols > 2^18)
        {5, 256, 8},   {3, 384, 16},   {4, 512, 256},  {2, 1024, 1024}, {3, 640, 128},
    };
    static const int widths[] = {2, 3, 4, 8};
    for (int isa = 0; isa <= (int)sm_isa_detect(); isa++) {
        const sm_qkernels *k = sm_qkernels_for((sm_isa)isa);
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (int w = 0; w < 4; w++)
                for (int sym = 0; sym < 2; sym++)
                    for (int wide = 0; wide < 2; wide++)
                        check_q(k, isa, widths[w], shapes[s].rows, shapes[s].cols,
                                shapes[s].group, sym, wide);
        static const int64_t scols[] = {1, 7, 8, 9, 15, 16, 17, 31, 33, 100, 257};
        static const int64_t srows[] = {1, 3, 16, 17, 40};
        for (int c = 0; c < 11; c++)
            for (int r = 0; r < 5; r++)
                for (int64_t nv = 1; nv <= 5; nv += 2) check_sign(k, isa, srows[r], scols[c], nv);
        check_sign(k, isa, 300, 1000, 1); // threaded path
        for (int64_t p2 = 1; p2 <= 1024; p2 *= 2) {
            static const int64_t bs[] = {1, 3, 5, 16, 43};
            for (int b = 0; b < 5; b++)
                if (p2 * bs[b] <= 4096) check_fwht(k, isa, p2, bs[b]);
        }
    }
    if (!getenv("STRUCTMAT_NO_VNNI")) {
        pid_t pid = fork();
        if (pid == 0) {
            setenv("STRUCTMAT_NO_VNNI", "1", 1);
            execl(argv[0], argv[0], (char *)NULL);
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "the run with STRUCTMAT_NO_VNNI=1 failed\n");
            g_failures++;
        }
    }
    TEST_END();
}
