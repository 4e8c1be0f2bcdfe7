/*
 * Error messages of the nginx-free engine (see aiserve_err.h).
 */
#include <stdarg.h>
#include <stdio.h>

#include "aiserve_err.h"


void
aiserve_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL || err_len == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}
