// Internal to the io layer.
#ifndef SM_IO_IMPL_H
#define SM_IO_IMPL_H

#include "../base/base.h"

// The tensors whose names begin with prefix, in name order: *count consecutive entries of the
// name index (a binary search, so that loading each of many operators does not scan every tensor).
const sm_tensor_info *const *sm_st_prefix_run(const sm_st *st, const char *prefix, int *count);

#endif
