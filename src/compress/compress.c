// structmat compress (include/structmat_compress.h): the matrices of a checkpoint, phase 1
// (candidates and their error-versus-bytes curves), phase 2 (allocate.c) and phase 3 (refit the
// chosen candidates and stream them into the output checkpoint).
#include "compress_impl.h"

#include "../model/model.h"
#include "../ops/op_impl.h"

#include <cJSON.h>
#include <cblas.h>
#include <libgen.h>
#include <malloc.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct cand {
    int rc;        // recipe index
    char *spec;    // canonical
    int64_t bytes; // exact
    double err;    // objective
    int64_t room;  // header bytes of its parts and metadata, at most
} cand;

typedef struct cmat {
    const sm_tensor_info *t; // in the source
    const char *pinned;      // "keep", a spec, or NULL
    sm_recipe *rc;
    int nrc;
    cand *c;
    int nc, capc;
    double energy;
    float *sigma;
    int nsigma;
    int chosen;
    char *final_spec;
    int64_t final_bytes;
    double final_err;
} cmat;

struct sm_compress {
    char *path, *dir; // the checkpoint and the directory of its config.json
    sm_st *st;
    sm_compress_opts o;
    char *methods_text;
    unsigned methods;
    sm_objective obj;
    regex_t *pin_re, *keep_re;
    int npin, nkeep;
    char **pin_spec;
    char *uniform;
    cmat *m;
    int nm;
    int64_t weights;
    bool measured;
    int64_t budget;
};

