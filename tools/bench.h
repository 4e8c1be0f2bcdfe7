/*
 * Helpers shared by the engine sides of the benchmarks
 * (tools/bench-*-engine.c): a monotonic clock and the comparison that
 * sorts times for their median.
 */
#ifndef AISERVE_BENCH_H
#define AISERVE_BENCH_H

#include <time.h>


/* CLOCK_MONOTONIC in seconds */
static inline double
bench_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}


/* qsort() comparison of doubles, ascending */
static inline int
bench_cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}

#endif /* AISERVE_BENCH_H */
