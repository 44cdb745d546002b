/* status.c - error messages as values: a failing core function records why in
 * a thread-local buffer and returns a code; callers decide what to do. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static _Thread_local char message[1024];

const char *kd_error_message(void) { return message[0] ? message : "no error"; }

kd_status kd_fail(kd_status code, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    return code;
}

const char *kd_status_name(kd_status code) {
    switch (code) {
    case KD_OK: return "ok";
    case KD_ERR_ARG: return "bad argument";
    case KD_ERR_SHAPE: return "shape mismatch";
    case KD_ERR_DTYPE: return "wrong dtype";
    case KD_ERR_MEMORY: return "out of memory";
    case KD_ERR_IO: return "I/O error";
    case KD_ERR_FORMAT: return "malformed file";
    case KD_ERR_STATE: return "invalid state";
    }
    return "unknown error";
}

kd_status kd_check_not_null(const char *op, const char *what, const void *p) {
    return p ? KD_OK : kd_fail(KD_ERR_ARG, "%s: %s is missing", op, what);
}

kd_status kd_check_dtype(const char *op, const char *what, const kd_tensor *t,
                         kd_dtype dtype) {
    if (!t) return kd_fail(KD_ERR_ARG, "%s: %s is missing", op, what);
    if (t->dtype != dtype)
        return kd_fail(KD_ERR_DTYPE, "%s: %s must be %s, got %s %s", op, what,
                       kd_dtype_name(dtype), kd_dtype_name(t->dtype), kd_shape_str(t));
    return KD_OK;
}

kd_status kd_check_f32(const char *op, const char *what, const kd_tensor *t) {
    return kd_check_dtype(op, what, t, KD_F32);
}

kd_status kd_check_ndim(const char *op, const char *what, const kd_tensor *t, int ndim) {
    if (t->ndim != ndim)
        return kd_fail(KD_ERR_SHAPE, "%s: %s must be %d-D, got %s", op, what, ndim,
                       kd_shape_str(t));
    return KD_OK;
}

kd_status kd_check_same_shape(const char *op, const kd_tensor *a, const kd_tensor *b) {
    if (!kd_same_shape(a, b))
        return kd_fail(KD_ERR_SHAPE, "%s: shapes %s and %s differ", op, kd_shape_str(a),
                       kd_shape_str(b));
    return KD_OK;
}