static sm_status parse_methods(sm_compress *c, const char *text) {
    c->methods = 0;
    if (!text || !*text) {
        c->methods = (1u << SM_M_PIN) - 1;
        c->methods_text = strdup("all");
        return c->methods_text ? SM_OK : sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    char *copy = strdup(text), *save = NULL;
    if (!copy) return sm_fail(SM_ERR_ALLOC, "out of memory");
    sm_status s = SM_OK;
    for (char *tok = strtok_r(copy, ",", &save); tok && s == SM_OK;
         tok = strtok_r(NULL, ",", &save)) {
        int k = -1;
        for (int i = 0; i < SM_M_PIN; i++)
            if (!strcmp(tok, sm_method_names[i])) k = i;
        if (k < 0)
            s = sm_fail(SM_ERR_ARG,
                        "--methods: unknown method \"%s\" (expected a comma-separated "
                        "list of rtn, gptq, onebit, bitstack, lowrank, monarch, blast, blockdiag, "
                        "sparse, lorc, dense)",
                        tok);
        else
            c->methods |= 1u << k;
    }
    free(copy);
    if (s != SM_OK) return s;
    if ((c->methods & (1u << SM_M_GPTQ)) && !c->o.calib)
        return sm_fail(SM_ERR_ARG, "--methods gptq needs calibration statistics (--calib)");
    // The matrix as stored is always a candidate: it makes every budget up to the model's own
    // size reachable, and is what a matrix keeps when nothing smaller is worth it.
    c->methods |= 1u << SM_M_DENSE;
    c->methods_text = strdup(text);
    return c->methods_text ? SM_OK : sm_fail(SM_ERR_ALLOC, "out of memory");
}

static sm_status compile(regex_t *re, const char *pat, const char *what) {
    int e = regcomp(re, pat, REG_EXTENDED | REG_NOSUB);
    if (e == 0) return SM_OK;
    char msg[128];
    regerror(e, re, msg, sizeof msg);
    return sm_fail(SM_ERR_ARG, "%s \"%s\": %s", what, pat, msg);
}

// Pins, keeps and the uniform spec (parsed: a malformed spec fails before any work).
static sm_status parse_pins(sm_compress *c, const sm_compress_opts *o) {
    c->pin_re = calloc((size_t)o->npin + 1, sizeof *c->pin_re);
    c->pin_spec = calloc((size_t)o->npin + 1, sizeof *c->pin_spec);
    c->keep_re = calloc((size_t)o->nkeep + 1, sizeof *c->keep_re);
    if (!c->pin_re || !c->pin_spec || !c->keep_re) return sm_fail(SM_ERR_ALLOC, "out of memory");
    sm_status s = SM_OK;
    for (int i = 0; i < o->npin && s == SM_OK; i++) {
        sm_spec *sp;
        s = compile(&c->pin_re[i], o->pin_regex[i], "--tensor-spec");
        if (s == SM_OK) c->npin++;
        if (s == SM_OK && (s = sm_spec_parse(o->pin_spec[i], &sp)) == SM_OK) sm_spec_free(sp);
        if (s == SM_OK && !(c->pin_spec[i] = strdup(o->pin_spec[i])))
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
        if (s != SM_OK && s != SM_ERR_ALLOC)
            sm_error_prefix("--tensor-spec %s=%s: ", o->pin_regex[i], o->pin_spec[i]);
    }
    for (int i = 0; i < o->nkeep && s == SM_OK; i++) {
        s = compile(&c->keep_re[i], o->keep[i], "--keep");
        if (s == SM_OK) c->nkeep++;
    }
    if (s == SM_OK && o->uniform) {
        sm_spec *sp;
        if ((s = sm_spec_parse(o->uniform, &sp)) == SM_OK)
            sm_spec_free(sp);
        else
            sm_error_prefix("--uniform: ");
        if (s == SM_OK && !(c->uniform = strdup(o->uniform)))
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    return s;
}

sm_status sm_compress_open(const char *model_dir, const sm_compress_opts *opts, sm_compress **out) {
    *out = NULL;
    sm_compress *c = calloc(1, sizeof *c);
    if (!c) return sm_fail(SM_ERR_ALLOC, "out of memory");
    if (opts) c->o = *opts;
    if (!c->o.seed) c->o.seed = 24301;
    c->o.methods = c->o.uniform = NULL; // owned copies below
    struct stat sb;
    sm_status s = SM_OK;
    c->path = strdup(model_dir);
    if (!c->path) s = sm_fail(SM_ERR_ALLOC, "out of memory");
    if (s == SM_OK && stat(model_dir, &sb) != 0)
        s = sm_fail(SM_ERR_IO, "%s: no such file or directory", model_dir);
    if (s == SM_OK) {
        char *copy = strdup(model_dir);
        c->dir = copy && S_ISDIR(sb.st_mode) ? strdup(model_dir)
                 : copy                      ? strdup(dirname(copy))
                                             : NULL;
        free(copy);
        if (!c->dir) s = sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    char *cfg = NULL;
    if (s == SM_OK && (asprintf(&cfg, "%s/config.json", c->dir) < 0 || stat(cfg, &sb) != 0))
        s = sm_fail(SM_ERR_NOT_FOUND,
                    "%s: no config.json: compress reads a Hugging Face "
                    "checkpoint directory (config.json and safetensors)",
                    model_dir);
    free(cfg);
    if (s == SM_OK) s = sm_st_open(model_dir, &c->st);
    if (s == SM_OK && sm_st_meta(c->st, "structmat.format_version"))
        s = sm_fail(SM_ERR_UNSUPPORTED,
                    "%s: already a structmat checkpoint; `structmat export "
                    "--dense` it first",
                    model_dir);
    if (s == SM_OK) s = parse_methods(c, opts ? opts->methods : NULL);
    if (s == SM_OK && opts) s = parse_pins(c, opts);
    if (s == SM_OK) {
        c->obj = c->o.objective;
        if (c->obj == SM_OBJECTIVE_AUTO)
            c->obj = c->o.calib ? SM_OBJECTIVE_ACTIVATION : SM_OBJECTIVE_WEIGHT;
        if (c->obj == SM_OBJECTIVE_ACTIVATION && !c->o.calib)
            s = sm_fail(SM_ERR_ARG, "the activation objective needs calibration statistics "
                                    "(--calib)");
    }
    // The matrices: every 2-D tensor but the token embedding.
    int nt = s == SM_OK ? sm_st_count(c->st) : 0;
    c->m = calloc((size_t)nt + 1, sizeof *c->m);
    if (s == SM_OK && !c->m) s = sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int i = 0; i < nt && s == SM_OK; i++) {
        const sm_tensor_info *t = sm_st_get(c->st, i);
        if (t->ndim != 2 || sm_is_embedding_name(t->name)) continue;
        if (t->dtype != SM_DTYPE_F32 && t->dtype != SM_DTYPE_F16 && t->dtype != SM_DTYPE_BF16 &&
            t->dtype != SM_DTYPE_F64) {
            s = sm_fail(SM_ERR_UNSUPPORTED,
                        "%s: matrix %s is %s; compress reads F32, F16, BF16 "
                        "and F64",
                        model_dir, t->name, t->dtype_name);
            break;
        }
        cmat *m = &c->m[c->nm++];
        m->t = t;
        m->chosen = -1;
        c->weights += t->shape[0] * t->shape[1];
        for (int k = 0; k < c->nkeep && !m->pinned; k++)
            if (regexec(&c->keep_re[k], t->name, 0, NULL, 0) == 0) m->pinned = "keep";
        for (int k = 0; k < c->npin && !m->pinned; k++)
            if (regexec(&c->pin_re[k], t->name, 0, NULL, 0) == 0) m->pinned = c->pin_spec[k];
        if (!m->pinned && c->uniform) m->pinned = c->uniform;
        if (c->obj == SM_OBJECTIVE_ACTIVATION) {
            sm_stats stats;
            s = sm_calib_get(c->o.calib, t->name, t->shape[1], &stats);
            if (s != SM_OK) sm_error_prefix("--calib: ");
        }
    }
    if (s == SM_OK && c->nm == 0)
        s = sm_fail(SM_ERR_NOT_FOUND, "%s: no 2-D weights to compress", model_dir);
    if (s != SM_OK) {
        sm_compress_free(c);
        return s;
    }
    *out = c;
    return SM_OK;
}

void sm_compress_free(sm_compress *c) {
    if (!c) return;
    for (int i = 0; i < c->nm; i++) {
        cmat *m = &c->m[i];
        for (int j = 0; j < m->nc; j++) free(m->c[j].spec);
        free(m->c), free(m->rc), free(m->sigma), free(m->final_spec);
    }
    for (int i = 0; i < c->npin; i++) regfree(&c->pin_re[i]);
    for (int i = 0; i < c->nkeep; i++) regfree(&c->keep_re[i]);
    for (int i = 0; c->pin_spec && i < c->o.npin; i++) free(c->pin_spec[i]);
    free(c->pin_re), free(c->keep_re), free(c->pin_spec);
    free(c->m), free(c->uniform), free(c->methods_text), free(c->path), free(c->dir);
    sm_st_close(c->st);
    free(c);
}

int64_t sm_compress_budget(const sm_compress *c) {
    return c->budget;
}

int sm_compress_count(const sm_compress *c) {
    return c->nm;
}
int64_t sm_compress_weights(const sm_compress *c) {
    return c->weights;
}
sm_objective sm_compress_objective(const sm_compress *c) {
    return c->obj;
}

sm_status sm_compress_parse_size(const sm_compress *c, const char *text, int64_t *bytes) {
    char *end;
    double v = strtod(text, &end);
    if (end == text || !(v > 0) || !isfinite(v))
        return sm_fail(SM_ERR_ARG,
                       "size \"%s\": expected a positive number with a unit: 3.5bpw, "
                       "120MB, 800kB, 1.5GB or bytes",
                       text);
    double b;
    if (!strcmp(end, "bpw"))
        b = v * (double)c->weights / 8.0;
    else if (!strcmp(end, "") || !strcmp(end, "B"))
        b = v;
    else if (!strcmp(end, "kB") || !strcmp(end, "KB"))
        b = v * 1e3;
    else if (!strcmp(end, "MB"))
        b = v * 1e6;
    else if (!strcmp(end, "GB"))
        b = v * 1e9;
    else
        return sm_fail(SM_ERR_ARG,
                       "size \"%s\": unknown unit \"%s\" (bpw, B, kB, MB, GB; MB = "
                       "10^6 bytes)",
                       text, end);
    if (b > 9e18) return sm_fail(SM_ERR_ARG, "size \"%s\" is too large", text);
    *bytes = (int64_t)floor(b);
    return SM_OK;
}

// --- the objective
// --------------------------------------------------------------------------------

typedef struct errctx {
    const float *W; // (m, n)
    int64_t m, n;
    const float *H; // (n, n) the Gram in float, or NULL: Frobenius
    float *D, *G;   // (m, n) scratch
} errctx;

// ||W - W_hat||_F^2, or tr(dW H dW^T) (float products, double sums). W_hat in D is overwritten.
static double objective(errctx *e, float *D) {
    int64_t mn = e->m * e->n;
    for (int64_t i = 0; i < mn; i++) D[i] = e->W[i] - D[i];
    double s = 0;
    if (!e->H) {
        for (int64_t i = 0; i < mn; i++) s += (double)D[i] * D[i];
        return s;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)e->m, (int)e->n, (int)e->n, 1.0f, D,
                (int)e->n, e->H, (int)e->n, 0.0f, e->G, (int)e->n);
    for (int64_t i = 0; i < mn; i++) s += (double)D[i] * e->G[i];
    return s > 0 ? s : 0;
}

// What phase 1 and 3 need for one matrix: its values, statistics and scratch.
typedef struct mwork {
    sm_compress *c;
    int index;
    cmat *m;
    float *W, *Hf;
    sm_stats stats;
    bool have_stats;
    errctx e;
    // phase 3
    sm_swriter *w;
    sm_op *built;
} mwork;

static void mwork_free(mwork *x) {
    free(x->W);
    sm_free(x->Hf), sm_free(x->e.D), sm_free(x->e.G);
    sm_op_free(x->built);
    memset(x, 0, sizeof *x);
#ifdef __GLIBC__
    // Hand the freed matrix-sized blocks back to the system: glibc keeps freed blocks below its
    // (adaptive) mmap threshold in its arenas, and over a 1B model's 155 matrices of varying
    // sizes the resident memory crept up by hundreds of MB (measured: 63 to 480 MB of RssAnon
    // after 30 matrices whose work needs 150 MB).
    malloc_trim(0);
#endif
}

static sm_status mwork_init(sm_compress *c, int i, mwork *x) {
    memset(x, 0, sizeof *x);
    x->c = c;
    x->index = i;
    x->m = &c->m[i];
    const sm_tensor_info *t = x->m->t;
    int64_t m = t->shape[0], n = t->shape[1], cnt;
    sm_status s = sm_st_read_f32(c->st, t->name, &x->W, &cnt);
    sm_release_pages(t->data, t->nbytes); // only the F32 copy stays resident
    if (s != SM_OK) return s;
    x->e = (errctx){.W = x->W, .m = m, .n = n};
    x->e.D = sm_alloc((size_t)(m * n) * sizeof(float));
    if (!x->e.D)
        return sm_fail(SM_ERR_ALLOC, "out of memory for a %lldx%lld matrix", (long long)m,
                       (long long)n);
    // Statistics are passed to the fits even with the weight objective (gptq needs them).
    if (c->o.calib) {
        s = sm_calib_get(c->o.calib, t->name, n, &x->stats);
        if (s != SM_OK) return s;
        x->have_stats = true;
    }
    if (c->obj == SM_OBJECTIVE_ACTIVATION) {
        x->Hf = sm_alloc((size_t)(n * n) * sizeof(float));
        x->e.G = sm_alloc((size_t)(m * n) * sizeof(float));
        if (!x->Hf || !x->e.G) return sm_fail(SM_ERR_ALLOC, "out of memory");
        for (int64_t k = 0; k < n * n; k++) x->Hf[k] = (float)x->stats.gram[k];
        x->e.H = x->Hf;
    }
    return SM_OK;
}

static uint64_t seed_of(const sm_compress *c, int i) {
    return c->o.seed + 0x9e3779b97f4a7c15ull * (uint64_t)i;
}

// The recipes of matrix i: its pin, or the ladder.
static sm_status recipes_of(sm_compress *c, cmat *m) {
    if (m->rc) return SM_OK;
    const sm_tensor_info *t = m->t;
    if (m->pinned) {
        m->rc = calloc(1, sizeof *m->rc);
        if (!m->rc) return sm_fail(SM_ERR_ALLOC, "out of memory");
        m->nrc = 1;
        m->rc->kind = SM_RECIPE_FIT;
        m->rc->method = strcmp(m->pinned, "keep") ? SM_M_PIN : SM_M_DENSE;
        snprintf(m->rc->base, sizeof m->rc->base, "%s",
                 strcmp(m->pinned, "keep") ? m->pinned : sm_keep_spec(t->dtype));
        if (strlen(m->pinned) >= sizeof m->rc->base)
            return sm_fail(SM_ERR_ARG, "spec \"%s\" is too long", m->pinned);
        return SM_OK;
    }
    return sm_ladder(t->shape[0], t->shape[1], t->dtype, c->methods, c->o.calib != NULL,
                     c->o.solver, &m->rc, &m->nrc);
}

static sm_status measure_one(void *user, int idx, sm_op **op) {
    mwork *x = user;
    cmat *m = x->m;
    if (m->nc == m->capc) {
        int cap = m->capc ? 2 * m->capc : 32;
        cand *nc = realloc(m->c, sizeof *nc * (size_t)cap);
        if (!nc) return sm_fail(SM_ERR_ALLOC, "out of memory");
        m->c = nc, m->capc = cap;
    }
    sm_status s = sm_op_to_dense(*op, x->e.D);
    if (s != SM_OK) return s;
    cand *cd = &m->c[m->nc];
    cd->rc = idx;
    cd->bytes = sm_op_nbytes(*op);
    cd->err = objective(&x->e, x->e.D);
    cd->room = sm_swriter_op_room(m->t->name, *op);
    cd->spec = strdup(sm_op_spec(*op));
    if (!cd->spec || cd->room < 0) {
        free(cd->spec);
        return sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    if (!isfinite(cd->err)) { // a candidate that broke down is not a candidate
        free(cd->spec);
        return SM_OK;
    }
    m->nc++;
    return SM_OK;
}

static bool tell(const sm_compress *c, const sm_compress_event *ev) {
    return !c->o.progress || c->o.progress(c->o.user, ev);
}

// Runs fn over the recipes of one group [lo, hi) that contains `only` (or all of them).
static sm_status build(mwork *x, int lo, int hi, int only, sm_build_fn fn, int *skipped) {
    const sm_tensor_info *t = x->m->t;
    return sm_build_group(x->m->rc, lo, hi, only, x->W, t->shape[0], t->shape[1],
                          x->have_stats ? &x->stats : NULL, x->c->o.solver, seed_of(x->c, x->index),
                          fn, x, skipped);
}

sm_status sm_compress_measure(sm_compress *c) {
    sm_status s = SM_OK;
    for (int i = 0; i < c->nm && s == SM_OK; i++) {
        cmat *m = &c->m[i];
        double t0 = sm_now();
        for (int j = 0; j < m->nc; j++) free(m->c[j].spec);
        m->nc = 0;
        mwork x;
        s = mwork_init(c, i, &x);
        if (s == SM_OK) s = recipes_of(c, m);
        if (s == SM_OK) { // the energy: the error of W_hat = 0
            memset(x.e.D, 0, sizeof(float) * (size_t)(x.e.m * x.e.n));
            m->energy = objective(&x.e, x.e.D);
        }
        if (s == SM_OK && c->o.spectra) {
            int64_t k = x.e.m < x.e.n ? x.e.m : x.e.n;
            double *sig = malloc(sizeof(double) * (size_t)k);
            sm_matrix_stats ms;
            free(m->sigma);
            m->sigma = malloc(sizeof(float) * (size_t)(k < 256 ? k : 256));
            if (!sig || !m->sigma) s = sm_fail(SM_ERR_ALLOC, "out of memory");
            if (s == SM_OK) s = sm_matrix_analyze(x.W, x.e.m, x.e.n, &ms, sig);
            if (s == SM_OK) {
                m->nsigma = (int)(k < 256 ? k : 256);
                for (int j = 0; j < m->nsigma; j++) m->sigma[j] = (float)sig[j];
            }
            free(sig);
        }
        int skipped = 0;
        for (int lo = 0; lo < m->nrc && s == SM_OK;) {
            int hi = lo + 1;
            while (hi < m->nrc && m->rc[hi].group == m->rc[lo].group) hi++;
            s = build(&x, lo, hi, -1, measure_one, &skipped);
            lo = hi;
        }
        if (s == SM_OK && m->nc == 0) s = sm_fail(SM_ERR_ARG, "no candidate could be built");
        if (s != SM_OK)
            sm_error_prefix("%s (%lldx%lld): ", m->t->name, (long long)m->t->shape[0],
                            (long long)m->t->shape[1]);
        mwork_free(&x);
        sm_compress_event ev = {.phase = 1,
                                .index = i,
                                .count = c->nm,
                                .name = m->t->name,
                                .candidates = m->nc,
                                .seconds = sm_now() - t0};
        if (s == SM_OK && !tell(c, &ev)) s = sm_fail(SM_ERR_IO, "interrupted");
    }
    c->measured = s == SM_OK;
    return s;
}

void sm_compress_range(const sm_compress *c, int64_t *min_bytes, int64_t *max_bytes) {
    int64_t lo = 0, hi = 0;
    for (int i = 0; i < c->nm; i++) {
        const cmat *m = &c->m[i];
        int64_t a = INT64_MAX, b = 0;
        for (int j = 0; j < m->nc; j++) {
            if (m->c[j].bytes < a) a = m->c[j].bytes;
            if (m->c[j].bytes > b) b = m->c[j].bytes;
        }
        lo += m->nc ? a : 0, hi += b;
    }
    *min_bytes = lo, *max_bytes = hi;
}

sm_status sm_compress_allocate(sm_compress *c, int64_t budget) {
    if (!c->measured) return sm_fail(SM_ERR_ARG, "allocate: measure the candidates first");
    sm_alloc_item *items = calloc((size_t)c->nm, sizeof *items);
    int64_t **bytes = calloc((size_t)c->nm, sizeof *bytes);
    double **err = calloc((size_t)c->nm, sizeof *err);
    int *choice = calloc((size_t)c->nm, sizeof *choice);
    sm_status s = items && bytes && err && choice ? SM_OK : sm_fail(SM_ERR_ALLOC, "out of memory");
    for (int i = 0; i < c->nm && s == SM_OK; i++) {
        cmat *m = &c->m[i];
        bytes[i] = malloc(sizeof(int64_t) * (size_t)m->nc);
        err[i] = malloc(sizeof(double) * (size_t)m->nc);
        if (!bytes[i] || !err[i]) {
            s = sm_fail(SM_ERR_ALLOC, "out of memory");
            break;
        }
        for (int j = 0; j < m->nc; j++) bytes[i][j] = m->c[j].bytes, err[i][j] = m->c[j].err;
        items[i] = (sm_alloc_item){m->nc, bytes[i], err[i]};
    }
    if (s == SM_OK && c->uniform) { // no choice to make: the one candidate each
        for (int i = 0; i < c->nm; i++) c->m[i].chosen = 0;
    } else if (s == SM_OK) {
        int64_t lo, hi;
        sm_compress_range(c, &lo, &hi);
        if (budget < lo)
            s = sm_fail(SM_ERR_ARG,
                        "the target of %lld bytes (%.4g bpw) cannot be reached: the "
                        "smallest reachable size with methods %s is %lld bytes (%.4g bpw, %.6g MB)",
                        (long long)budget, 8.0 * (double)budget / (double)c->weights,
                        c->methods_text, (long long)lo, 8.0 * (double)lo / (double)c->weights,
                        (double)lo / 1e6);
        if (s == SM_OK) s = sm_allocate(items, c->nm, budget, choice, NULL);
        for (int i = 0; i < c->nm && s == SM_OK; i++) c->m[i].chosen = choice[i];
    }
    if (s == SM_OK) c->budget = budget;
    for (int i = 0; bytes && err && i < c->nm; i++) free(bytes[i]), free(err[i]);
    free(items), free(bytes), free(err), free(choice);
    return s;
}

// --- phase 3
// --------------------------------------------------------------------------------------

static sm_status write_one(void *user, int idx, sm_op **op) {
    mwork *x = user;
    x->built = *op;
    *op = NULL;
    return SM_OK;
}

static bool is_matrix(const sm_compress *c, const sm_tensor_info *t) {
    for (int i = 0; i < c->nm; i++)
        if (c->m[i].t == t) return true;
    return false;
}

sm_status sm_compress_write(sm_compress *c, const char *out_dir, bool force) {
    for (int i = 0; i < c->nm; i++)
        if (c->m[i].chosen < 0) return sm_fail(SM_ERR_ARG, "write: allocate first");
    sm_atomic_dir d;
    sm_status s = sm_atomic_dir_open(&d, out_dir, force);
    if (s != SM_OK) return s;
    // The header's room: every tensor copied, every chosen candidate's parts and metadata.
    int64_t room = sm_swriter_meta_room("structmat.format_version", "1");
    for (int i = 0; i < sm_st_count(c->st); i++) {
        const sm_tensor_info *t = sm_st_get(c->st, i);
        if (!is_matrix(c, t)) room += sm_swriter_entry_room(t->name);
    }
    for (int i = 0; i < c->nm; i++) room += c->m[i].c[c->m[i].chosen].room;
    char *path = NULL;
    if (asprintf(&path, "%s/model.safetensors", d.tmp) < 0) {
        path = NULL;
        s = sm_fail(SM_ERR_ALLOC, "out of memory");
    }
    sm_swriter *w = NULL;
    if (s == SM_OK) s = sm_copy_config(c->dir, d.tmp, false);
    if (s == SM_OK) s = sm_swriter_open(path, room, &w);
    // Embedding, norms, biases: as stored.
    for (int i = 0; i < sm_st_count(c->st) && s == SM_OK; i++) {
        const sm_tensor_info *t = sm_st_get(c->st, i);
        if (!is_matrix(c, t))
            s = sm_swriter_add_mapped(w, t->name, t->dtype_name, t->ndim, t->shape, t->data,
                                      t->nbytes);
    }
    bool any_op = false;
    for (int i = 0; i < c->nm && s == SM_OK; i++) {
        cmat *m = &c->m[i];
        const cand *cd = &m->c[m->chosen];
        double t0 = sm_now();
        mwork x;
        s = mwork_init(c, i, &x);
        if (s == SM_OK) s = recipes_of(c, m);
        int lo = cd->rc, hi = cd->rc + 1, skipped = 0;
        while (s == SM_OK && lo > 0 && m->rc[lo - 1].group == m->rc[cd->rc].group) lo--;
        while (s == SM_OK && hi < m->nrc && m->rc[hi].group == m->rc[cd->rc].group) hi++;
        if (s == SM_OK) s = build(&x, lo, hi, cd->rc, write_one, &skipped);
        if (s == SM_OK && !x.built)
            s = sm_fail(SM_ERR_NUMERIC, "%s: the refit of %s failed", m->t->name, cd->spec);
        if (s == SM_OK && sm_op_nbytes(x.built) != cd->bytes)
            s = sm_fail(SM_ERR_NUMERIC, "%s: %s refitted to %lld bytes, measured %lld (a bug)",
                        m->t->name, cd->spec, (long long)sm_op_nbytes(x.built),
                        (long long)cd->bytes);
        if (s == SM_OK) s = sm_swriter_add_op(w, m->t->name, x.built);
        if (s == SM_OK) {
            const char *spec = sm_op_spec(x.built);
            any_op |= strcmp(spec, "dense") && strcmp(spec, "dense:dtype=f16") &&
                      strcmp(spec, "dense:dtype=bf16");
            free(m->final_spec);
            m->final_spec = strdup(spec);
            m->final_bytes = sm_op_nbytes(x.built);
            s = sm_op_to_dense(x.built, x.e.D);
            m->final_err = s == SM_OK ? objective(&x.e, x.e.D) : NAN;
            if (!m->final_spec && s == SM_OK) s = sm_fail(SM_ERR_ALLOC, "out of memory");
        }
        if (s == SM_OK && c->o.keep_op) {
            c->o.keep_op(c->o.user, i, x.built);
            x.built = NULL;
        }
        mwork_free(&x);
        sm_compress_event ev = {.phase = 3,
                                .index = i,
                                .count = c->nm,
                                .name = m->t->name,
                                .spec = m->final_spec,
                                .bytes = m->final_bytes,
                                .rel_error = m->energy > 0 ? sqrt(m->final_err / m->energy)
                                                           : sqrt(m->final_err),
                                .seconds = sm_now() - t0};
        if (s == SM_OK && !tell(c, &ev)) s = sm_fail(SM_ERR_IO, "interrupted");
    }
    if (s == SM_OK && any_op) {
        char v[16];
        snprintf(v, sizeof v, "%d", SM_FORMAT_VERSION);
        s = sm_swriter_meta(w, "structmat.format_version", v);
    }
    if (s == SM_OK) {
        s = sm_swriter_finish(w);
        w = NULL;
    }
    if (s == SM_OK)
        s = sm_atomic_dir_commit(&d);
    else {
        sm_swriter_abort(w);
        sm_atomic_dir_abort(&d);
    }
    free(path);
    return s;
}

// --- accessors
// ------------------------------------------------------------------------------------

void sm_compress_get_matrix(const sm_compress *c, int i, sm_compress_matrix *out) {
    const cmat *m = &c->m[i];
    *out = (sm_compress_matrix){
        .name = m->t->name,
        .rows = m->t->shape[0],
        .cols = m->t->shape[1],
        .dtype = m->t->dtype_name,
        .energy = m->energy,
        .candidates = m->nc,
        .chosen = m->chosen,
        .pinned = m->pinned,
        .final_spec = m->final_spec,
        .final_bytes = m->final_bytes,
        .final_error = m->final_err,
        .nsigma = m->nsigma,
        .sigma = m->sigma,
    };
}

void sm_compress_get_candidate(const sm_compress *c, int i, int j, sm_compress_candidate *out) {
    const cmat *m = &c->m[i];
    const cand *cd = &m->c[j];
    *out = (sm_compress_candidate){sm_method_names[m->rc[cd->rc].method], cd->spec, cd->bytes,
                                   cd->err};
}

// --- curves file
// ------------------------------------------------------------------------------------
//
// {"structmat_curves": 1, "model", "methods", "objective", "solver", "seed", "calib_tokens",
//  "weights", "matrices": [{"name", "rows", "cols", "pinned", "energy", "sigma": [...],
//  "candidates": [{"recipe", "base", "a", "spec", "bytes", "error", "room"}]}]}
// A candidate names its recipe by index in the matrix's ladder, which the loader rebuilds from
// the same options and checks against the stored base spec and size.

static const char *obj_name(sm_objective o) {
    return o == SM_OBJECTIVE_ACTIVATION ? "activation" : "weight";
}

sm_status sm_compress_save_curves(const sm_compress *c, const char *path, bool force) {
    if (!c->measured) return sm_fail(SM_ERR_ARG, "curves: measure the candidates first");
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "structmat_curves", 1);
    cJSON_AddStringToObject(r, "model", c->path);
    cJSON_AddStringToObject(r, "methods", c->methods_text);
    cJSON_AddStringToObject(r, "objective", obj_name(c->obj));
    cJSON_AddNumberToObject(r, "solver", c->o.solver);
    cJSON_AddNumberToObject(r, "seed", (double)c->o.seed);
    cJSON_AddNumberToObject(r, "calib_tokens",
                            c->o.calib ? (double)sm_calib_tokens(c->o.calib) : 0);
    cJSON_AddNumberToObject(r, "weights", (double)c->weights);
    cJSON *ms = cJSON_AddArrayToObject(r, "matrices");
    for (int i = 0; i < c->nm; i++) {
        const cmat *m = &c->m[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(ms, o);
        cJSON_AddStringToObject(o, "name", m->t->name);
        cJSON_AddNumberToObject(o, "rows", (double)m->t->shape[0]);
        cJSON_AddNumberToObject(o, "cols", (double)m->t->shape[1]);
        cJSON_AddStringToObject(o, "pinned", m->pinned ? m->pinned : "");
        cJSON_AddNumberToObject(o, "energy", m->energy);
        cJSON *sg = cJSON_AddArrayToObject(o, "sigma");
        for (int j = 0; j < m->nsigma; j++)
            cJSON_AddItemToArray(sg, cJSON_CreateNumber(m->sigma[j]));
        cJSON *cs = cJSON_AddArrayToObject(o, "candidates");
        for (int j = 0; j < m->nc; j++) {
            const cand *cd = &m->c[j];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddItemToArray(cs, e);
            cJSON_AddNumberToObject(e, "recipe", cd->rc);
            cJSON_AddStringToObject(e, "base", m->rc[cd->rc].base);
            cJSON_AddNumberToObject(e, "a", (double)m->rc[cd->rc].a);
            cJSON_AddNumberToObject(e, "store", m->rc[cd->rc].store);
            cJSON_AddStringToObject(e, "spec", cd->spec);
            cJSON_AddNumberToObject(e, "bytes", (double)cd->bytes);
            cJSON_AddNumberToObject(e, "error", cd->err);
            cJSON_AddNumberToObject(e, "room", (double)cd->room);
        }
    }
    char *text = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    if (!text) return sm_fail(SM_ERR_ALLOC, "out of memory");
    sm_atomic_file a;
    sm_status s = sm_atomic_open(&a, path, force);
    if (s == SM_OK) {
        if (fputs(text, a.f) < 0 || fputc('\n', a.f) == EOF) {
            s = sm_fail(SM_ERR_IO, "%s: write failed", path);
            sm_atomic_abort(&a);
        } else {
            s = sm_atomic_commit(&a);
        }
    }
    cJSON_free(text);
    return s;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}
static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static sm_status load_curves(sm_compress *c, const char *path, const cJSON *r) {
    const char *methods = str(r, "methods"), *obj = str(r, "objective");
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(r, "matrices");
    if (num(r, "structmat_curves") != 1 || !methods || !obj || !cJSON_IsArray(ms))
        return sm_fail(SM_ERR_FORMAT, "%s: not a curves file of structmat compress", path);
    double tokens = c->o.calib ? (double)sm_calib_tokens(c->o.calib) : 0;
    if (strcmp(methods, c->methods_text) || strcmp(obj, obj_name(c->obj)) ||
        num(r, "solver") != c->o.solver || num(r, "seed") != (double)c->o.seed ||
        num(r, "calib_tokens") != tokens || num(r, "weights") != (double)c->weights ||
        cJSON_GetArraySize(ms) != c->nm)
        return sm_fail(SM_ERR_ARG,
                       "%s: curves made with other options or for another model "
                       "(methods %s, objective %s, %g calibration tokens, %g weights; now: %s, "
                       "%s, %g, %lld)",
                       path, methods, obj, num(r, "calib_tokens"), num(r, "weights"),
                       c->methods_text, obj_name(c->obj), tokens, (long long)c->weights);
    int i = 0;
    for (const cJSON *o = ms->child; o; o = o->next, i++) {
        cmat *m = &c->m[i];
        const char *name = str(o, "name"), *pin = str(o, "pinned");
        if (!name || strcmp(name, m->t->name) || num(o, "rows") != (double)m->t->shape[0] ||
            num(o, "cols") != (double)m->t->shape[1] || !pin ||
            strcmp(pin, m->pinned ? m->pinned : ""))
            return sm_fail(SM_ERR_ARG,
                           "%s: matrix %d is %s, the model's is %s (or its pin "
                           "differs)",
                           path, i, name ? name : "?", m->t->name);
        sm_status s = recipes_of(c, m);
        if (s != SM_OK) return s;
        m->energy = num(o, "energy");
        const cJSON *sg = cJSON_GetObjectItemCaseSensitive(o, "sigma");
        const cJSON *cs = cJSON_GetObjectItemCaseSensitive(o, "candidates");
        int ns = cJSON_GetArraySize(sg), nc = cJSON_GetArraySize(cs);
        free(m->sigma);
        m->sigma = malloc(sizeof(float) * (size_t)(ns + 1));
        m->c = calloc((size_t)nc + 1, sizeof *m->c);
        if (!m->sigma || !m->c) return sm_fail(SM_ERR_ALLOC, "out of memory");
        m->capc = nc;
        m->nsigma = 0;
        for (const cJSON *v = sg ? sg->child : NULL; v; v = v->next)
            m->sigma[m->nsigma++] = (float)v->valuedouble;
        for (const cJSON *e = cs ? cs->child : NULL; e; e = e->next) {
            double rc = num(e, "recipe"), a = num(e, "a");
            const char *base = str(e, "base"), *spec = str(e, "spec");
            cand *cd = &m->c[m->nc];
            if (!(rc >= 0 && rc < m->nrc) || !base || !spec || strcmp(base, m->rc[(int)rc].base) ||
                a != (double)m->rc[(int)rc].a || num(e, "store") != (double)m->rc[(int)rc].store ||
                !(num(e, "bytes") > 0) || !(num(e, "error") >= 0) || !(num(e, "room") > 0))
                return sm_fail(SM_ERR_FORMAT,
                               "%s: %s: candidate %d does not match this "
                               "version's ladder",
                               path, name, m->nc);
            cd->rc = (int)rc;
            cd->bytes = (int64_t)num(e, "bytes");
            cd->err = num(e, "error");
            cd->room = (int64_t)num(e, "room");
            if (!(cd->spec = strdup(spec))) return sm_fail(SM_ERR_ALLOC, "out of memory");
            m->nc++;
        }
        if (m->nc == 0) return sm_fail(SM_ERR_FORMAT, "%s: %s has no candidates", path, name);
    }
    return SM_OK;
}

sm_status sm_compress_load_curves(sm_compress *c, const char *path) {
    char *text = NULL;
    size_t size;
    sm_status s = sm_read_file(path, &text, &size, (size_t)1 << 31);
    if (s != SM_OK) return s;
    cJSON *r = cJSON_Parse(text);
    free(text);
    if (!r) return sm_fail(SM_ERR_FORMAT, "%s: not valid JSON", path);
    for (int i = 0; i < c->nm; i++) { // start clean
        cmat *m = &c->m[i];
        for (int j = 0; j < m->nc; j++) free(m->c[j].spec);
        free(m->c);
        m->c = NULL, m->nc = m->capc = 0, m->chosen = -1;
    }
    s = load_curves(c, path, r);
    cJSON_Delete(r);
    c->measured = s == SM_OK;
    return s;
}
