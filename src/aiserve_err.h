/*
 * Error messages of the nginx-free engine: every engine call that can fail
 * takes (char *err, size_t err_len) and fills it with one line that names
 * the file, the tensor or the byte at fault.
 */
#ifndef AISERVE_ERR_H
#define AISERVE_ERR_H

#include <stddef.h>

/* Formats printf-style into err (err_len bytes, always NUL-terminated,
 * truncated if longer); does nothing when err is NULL or err_len is 0. */
void aiserve_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* AISERVE_ERR_H */
