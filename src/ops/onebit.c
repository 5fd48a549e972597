// onebit: placeholder until the structure lands (fit refuses).
#include "op_impl.h"

static sm_status todo_fit(sm_op *op, const sm_term *t, const float *W, const sm_fit_opts *o) {
    (void)op, (void)W, (void)o;
    return sm_fail(SM_ERR_UNSUPPORTED, "%s is not built yet", t->name);
}

const sm_op_vtbl sm_vtbl_onebit = {.name = "onebit", .keys = "", .help = "  (not built yet)", .fit = todo_fit};
