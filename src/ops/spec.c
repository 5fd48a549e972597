// The spec grammar of DESIGN.md:
//   spec  := term ( "+" term )*
//   term  := name [ ":" item ( "," item )* ]
//   item  := key "=" value | flag
// Names and keys are lower case ([a-z][a-z0-9_-]*), values [A-Za-z0-9._:-]+ (so "2:4", "16x16",
// "1e-3" are single values); no spaces and no duplicate keys within a term.
#include "spec.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

static bool is_key_start(char c) {
    return c >= 'a' && c <= 'z';
}

static bool is_key_char(char c) {
    return is_key_start(c) || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static bool is_value_char(char c) {
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == ':' || c == '-';
}

// Reads a key-like word at *p into out; returns its length (0 if none).
static size_t read_word(const char **p, char *out, bool (*start)(char), bool (*more)(char)) {
    const char *s = *p;
    size_t n = 0;
    if (!start(*s)) return 0;
    while (more(s[n])) n++;
    if (n >= SM_SPEC_WORD) return (size_t)-1;
    memcpy(out, s, n);
    out[n] = 0;
    *p = s + n;
    return n;
}

static bool value_start(char c) {
    return is_value_char(c);
}

static sm_status bad(const char *text, const char *at, const char *what) {
    return sm_fail(SM_ERR_SPEC, "spec \"%s\": %s at position %d", text, what, (int)(at - text));
}

sm_status sm_spec_parse(const char *text, sm_spec **out) {
    *out = NULL;
    if (!text || !*text) return sm_fail(SM_ERR_SPEC, "empty spec (expected e.g. lowrank:rank=64)");
    sm_spec *sp = calloc(1, sizeof *sp);
    if (!sp) return sm_fail(SM_ERR_ALLOC, "out of memory");
    const char *p = text;
    sm_status st = SM_OK;
    for (;;) {
        if (sp->nterms == SM_SPEC_MAX_TERMS) {
            st = bad(text, p, "too many terms (at most 8)");
            break;
        }
        sm_term *t = &sp->terms[sp->nterms++];
        size_t n = read_word(&p, t->name, is_key_start, is_key_char);
        if (n == 0) {
            st = bad(text, p, "expected a structure name (lower case)");
            break;
        }
        if (n == (size_t)-1) {
            st = bad(text, p, "name too long");
            break;
        }
        if (*p == ':') {
            p++;
            for (;;) {
                if (t->nitems == SM_SPEC_MAX_ITEMS) {
                    st = bad(text, p, "too many items");
                    break;
                }
                sm_item *it = &t->items[t->nitems];
                n = read_word(&p, it->key, is_key_start, is_key_char);
                if (n == 0 || n == (size_t)-1) {
                    st = bad(text, p, n ? "key too long" : "expected a lower-case key");
                    break;
                }
                for (int i = 0; i < t->nitems; i++)
                    if (strcmp(t->items[i].key, it->key) == 0) {
                        st = sm_fail(SM_ERR_SPEC, "spec \"%s\": duplicate key \"%s\" in %s",
                                     text, it->key, t->name);
                        break;
                    }
                if (st != SM_OK) break;
                if (*p == '=') {
                    p++;
                    n = read_word(&p, it->value, value_start, is_value_char);
                    if (n == 0 || n == (size_t)-1) {
                        st = bad(text, p, n ? "value too long" : "missing value after '='");
                        break;
                    }
                } else {
                    it->flag = true;
                }
                t->nitems++;
                if (*p != ',') break;
                p++;
            }
            if (st != SM_OK) break;
        }
        if (*p == '+') {
            p++;
            continue;
        }
        if (*p != 0) st = bad(text, p, "unexpected character (no spaces; items as key=value)");
        break;
    }
    if (st != SM_OK) {
        free(sp);
        return st;
    }
    *out = sp;
    return SM_OK;
}

void sm_term_print(const sm_term *t, char *buf, size_t cap) {
    size_t len = (size_t)snprintf(buf, cap, "%s", t->name);
    for (int i = 0; i < t->nitems && len < cap; i++) {
        const sm_item *it = &t->items[i];
        len += (size_t)snprintf(buf + len, cap - len, "%s%s%s%s", i ? "," : ":", it->key,
                                it->flag ? "" : "=", it->value);
    }
}

char *sm_spec_print(const sm_spec *spec) {
    size_t cap = (size_t)SM_SPEC_MAX_TERMS * (SM_SPEC_MAX_ITEMS + 1) * 2 * SM_SPEC_WORD + 16;
    char *buf = malloc(cap), term[1024];
    if (!buf) return NULL;
    buf[0] = 0;
    size_t len = 0;
    for (int i = 0; i < spec->nterms; i++) {
        sm_term_print(&spec->terms[i], term, sizeof term);
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? "+" : "", term);
    }
    return buf;
}

bool sm_spec_equal(const sm_spec *a, const sm_spec *b) {
    if (a->nterms != b->nterms) return false;
    for (int i = 0; i < a->nterms; i++) {
        const sm_term *x = &a->terms[i], *y = &b->terms[i];
        if (strcmp(x->name, y->name) || x->nitems != y->nitems) return false;
        for (int j = 0; j < x->nitems; j++)
            if (strcmp(x->items[j].key, y->items[j].key) ||
                strcmp(x->items[j].value, y->items[j].value) ||
                x->items[j].flag != y->items[j].flag)
                return false;
    }
    return true;
}

void sm_spec_free(sm_spec *spec) {
    free(spec);
}

const sm_item *sm_term_find(const sm_term *t, const char *key) {
    for (int i = 0; i < t->nitems; i++)
        if (strcmp(t->items[i].key, key) == 0) return &t->items[i];
    return NULL;
}

