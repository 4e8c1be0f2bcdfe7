/*
 * bench-ledger: the per-request work of aiserve_meter that happens outside
 * the shared zone, timed one operation at a time on a real LMDB ledger:
 * HMAC-SHA-256 of the key (one-shot, and with the keyed context nginx
 * uses), key lookup (one reused read transaction), the key checksum and a
 * synced flush of usage rows.  Complements
 * tools/bench-meter, whose end-to-end numbers a busy host blurs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aiserve_ledger.h"


static double
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}


static void
usage(void)
{
    printf("usage: tools/bench-ledger [--db DIR] [--keys N] [--iterations N]\n"
           "\n"
           "Times, per operation, what aiserve_meter does for each request\n"
           "outside the shared zone (key checksum, HMAC-SHA-256, LMDB key\n"
           "lookup) and a synced flush of usage rows, on a ledger in DIR\n"
           "(default: a new one under /tmp, removed afterwards) holding N\n"
           "keys (default 1000).  Prints a Markdown table.\n");
}


int
main(int argc, char **argv)
{
    int                i, n_keys = 1000, iters = 200000, keep = 0, rows;
    int                pass;
    char               err[512], dir[256], cmd[300];
    char             (*secrets)[AISERVE_API_KEY_MAX];
    double             t0, t_check, t_hmac, t_hmac_ctx, t_lookup, t_flush;
    aiserve_key_hmac_t  *hm;
    uint8_t            pepper[AISERVE_PEPPER_LEN], h[AISERVE_HASH_LEN];
    uint64_t           seq;
    aiserve_key_t      k;
    aiserve_usage_t    u;
    aiserve_row_key_t  rk;
    aiserve_ledger_t  *l;
    volatile int       sink = 0;

    snprintf(dir, sizeof(dir), "/tmp/bench-ledger.%d", (int) getpid());

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage();
            return 0;
        }
        if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
            snprintf(dir, sizeof(dir), "%s", argv[++i]);
            keep = 1;
            continue;
        }
        if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc) {
            n_keys = atoi(argv[++i]);
            continue;
        }
        if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
            iters = atoi(argv[++i]);
            continue;
        }
        usage();
        return 2;
    }

    if (n_keys < 1 || iters < 1) {
        usage();
        return 2;
    }

    if (aiserve_ledger_open(&l, dir, 0, AISERVE_LEDGER_CREATE, err,
                            sizeof(err))
        != AISERVE_LEDGER_OK)
    {
        fprintf(stderr, "bench-ledger: %s\n", err);
        return 1;
    }

    secrets = calloc(n_keys, AISERVE_API_KEY_MAX);
    if (secrets == NULL) {
        return 1;
    }

    for (i = 0; i < n_keys; i++) {
        memset(&k, 0, sizeof(k));
        snprintf(k.name, sizeof(k.name), "bench%d", i);
        if (aiserve_ledger_key_create(l, &k, "live", secrets[i])
            != AISERVE_LEDGER_OK)
        {
            fprintf(stderr, "bench-ledger: %s\n", aiserve_ledger_error(l));
            return 1;
        }
    }

    aiserve_ledger_read_pepper(dir, pepper, err, sizeof(err));

    /* each operation: the fastest of 5 passes, the least disturbed by
     * other work on the host */
    hm = aiserve_key_hmac_create(pepper);
    if (hm == NULL) {
        fprintf(stderr, "bench-ledger: no HMAC context\n");
        return 1;
    }

    t_check = t_hmac = t_hmac_ctx = t_lookup = 1e18;

    for (pass = 0; pass < 5; pass++) {
        double  t;

        t0 = now_ns();
        for (i = 0; i < iters; i++) {
            const char  *s = secrets[i % n_keys];

            sink += aiserve_key_well_formed(s, strlen(s));
        }
        t = (now_ns() - t0) / iters;
        t_check = t < t_check ? t : t_check;

        t0 = now_ns();
        for (i = 0; i < iters; i++) {
            const char  *s = secrets[i % n_keys];

            aiserve_key_hash(pepper, s, strlen(s), h);
            sink += h[0];
        }
        t = (now_ns() - t0) / iters;
        t_hmac = t < t_hmac ? t : t_hmac;

        t0 = now_ns();
        for (i = 0; i < iters; i++) {
            const char  *s = secrets[i % n_keys];

            aiserve_key_hmac(hm, s, strlen(s), h);
            sink += h[0];
        }
        t = (now_ns() - t0) / iters;
        t_hmac_ctx = t < t_hmac_ctx ? t : t_hmac_ctx;

        t0 = now_ns();
        for (i = 0; i < iters; i++) {
            const char  *s = secrets[(i * 7919) % n_keys];

            aiserve_key_hmac(hm, s, strlen(s), h);
            if (aiserve_ledger_key_lookup(l, h, &k) != AISERVE_LEDGER_OK) {
                fprintf(stderr, "bench-ledger: lookup failed\n");
                return 1;
            }
            sink += k.id;
        }
        t = (now_ns() - t0) / iters - t_hmac_ctx;
        t_lookup = t < t_lookup ? t : t_lookup;
    }

    memset(&u, 0, sizeof(u));
    u.requests = 10;
    u.prompt_tokens = 100;
    rows = n_keys < 100 ? n_keys : 100;

    t_flush = 1e18;

    for (i = 0; i < 20; i++) {
        int     j;
        double  t;

        t0 = now_ns();
        aiserve_ledger_wbegin(l, &seq);
        for (j = 0; j < rows; j++) {
            memset(&rk, 0, sizeof(rk));
            rk.key_id = (uint32_t) j + 1;
            rk.day = 20261130;
            snprintf(rk.model, sizeof(rk.model), "minilm");
            aiserve_ledger_wadd(l, &rk, &u);
        }
        if (aiserve_ledger_wcommit(l, seq + 1) != AISERVE_LEDGER_OK) {
            fprintf(stderr, "bench-ledger: %s\n", aiserve_ledger_error(l));
            return 1;
        }
        t = now_ns() - t0;
        t_flush = t < t_flush ? t : t_flush;
    }

    printf("ledger: %d keys; fastest of 5 passes of %d iterations, of 20 "
           "flushes (sink %d)\n\n", n_keys, iters, sink & 1);
    printf("| operation | time |\n|---|---:|\n");
    printf("| key checksum (SHA-256 of 41 bytes; CLI and scanners) "
           "| %.2f us |\n",
           t_check / 1000);
    printf("| HMAC-SHA-256 of the key, one-shot HMAC() | %.2f us |\n",
           t_hmac / 1000);
    printf("| HMAC-SHA-256 of the key, keyed context (what nginx uses) "
           "| %.2f us |\n", t_hmac_ctx / 1000);
    printf("| LMDB key lookup (hash -> id -> record) | %.2f us |\n",
           t_lookup / 1000);
    printf("| per request in nginx: keyed HMAC and lookup | %.2f us |\n",
           (t_hmac_ctx + t_lookup) / 1000);
    printf("| flush of %d usage rows, one synced transaction | %.2f ms |\n",
           rows, t_flush / 1e6);

    aiserve_key_hmac_free(hm);
    aiserve_ledger_close(l);
    free(secrets);

    if (!keep) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "bench-ledger: cannot remove %s\n", dir);
        }
    }

    return 0;
}
