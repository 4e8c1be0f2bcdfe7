/*
 * Minimal TAP producer for the engine's unit tests (run by prove).
 * Each test binary prints "ok N - name" / "not ok N - name" lines and a plan
 * at the end; diagnostics go to stdout prefixed with '#'.
 */
#ifndef AISERVE_TAP_H
#define AISERVE_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int tap_n, tap_failed;

static int
tap_ok(int cond, const char *fmt, ...)
{
    va_list ap;

    tap_n++;
    if (!cond) {
        tap_failed++;
    }
    printf("%sok %d - ", cond ? "" : "not ", tap_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return cond;
}

static void
tap_diag(const char *fmt, ...)
{
    va_list ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static int
tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