sm_status sm_term_check_keys(const sm_term *t, const char *allowed) {
    for (int i = 0; i < t->nitems; i++) {
        const char *k = t->items[i].key, *a = allowed;
        size_t kl = strlen(k);
        bool ok = false;
        while (*a && !ok) {
            const char *e = strchr(a, ',');
            size_t al = e ? (size_t)(e - a) : strlen(a);
            ok = al == kl && strncmp(a, k, kl) == 0;
            a += al + (e ? 1 : 0);
        }
        if (!ok)
            return sm_fail(SM_ERR_SPEC, "%s: unknown key \"%s\" (expected one of: %s)", t->name,
                           k, *allowed ? allowed : "none");
    }
    return SM_OK;
}

static sm_status need_value(const sm_term *t, const sm_item *it) {
    if (it->flag)
        return sm_fail(SM_ERR_SPEC, "%s: \"%s\" needs a value (%s=...)", t->name, it->key,
                       it->key);
    return SM_OK;
}

sm_status sm_term_int(const sm_term *t, const char *key, int64_t def, int64_t lo, int64_t hi,
                      int64_t *out) {
    const sm_item *it = sm_term_find(t, key);
    *out = def;
    if (!it) return SM_OK;
    sm_status st = need_value(t, it);
    if (st != SM_OK) return st;
    char *end;
    errno = 0;
    long long v = strtoll(it->value, &end, 10);
    if (*end || errno || !isdigit((unsigned char)it->value[0]))
        return sm_fail(SM_ERR_SPEC, "%s: %s=%s is not a whole number", t->name, key, it->value);
    if (v < lo || v > hi)
        return sm_fail(SM_ERR_SPEC, "%s: %s=%lld is out of range [%lld, %lld]", t->name, key, v,
                       (long long)lo, (long long)hi);
    *out = v;
    return SM_OK;
}

sm_status sm_term_real(const sm_term *t, const char *key, double def, double lo, double hi,
                       double *out) {
    const sm_item *it = sm_term_find(t, key);
    *out = def;
    if (!it) return SM_OK;
    sm_status st = need_value(t, it);
    if (st != SM_OK) return st;
    char *end;
    double v = strtod(it->value, &end);
    // Decimal only: strtod also reads hexadecimal ("0x1p-2"), infinities and NaNs.
    if (*end || !isfinite(v) || strpbrk(it->value, "xX"))
        return sm_fail(SM_ERR_SPEC, "%s: %s=%s is not a number", t->name, key, it->value);
    if (v < lo || v > hi)
        return sm_fail(SM_ERR_SPEC, "%s: %s=%s is out of range [%g, %g]", t->name, key,
                       it->value, lo, hi);
    *out = v;
    return SM_OK;
}

sm_status sm_term_dims(const sm_term *t, const char *key, int64_t *a, int64_t *b, bool *present) {
    const sm_item *it = sm_term_find(t, key);
    *present = it != NULL;
    if (!it) return SM_OK;
    sm_status st = need_value(t, it);
    if (st != SM_OK) return st;
    // Digits only (no signs, no overflow: sscanf's %lld allows both).
    int64_t v[2] = {0, 0};
    const char *s = it->value;
    bool ok = true;
    for (int i = 0; i < 2 && ok; i++) {
        ok = isdigit((unsigned char)*s);
        for (; ok && isdigit((unsigned char)*s); s++) {
            if (v[i] > (INT64_MAX - 9) / 10)
                ok = false;
            else
                v[i] = v[i] * 10 + (*s - '0');
        }
        if (ok && i == 0) ok = *s++ == 'x';
    }
    if (!ok || *s || v[0] <= 0 || v[1] <= 0)
        return sm_fail(SM_ERR_SPEC, "%s: %s=%s is not of the form PxQ with P, Q >= 1", t->name,
                       key, it->value);
    *a = v[0];
    *b = v[1];
    return SM_OK;
}

sm_status sm_term_choice(const sm_term *t, const char *key, const char *choices, int def,
                         int *out) {
    const sm_item *it = sm_term_find(t, key);
    *out = def;
    if (!it) return SM_OK;
    sm_status st = need_value(t, it);
    if (st != SM_OK) return st;
    const char *c = choices;
    size_t vl = strlen(it->value);
    for (int i = 0; *c; i++) {
        const char *e = strchr(c, '|');
        size_t cl = e ? (size_t)(e - c) : strlen(c);
        if (cl == vl && strncmp(c, it->value, vl) == 0) {
            *out = i;
            return SM_OK;
        }
        c += cl + (e ? 1 : 0);
    }
    return sm_fail(SM_ERR_SPEC, "%s: %s=%s is not one of %s", t->name, key, it->value, choices);
}

bool sm_term_flag(const sm_term *t, const char *key) {
    const sm_item *it = sm_term_find(t, key);
    return it && it->flag;
}

void sm_canon_init(sm_canon *c, const char *name) {
    snprintf(c->buf, sizeof c->buf, "%s", name);
    c->nitems = 0;
}

void sm_canon_add(sm_canon *c, const char *key, const char *fmt, ...) {
    size_t len = strlen(c->buf);
    len += (size_t)snprintf(c->buf + len, sizeof c->buf - len, "%s%s=", c->nitems ? "," : ":",
                            key);
    va_list ap;
    va_start(ap, fmt);
    if (len < sizeof c->buf) vsnprintf(c->buf + len, sizeof c->buf - len, fmt, ap);
    va_end(ap);
    c->nitems++;
}

void sm_canon_flag(sm_canon *c, const char *flag) {
    size_t len = strlen(c->buf);
    snprintf(c->buf + len, sizeof c->buf - len, "%s%s", c->nitems ? "," : ":", flag);
    c->nitems++;
}
