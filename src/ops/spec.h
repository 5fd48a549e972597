// Parsed spec strings (grammar in docs/specs.md) and typed access to a term's items.
#ifndef SM_SPEC_H
#define SM_SPEC_H

#include "../base/base.h"

#define SM_SPEC_MAX_TERMS 8
#define SM_SPEC_MAX_ITEMS 12
#define SM_SPEC_WORD 32

typedef struct sm_item {
    char key[SM_SPEC_WORD];
    char value[SM_SPEC_WORD]; // "" for a flag
    bool flag;
} sm_item;

typedef struct sm_term {
    char name[SM_SPEC_WORD];
    int nitems;
    sm_item items[SM_SPEC_MAX_ITEMS];
} sm_term;

struct sm_spec {
    int nterms;
    sm_term terms[SM_SPEC_MAX_TERMS];
};

// Prints one term canonically into buf (items in stored order).
void sm_term_print(const sm_term *t, char *buf, size_t cap);
const sm_item *sm_term_find(const sm_term *t, const char *key);
// Fails naming the first key of t that is not in the comma-separated list `allowed`.
sm_status sm_term_check_keys(const sm_term *t, const char *allowed);

// Typed getters: SM_OK with *out = def when absent, SM_ERR_SPEC when the value is malformed or
// out of range (the message names the term, the key and what was expected).
sm_status sm_term_int(const sm_term *t, const char *key, int64_t def, int64_t lo, int64_t hi,
                      int64_t *out);
sm_status sm_term_real(const sm_term *t, const char *key, double def, double lo, double hi,
                       double *out);
// "PxQ"
sm_status sm_term_dims(const sm_term *t, const char *key, int64_t *a, int64_t *b, bool *present);
// One of the '|'-separated choices; *out = index, def when absent.
sm_status sm_term_choice(const sm_term *t, const char *key, const char *choices, int def,
                         int *out);
bool sm_term_flag(const sm_term *t, const char *key);

// Builds a canonical spec text: name, then items in the order they are added.
typedef struct sm_canon {
    char buf[256];
    int nitems;
} sm_canon;
void sm_canon_init(sm_canon *c, const char *name);
void sm_canon_add(sm_canon *c, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void sm_canon_flag(sm_canon *c, const char *flag);

#endif
