/*
 * Unit tests of the ledger (src/aiserve_ledger.c) on a real LMDB
 * environment in a temporary directory.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aiserve_ledger.h"
#include "tap.h"

static char  dir[128];


static int
count_cb(const aiserve_row_key_t *rk, const aiserve_usage_t *u, void *arg)
{
    ((uint64_t *) arg)[0]++;
    ((uint64_t *) arg)[1] += u->prompt_tokens;
    return 0;
}


static int
key_count_cb(const aiserve_key_t *k, void *arg)
{
    (*(int *) arg)++;
    return 0;
}


static void
test_key_format(void)
{
    char    a[AISERVE_API_KEY_MAX], b[AISERVE_API_KEY_MAX];
    char    bad[AISERVE_API_KEY_MAX + 24];

    tap_ok(aiserve_key_generate("live", a) == 0, "generate a live key");
    tap_ok(strncmp(a, "ais_live_", 9) == 0, "typed prefix ais_live_");
    tap_ok(strlen(a) == 9 + AISERVE_KEY_RANDOM_CHARS
                        + AISERVE_KEY_CHECK_CHARS, "length %zu", strlen(a));
    tap_ok(aiserve_key_well_formed(a, strlen(a)), "checksum verifies");

    aiserve_key_generate("live", b);
    tap_ok(strcmp(a, b) != 0, "two keys differ");

    snprintf(bad, sizeof(bad), "%s", a);
    bad[12] = bad[12] == 'x' ? 'y' : 'x';
    tap_ok(!aiserve_key_well_formed(bad, strlen(bad)),
           "one changed character fails the checksum");
    tap_ok(!aiserve_key_well_formed(a, strlen(a) - 1), "truncated key fails");
    tap_ok(aiserve_key_shaped(bad, strlen(bad))
           && !aiserve_key_shaped(a, strlen(a) - 1)
           && !aiserve_key_shaped("ais_live_", 9),
           "shape check: checksum not verified, length and alphabet are");
    tap_ok(aiserve_key_generate("LIVE", b) == -1, "upper-case type refused");
    tap_ok(aiserve_key_generate("test", b) == 0
           && strncmp(b, "ais_test_", 9) == 0, "test key type");

    snprintf(bad, sizeof(bad), "/v1/x?api_key=%s&y=1", a);
    tap_ok(aiserve_key_mask(bad, strlen(bad)) == 1
           && strncmp(bad + 14, a, 13) == 0
           && strspn(bad + 27, "*") == 34
           && strcmp(bad + 61, "&y=1") == 0,
           "key in a query string masked: prefix and 4 characters kept");
    tap_ok(aiserve_key_mask(bad, strlen(bad)) == 0,
           "a masked key is not found again");

    snprintf(bad, sizeof(bad), "model=ais_live_short");
    tap_ok(aiserve_key_mask(bad, strlen(bad)) == 0
           && strcmp(bad, "model=ais_live_short") == 0,
           "short look-alike not taken for a key");
}


static void
test_key_mask(void)
{
    int          i;
    char         a[AISERVE_API_KEY_MAX], buf[256], want[256];
    const char  *glue[] = { "x", "ZeZx", "9" };

    aiserve_key_generate("live", a);

    /* glued to alphanumerics: the 38 characters after the prefix are the
     * key, what follows stays */
    for (i = 0; i < 3; i++) {
        snprintf(buf, sizeof(buf), "k=%s%s&z", a, glue[i]);
        snprintf(want, sizeof(want), "k=%.13s%s%s&z", a,
                 "**********************************", glue[i]);
        tap_ok(aiserve_key_mask(buf, strlen(buf)) == 1
               && strcmp(buf, want) == 0,
               "key glued to \"%s\" masked: %s", glue[i], buf);
    }

    snprintf(buf, sizeof(buf), "k=zzais_live_%s", a + 9);
    tap_ok(aiserve_key_mask(buf, strlen(buf)) == 1
           && strspn(buf + 17, "*") == 34, "glued to what precedes it");

    /* percent-encoded prefix, once and twice (RFC 3986 2.1) */
    snprintf(buf, sizeof(buf), "k=ais%%5Flive%%5F%s", a + 9);
    tap_ok(aiserve_key_mask(buf, strlen(buf)) == 1
           && strncmp(buf + 15, a + 9, 4) == 0
           && strspn(buf + 19, "*") == 34 && buf[53] == '\0',
           "ais%%5Flive%%5F...: %s", buf);

    snprintf(buf, sizeof(buf), "k=%%61is_live_%s", a + 9);
    tap_ok(aiserve_key_mask(buf, strlen(buf)) == 1
           && strspn(buf + 17, "*") == 34, "%%61is_live_...: %s", buf);

    snprintf(buf, sizeof(buf), "k=%%2561is_live_%s", a + 9);
    tap_ok(aiserve_key_mask(buf, strlen(buf)) == 1
           && strspn(buf + 19, "*") == 34, "%%2561is_live_...: %s", buf);

    /* encoded characters of the secret: every raw byte of them masked */
    snprintf(buf, sizeof(buf), "k=%.13s%%%02X%s", a, a[13], a + 14);
    tap_ok(aiserve_key_mask(buf, strlen(buf)) == 1
           && strspn(buf + 15, "*") == 36, "%%XX in the secret: %s", buf);

    /* lower-case hex, and two keys in one line */
    snprintf(buf, sizeof(buf), "%%61is%%5flive%%5f%s %s", a + 9, a);
    tap_ok(aiserve_key_mask(buf, strlen(buf)) == 2
           && strstr(buf, a + 13) == NULL, "two keys, lower-case hex");

    /* not keys: a '%' that decodes to nothing, a short run, a long type */
    snprintf(buf, sizeof(buf), "%%%%%%zz ais%%5Glive_%s", a + 9);
    snprintf(want, sizeof(want), "%s", buf);
    tap_ok(aiserve_key_mask(buf, strlen(buf)) == 0
           && strcmp(buf, want) == 0, "bad escapes are not decoded");

    snprintf(buf, sizeof(buf), "ais_abcdefghi_%s", a + 9);
    tap_ok(aiserve_key_mask(buf, strlen(buf)) == 0,
           "a type over 8 letters is not a key's");

    snprintf(buf, sizeof(buf), "ais_live_%.37s", a + 9);
    tap_ok(aiserve_key_mask(buf, strlen(buf)) == 0, "37 characters: no key");

    /* a truncated escape at the end of the text */
    snprintf(buf, sizeof(buf), "ais%%5");
    tap_ok(aiserve_key_mask(buf, strlen(buf)) == 0, "truncated escape");
}


static void
test_hash(void)
{
    uint8_t  p1[AISERVE_PEPPER_LEN], p2[AISERVE_PEPPER_LEN];
    uint8_t  h1[AISERVE_HASH_LEN], h2[AISERVE_HASH_LEN];

    memset(p1, 1, sizeof(p1));
    memset(p2, 2, sizeof(p2));

    aiserve_key_hash(p1, "ais_live_x", 10, h1);
    aiserve_key_hash(p1, "ais_live_x", 10, h2);
    tap_ok(memcmp(h1, h2, sizeof(h1)) == 0, "HMAC is deterministic");

    aiserve_key_hash(p2, "ais_live_x", 10, h2);
    tap_ok(memcmp(h1, h2, sizeof(h1)) != 0, "HMAC depends on the pepper");

    {
        int                  i, same = 1;
        const char          *keys[] = { "a", "ais_live_x", "Hi There", "" };
        aiserve_key_hmac_t  *hm;

        hm = aiserve_key_hmac_create(p1);
        tap_ok(hm != NULL, "keyed HMAC context");
        for (i = 0; hm && i < 4; i++) {
            aiserve_key_hash(p1, keys[i], strlen(keys[i]), h1);
            if (aiserve_key_hmac(hm, keys[i], strlen(keys[i]), h2) != 0
                || memcmp(h1, h2, sizeof(h1)) != 0)
            {
                same = 0;
            }
        }
        tap_ok(same, "keyed context == one-shot HMAC, reused 4 times");
        aiserve_key_hmac_free(hm);
    }

    /* vector from Python's hmac module:
     * hmac.new(b"\x0b" * 32, b"Hi There", hashlib.sha256) */
    memset(p1, 0x0b, sizeof(p1));
    aiserve_key_hash(p1, "Hi There", 8, h1);
    tap_ok(h1[0] == 0x19 && h1[1] == 0x8a && h1[2] == 0x60,
           "HMAC-SHA-256 vector (32 x 0x0b, \"Hi There\")");
}


static void
test_keys(void)
{
    int                rc, n;
    char               secret[AISERVE_API_KEY_MAX], err[256];
    uint8_t            pepper[AISERVE_PEPPER_LEN], h[AISERVE_HASH_LEN];
    struct stat        st;
    aiserve_key_t      k, got;
    aiserve_ledger_t  *l;

    rc = aiserve_ledger_open(&l, dir, 0, 0, err, sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_ERROR, "open without CREATE fails on a "
           "missing ledger");

    rc = aiserve_ledger_open(&l, dir, 0, AISERVE_LEDGER_CREATE, err,
                             sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "create ledger (%s)", err);

    snprintf(err, sizeof(err), "%s/hmac.key", dir);
    tap_ok(stat(err, &st) == 0 && (st.st_mode & 0777) == 0600
           && st.st_size == AISERVE_PEPPER_LEN, "hmac.key is 32 bytes, 0600");

    memset(&k, 0, sizeof(k));
    snprintf(k.name, sizeof(k.name), "alice");
    snprintf(k.models, sizeof(k.models), "tiny,mini");
    k.rpm = 60;

    rc = aiserve_ledger_key_create(l, &k, "live", secret);
    tap_ok(rc == AISERVE_LEDGER_OK && k.id == 1, "first key has id 1");
    tap_ok(strncmp(k.prefix, secret, strlen(k.prefix)) == 0
           && strlen(k.prefix) == 13, "prefix is ais_live_ + 4 (%s)",
           k.prefix);
    tap_ok(strcmp(k.last4, secret + strlen(secret) - 4) == 0, "last4");

    aiserve_ledger_read_pepper(dir, pepper, err, sizeof(err));
    aiserve_key_hash(pepper, secret, strlen(secret), h);

    rc = aiserve_ledger_key_lookup(l, h, &got);
    tap_ok(rc == AISERVE_LEDGER_OK && got.id == 1 && got.rpm == 60
           && strcmp(got.name, "alice") == 0, "lookup by HMAC");

    h[0] ^= 1;
    tap_ok(aiserve_ledger_key_lookup(l, h, &got) == AISERVE_LEDGER_NOTFOUND,
           "unknown hash not found");

    tap_ok(aiserve_key_model_allowed(&k, "tiny", 4)
           && aiserve_key_model_allowed(&k, "mini", 4)
           && !aiserve_key_model_allowed(&k, "min", 3)
           && !aiserve_key_model_allowed(&k, "big", 3), "model list");

    got.status = AISERVE_KEY_REVOKED;
    tap_ok(aiserve_ledger_key_put(l, &got) == AISERVE_LEDGER_OK, "revoke");

    h[0] ^= 1;
    aiserve_ledger_key_lookup(l, h, &got);
    tap_ok(got.status == AISERVE_KEY_REVOKED, "revoked status read back");

    memset(&k, 0, sizeof(k));
    aiserve_ledger_key_create(l, &k, "live", secret);
    tap_ok(k.id == 2, "second key has id 2");

    got = k;
    got.tpm = AISERVE_KEY_LIMIT_MAX + 1;
    tap_ok(aiserve_ledger_key_put(l, &got) == AISERVE_LEDGER_ERROR
           && strstr(aiserve_ledger_error(l), "maximum") != NULL,
           "a limit over AISERVE_KEY_LIMIT_MAX refused: %s",
           aiserve_ledger_error(l));
    got.tpm = AISERVE_KEY_LIMIT_MAX;
    got.budget_tokens = 100;
    tap_ok(aiserve_ledger_key_put(l, &got) == AISERVE_LEDGER_ERROR,
           "a budget without a period refused: %s",
           aiserve_ledger_error(l));
    got.budget_period = AISERVE_PERIOD_DAY;
    tap_ok(aiserve_ledger_key_put(l, &got) == AISERVE_LEDGER_OK,
           "the maximum itself, a budget per day");
    got.budget_tokens = AISERVE_KEY_LIMIT_MAX + 1;
    got.id = 0;
    tap_ok(aiserve_ledger_key_create(l, &got, "live", secret)
           == AISERVE_LEDGER_ERROR, "create refuses it too");

    k.id = 99;
    tap_ok(aiserve_ledger_key_put(l, &k) == AISERVE_LEDGER_NOTFOUND,
           "put of a missing id is NOTFOUND");

    n = 0;
    aiserve_ledger_key_each(l, key_count_cb, &n);
    tap_ok(n == 2, "two keys listed");

    aiserve_ledger_close(l);

    /* a reader without the pepper (nginx workers, CLI list) */
    rc = aiserve_ledger_open(&l, dir, 0, AISERVE_LEDGER_NO_PEPPER, err,
                             sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "open without pepper");
    tap_ok(aiserve_ledger_key_create(l, &k, "live", secret)
           == AISERVE_LEDGER_ERROR, "no key creation without pepper");
    aiserve_ledger_close(l);
}


static void
test_usage(void)
{
    int                rc;
    char               err[256], id1[17], id2[17];
    uint64_t           seq, cnt[2], tokens;
    aiserve_usage_t    u;
    aiserve_row_key_t  rk;
    aiserve_ledger_t  *l;

    aiserve_ledger_open(&l, dir, 0, AISERVE_LEDGER_NO_PEPPER, err,
                        sizeof(err));

    tap_ok(aiserve_ledger_wbegin(l, &seq) == AISERVE_LEDGER_OK && seq == 0,
           "first flush sees seq 0");

    memset(&rk, 0, sizeof(rk));
    memset(&u, 0, sizeof(u));
    rk.key_id = 1;
    rk.day = 20261130;
    snprintf(rk.model, sizeof(rk.model), "tiny");
    u.requests = 2;
    u.prompt_tokens = 10;
    u.cost_nano = 10 * 1500;

    aiserve_ledger_wadd(l, &rk, &u);
    aiserve_ledger_wadd(l, &rk, &u);
    rk.day = 20261201;
    aiserve_ledger_wadd(l, &rk, &u);
    rk.key_id = 2;
    aiserve_ledger_wadd(l, &rk, &u);
    tap_ok(aiserve_ledger_wcommit(l, 1) == AISERVE_LEDGER_OK, "commit");

    aiserve_ledger_flush_seq(l, &seq);
    tap_ok(seq == 1, "flush_seq committed with the rows");

    aiserve_ledger_wbegin(l, &seq);
    rk.key_id = 1;
    aiserve_ledger_wadd(l, &rk, &u);
    aiserve_ledger_wabort(l);
    aiserve_ledger_flush_seq(l, &seq);
    tap_ok(seq == 1, "aborted flush leaves seq");

    memset(cnt, 0, sizeof(cnt));
    aiserve_ledger_usage_each(l, 1, 0, 0, count_cb, cnt);
    tap_ok(cnt[0] == 2 && cnt[1] == 30, "key 1: 2 rows, 30 tokens "
           "(aborted add not counted) [%llu %llu]",
           (unsigned long long) cnt[0], (unsigned long long) cnt[1]);

    memset(cnt, 0, sizeof(cnt));
    aiserve_ledger_usage_each(l, 0, 20261201, 20261231, count_cb, cnt);
    tap_ok(cnt[0] == 2 && cnt[1] == 20, "all keys, December: 2 rows");

    aiserve_ledger_tokens_used(l, 1, 20261101, 20261131, &tokens);
    tap_ok(tokens == 20, "tokens used by key 1 in November: 20");

    rk.key_id = 1;
    rk.day = 20261130;
    aiserve_row_id(&rk, id1);
    aiserve_row_id(&rk, id2);
    tap_ok(strlen(id1) == 16 && strcmp(id1, id2) == 0, "row id stable: %s",
           id1);
    rk.day = 20261201;
    aiserve_row_id(&rk, id2);
    tap_ok(strcmp(id1, id2) != 0, "row id differs by day");

    tap_ok(aiserve_cost_micro(1499) == 1 && aiserve_cost_micro(1500) == 2
           && aiserve_cost_micro(0) == 0, "cost rounds half up");
    tap_ok(aiserve_day(0) == 19700101 && aiserve_day(1798675200) == 20261231,
           "UTC day");

    rc = 0;
    {
        size_t  s;

        rc = aiserve_parse_size("64k", &s) == 0 && s == 65536
             && aiserve_parse_size("2m", &s) == 0 && s == 2097152
             && aiserve_parse_size("2x", &s) == -1;
    }
    tap_ok(rc, "parse sizes");

    aiserve_ledger_close(l);
}


/* Fills a small map: FULL is reported, nothing committed is lost, growing
 * lets the same flush succeed. */
static void
test_map_full(void)
{
    int                rc, i, full = 0;
    char               err[256], d[300];
    size_t             map, used;
    uint64_t           seq, cnt[2];
    aiserve_usage_t    u;
    aiserve_row_key_t  rk;
    aiserve_ledger_t  *l;

    snprintf(d, sizeof(d), "%s/small", dir);
    rc = aiserve_ledger_open(&l, d, 64 * 1024,
                             AISERVE_LEDGER_CREATE | AISERVE_LEDGER_NO_PEPPER,
                             err, sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "small ledger (%s)", err);

    memset(&u, 0, sizeof(u));
    u.requests = 1;
    u.prompt_tokens = 7;

    for (i = 0; i < 100000 && !full; i += 100) {
        int  j;

        aiserve_ledger_wbegin(l, &seq);
        for (j = i; j < i + 100; j++) {
            memset(&rk, 0, sizeof(rk));
            rk.key_id = (uint32_t) j + 1;
            rk.day = 20261130;
            snprintf(rk.model, sizeof(rk.model), "model-%d", j);
            rc = aiserve_ledger_wadd(l, &rk, &u);
            if (rc != AISERVE_LEDGER_OK) {
                break;
            }
        }
        if (rc == AISERVE_LEDGER_OK) {
            rc = aiserve_ledger_wcommit(l, seq + 1);
        }
        if (rc == AISERVE_LEDGER_FULL) {
            full = i;
        }
    }

    tap_ok(full > 0, "map full after %d rows", full);

    tap_ok(aiserve_ledger_grow(l, 64 * 1024) == AISERVE_LEDGER_FULL,
           "grow refused at max_size");

    memset(cnt, 0, sizeof(cnt));
    aiserve_ledger_usage_each(l, 0, 0, 0, count_cb, cnt);
    tap_ok(cnt[0] == (uint64_t) full, "committed rows intact: %llu",
           (unsigned long long) cnt[0]);

    tap_ok(aiserve_ledger_grow(l, 0) == AISERVE_LEDGER_OK, "grow");
    aiserve_ledger_map_info(l, &map, &used);
    tap_ok(map == 128 * 1024, "map doubled to %zu", map);

    aiserve_ledger_wbegin(l, &seq);
    for (i = full; i < full + 100; i++) {
        memset(&rk, 0, sizeof(rk));
        rk.key_id = (uint32_t) i + 1;
        rk.day = 20261130;
        snprintf(rk.model, sizeof(rk.model), "model-%d", i);
        aiserve_ledger_wadd(l, &rk, &u);
    }
    tap_ok(aiserve_ledger_wcommit(l, seq + 1) == AISERVE_LEDGER_OK,
           "the refused flush commits after growing");

    memset(cnt, 0, sizeof(cnt));
    aiserve_ledger_usage_each(l, 0, 0, 0, count_cb, cnt);
    tap_ok(cnt[0] == (uint64_t) full + 100
           && cnt[1] == 7 * ((uint64_t) full + 100), "all rows present");

    aiserve_ledger_close(l);
}


/* Another process grows the map: this one adopts it (MDB_MAP_RESIZED). */
static void
test_resized_by_other(void)
{
    int                p1[2], p2[2], status, rc, i;
    char               c, err[256], d[300];
    pid_t              pid;
    uint64_t           seq, cnt[2];
    aiserve_usage_t    u;
    aiserve_row_key_t  rk;
    aiserve_ledger_t  *l;

    snprintf(d, sizeof(d), "%s/resize", dir);

    if (pipe(p1) || pipe(p2)) {
        tap_ok(0, "pipe");
        return;
    }

    pid = fork();
    if (pid == 0) {
        /* child: opens its own env after fork, never the parent's */
        if (read(p1[0], &c, 1) != 1) {
            _exit(1);
        }
        if (aiserve_ledger_open(&l, d, 0, AISERVE_LEDGER_NO_PEPPER, err,
                                sizeof(err)) != AISERVE_LEDGER_OK)
        {
            _exit(2);
        }
        memset(&u, 0, sizeof(u));
        u.prompt_tokens = 1;
        for (i = 0; i < 3000; i++) {
            memset(&rk, 0, sizeof(rk));
            rk.key_id = (uint32_t) i + 1;
            rk.day = 20261130;
            snprintf(rk.model, sizeof(rk.model), "m");
            do {
                aiserve_ledger_wbegin(l, &seq);
                rc = aiserve_ledger_wadd(l, &rk, &u);
                if (rc == AISERVE_LEDGER_OK) {
                    rc = aiserve_ledger_wcommit(l, seq + 1);
                }
                if (rc == AISERVE_LEDGER_FULL) {
                    aiserve_ledger_grow(l, 0);
                }
            } while (rc == AISERVE_LEDGER_FULL);
        }
        aiserve_ledger_close(l);
        if (write(p2[1], "x", 1) != 1) {
            _exit(3);
        }
        _exit(0);
    }

    rc = aiserve_ledger_open(&l, d, 64 * 1024,
                             AISERVE_LEDGER_CREATE | AISERVE_LEDGER_NO_PEPPER,
                             err, sizeof(err));
    aiserve_ledger_flush_seq(l, &seq);

    if (write(p1[1], "x", 1) != 1 || read(p2[0], &c, 1) != 1) {
        tap_ok(0, "child ran");
    }
    waitpid(pid, &status, 0);
    tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child grew map");

    memset(cnt, 0, sizeof(cnt));
    rc = aiserve_ledger_usage_each(l, 0, 0, 0, count_cb, cnt);
    tap_ok(rc == AISERVE_LEDGER_OK && cnt[0] == 3000,
           "parent reads all rows after the map grew elsewhere (%llu)",
           (unsigned long long) cnt[0]);

    aiserve_ledger_close(l);
}


/* A ledger below directories that do not exist yet (/var/lib/aiserve on a
 * fresh host): created, the ledger directory 0700. */
static void
test_missing_parents(void)
{
    int                rc;
    char               path[256], err[256];
    struct stat        st;
    aiserve_ledger_t  *l;

    snprintf(path, sizeof(path), "%s/var//lib/aiserve/ledger", dir);

    rc = aiserve_ledger_open(&l, path, 0, AISERVE_LEDGER_CREATE, err,
                             sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "missing parents created (%s)",
           rc == AISERVE_LEDGER_OK ? "ok" : err);
    if (rc == AISERVE_LEDGER_OK) {
        aiserve_ledger_close(l);
    }

    tap_ok(stat(path, &st) == 0 && S_ISDIR(st.st_mode)
           && (st.st_mode & 0777) == 0700, "the ledger directory is 0700");

    snprintf(path, sizeof(path), "%s/hmac.key/ledger", dir);
    rc = aiserve_ledger_open(&l, path, 0, AISERVE_LEDGER_CREATE, err,
                             sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_ERROR && strstr(err, "mkdir") != NULL,
           "a file in the way: %s", err);
}


/* Sums the fine_tuning rows of a ledger: [0] rows, [1] trained tokens,
 * [2] cost_nano, [3] rows whose model is "ft:tiny:1::job" */
static int
training_rows_cb(const aiserve_row_key_t *rk, const aiserve_usage_t *u,
    void *arg)
{
    uint64_t  *c = arg;

    if (strcmp(rk->api, AISERVE_API_FINE_TUNING) != 0) {
        return 0;
    }

    c[0]++;
    c[1] += u->trained_tokens;
    c[2] += u->cost_nano;
    c[3] += strcmp(rk->model, "ft:tiny:1::job") == 0;
    c[4] = rk->price;

    return 0;
}


/* A fresh ledger with acct_1 (budget: 10000 tokens a month) and its key
 * key_1, and key_2 in acct_2 (no budget). */
static aiserve_ledger_t *
training_ledger(void)
{
    char                cmd[300], err[256], secret[AISERVE_API_KEY_MAX];
    aiserve_key_t       k;
    aiserve_ledger_t   *l;
    aiserve_account_t   a;

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0
        || aiserve_ledger_open(&l, dir, 0, AISERVE_LEDGER_CREATE, err,
                               sizeof(err)) != AISERVE_LEDGER_OK)
    {
        return NULL;
    }

    memset(&a, 0, sizeof(a));
    snprintf(a.name, sizeof(a.name), "acme");
    a.budget_tokens = 10000;
    a.budget_period = AISERVE_PERIOD_MONTH;
    memset(&k, 0, sizeof(k));
    snprintf(k.name, sizeof(k.name), "acme-prod");
    k.account_id = 1;

    if (aiserve_ledger_account_create(l, &a) != AISERVE_LEDGER_OK
        || aiserve_ledger_key_create(l, &k, "test", secret)
           != AISERVE_LEDGER_OK)
    {
        aiserve_ledger_close(l);
        return NULL;
    }

    memset(&k, 0, sizeof(k));
    snprintf(k.name, sizeof(k.name), "other");

    if (aiserve_ledger_key_create(l, &k, "test", secret)
        != AISERVE_LEDGER_OK)
    {
        aiserve_ledger_close(l);
        return NULL;
    }

    return l;
}


static void
test_training(void)
{
    int                  rc;
    char                 err[256];
    int64_t              now = 1796256000;     /* 2026-12-01 00:00 UTC */
    uint64_t             c[5], held, gen, gen2, tokens;
    aiserve_usage_t      u;
    aiserve_row_key_t    rk;
    aiserve_ledger_t    *l;
    aiserve_training_t   t;

    l = training_ledger();
    tap_ok(l != NULL, "ledger with acct_1 (10000 tokens a month), key_1");
    if (l == NULL) {
        return;
    }

    /* 3000 prompt tokens of inference this month already */
    memset(&rk, 0, sizeof(rk));
    memset(&u, 0, sizeof(u));
    rk.key_id = 1;
    rk.day = 20261201;
    snprintf(rk.api, sizeof(rk.api), "openai");
    snprintf(rk.model, sizeof(rk.model), "tiny");
    u.requests = 1;
    u.prompt_tokens = 3000;
    aiserve_ledger_wbegin(l, &c[0]);
    aiserve_ledger_wadd(l, &rk, &u);
    aiserve_ledger_wcommit(l, 1);

    /* price: 3 micro-units per 1M trained tokens, so that a settle's cost
     * is not a whole number of nano-units */
    rc = aiserve_ledger_training_reserve(l, 1, 1, "tiny", "ftjob-a", 8000, 3,
                                         now, err, sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_ERROR
           && strncmp(err, "insufficient_quota", 18) == 0
           && strstr(err, "7000 left") != NULL,
           "8000 trained tokens over the 7000 left: %s", err);
    tap_ok(aiserve_ledger_training_get(l, "ftjob-a", &t)
           == AISERVE_LEDGER_NOTFOUND, "a refused job holds nothing");

    rc = aiserve_ledger_training_reserve(l, 1, 1, "tiny", "ftjob-a", 5000, 3,
                                         now, err, sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "5000 reserved (%s)", rc ? err : "ok");

    aiserve_ledger_training_held(l, 1, 1, &held, &gen);
    tap_ok(held == 5000 && gen > 0, "acct_1 holds 5000 (gen %llu)",
           (unsigned long long) gen);

    rc = aiserve_ledger_training_reserve(l, 1, 1, "tiny", "ftjob-b", 2001, 3,
                                         now, err, sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_ERROR && strstr(err, "2000 left") != NULL,
           "a second job sees the first's reservation: %s", err);

    rc = aiserve_ledger_training_reserve(l, 1, 1, "tiny", "ftjob-a", 9000, 3,
                                         now, err, sizeof(err));
    aiserve_ledger_training_held(l, 1, 1, &held, &gen);
    tap_ok(rc == AISERVE_LEDGER_OK && held == 5000,
           "the same job reserved again changes nothing");

    tap_ok(aiserve_ledger_training_reserve(l, 2, 2, "tiny", "ftjob-a", 1, 3,
                                           now, err, sizeof(err))
           == AISERVE_LEDGER_ERROR,
           "another account cannot take the job id: %s", err);
    tap_ok(aiserve_ledger_training_reserve(l, 2, 1, "tiny", "ftjob-x", 1, 3,
                                           now, err, sizeof(err))
           == AISERVE_LEDGER_ERROR && strstr(err, "no key key_1 of acct_2"),
           "a key of another account refused: %s", err);
    tap_ok(aiserve_ledger_training_reserve(l, 1, 1, "tiny", "ftjob-x", -1, 3,
                                           now, err, sizeof(err))
           == AISERVE_LEDGER_ERROR, "negative tokens refused: %s", err);

    /* settles: running totals 1001, 1001 again, 900 (late), 2333 */
    rc = aiserve_ledger_training_settle(l, 1, "", "ftjob-a", 1001, now + 60,
                                        err, sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "settle 1001");
    aiserve_ledger_training_settle(l, 1, "", "ftjob-a", 1001, now + 61, err,
                                   sizeof(err));
    aiserve_ledger_training_settle(l, 1, "", "ftjob-a", 900, now + 62, err,
                                   sizeof(err));
    memset(c, 0, sizeof(c));
    aiserve_ledger_usage_each(l, 1, 0, 0, training_rows_cb, c);
    tap_ok(c[0] == 1 && c[1] == 1001 && c[2] == 3 && c[4] == 3,
           "the same total again, and a lower one, charge nothing: "
           "%llu tokens, %llu nano (floor(1001 x 3 / 1000)), price %llu",
           (unsigned long long) c[1], (unsigned long long) c[2],
           (unsigned long long) c[4]);

    aiserve_ledger_training_settle(l, 1, "", "ftjob-a", 2333, now + 120, err,
                                   sizeof(err));
    memset(c, 0, sizeof(c));
    aiserve_ledger_usage_each(l, 1, 0, 0, training_rows_cb, c);
    tap_ok(c[1] == 2333 && c[2] == 6,
           "the difference charged: 2333 tokens, %llu nano = floor(2333 x 3 "
           "/ 1000) with no drift from the two settles",
           (unsigned long long) c[2]);

    aiserve_ledger_training_held(l, 1, 1, &held, &gen2);
    tap_ok(held == 5000 - 2333 && gen2 > gen, "held: %llu, gen moved",
           (unsigned long long) held);

    aiserve_ledger_account_tokens_used(l, 1, 20261201, 20261231, &tokens);
    tap_ok(tokens == 3000 + 2333, "trained tokens count against the "
           "budget: %llu", (unsigned long long) tokens);

    /* the job is cancelled at 2500: it pays for what it trained */
    aiserve_ledger_training_settle(l, 1, "ft:tiny:1::job", "ftjob-a", 2500,
                                   now + 130, err, sizeof(err));
    rc = aiserve_ledger_training_release(l, 1, "ftjob-a", now + 131, err,
                                         sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "released");
    tap_ok(aiserve_ledger_training_release(l, 1, "ftjob-a", now + 132, err,
                                           sizeof(err)) == AISERVE_LEDGER_OK,
           "released again: idempotent");
    aiserve_ledger_training_held(l, 1, 1, &held, &gen);
    tap_ok(held == 0, "nothing held after the release");

    memset(c, 0, sizeof(c));
    aiserve_ledger_usage_each(l, 1, 0, 0, training_rows_cb, c);
    tap_ok(c[0] == 2 && c[1] == 2500 && c[2] == 7 && c[3] == 1,
           "a cancelled job pays what it trained: 2500 tokens, %llu nano, "
           "the last 167 on the fine-tuned model's row",
           (unsigned long long) c[2]);

    rc = aiserve_ledger_training_settle(l, 1, "", "ftjob-a", 2600, now + 140,
                                        err, sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_ERROR, "no charge after the release: %s",
           err);
    tap_ok(aiserve_ledger_training_settle(l, 1, "", "ftjob-a", 2500,
                                          now + 141, err, sizeof(err))
           == AISERVE_LEDGER_OK,
           "a repeated final settle after the release is still a no-op");
    tap_ok(aiserve_ledger_training_settle(l, 2, "", "ftjob-a", 2600,
                                          now + 141, err, sizeof(err))
           == AISERVE_LEDGER_NOTFOUND, "another account's job: NOTFOUND");

    aiserve_ledger_training_get(l, "ftjob-a", &t);
    tap_ok(t.status == AISERVE_TRAINING_RELEASED && t.trained_tokens == 2500
           && t.cost_nano == 7 && t.reserved_tokens == 5000 && t.key_id == 1
           && strcmp(t.model, "tiny") == 0, "the job's charge record");

    /* the budget now has 10000 - 3000 - 2500 = 4500 left */
    rc = aiserve_ledger_training_reserve(l, 1, 1, "tiny", "ftjob-b", 4501, 3,
                                         now, err, sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_ERROR && strstr(err, "4500 left"),
           "what was trained stays counted, what was not is free: %s", err);
    tap_ok(aiserve_ledger_training_reserve(l, 1, 1, "tiny", "ftjob-b", 4500,
                                           3, now, err, sizeof(err))
           == AISERVE_LEDGER_OK, "4500 fit");
    tap_ok(aiserve_ledger_training_reserve(l, 2, 2, "tiny", "ftjob-c",
                                           100000000, 3, now, err,
                                           sizeof(err))
           == AISERVE_LEDGER_OK, "an account without a budget reserves "
           "anything");

    aiserve_ledger_close(l);
}


/* A settle committed by a process that is then killed: repeated by the
 * next process (the job resumed from its checkpoint reports the same
 * total), it charges nothing twice. */
static void
test_training_crash(void)
{
    int                 status;
    char                err[256];
    pid_t               pid;
    int64_t             now = 1796256000;
    uint64_t            c[5];
    aiserve_ledger_t   *l;

    l = training_ledger();
    tap_ok(l != NULL && aiserve_ledger_training_reserve(l, 1, 1, "tiny",
                            "ftjob-k", 4000, 1000000, now, err, sizeof(err))
                        == AISERVE_LEDGER_OK, "job reserved");
    aiserve_ledger_close(l);

    pid = fork();
    if (pid == 0) {
        if (aiserve_ledger_open(&l, dir, 0, 0, err, sizeof(err)) == 0
            && aiserve_ledger_training_settle(l, 1, "", "ftjob-k", 1500, now,
                                              err, sizeof(err)) == 0)
        {
            kill(getpid(), SIGKILL);
        }
        _exit(1);
    }

    waitpid(pid, &status, 0);
    tap_ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
           "the settling process was killed after its settle");

    aiserve_ledger_open(&l, dir, 0, 0, err, sizeof(err));
    aiserve_ledger_reader_check(l);
    tap_ok(aiserve_ledger_training_settle(l, 1, "", "ftjob-k", 1500,
                                          now + 5, err, sizeof(err))
           == AISERVE_LEDGER_OK, "the resumed job settles 1500 again");
    aiserve_ledger_training_settle(l, 1, "", "ftjob-k", 2000, now + 6, err,
                                   sizeof(err));

    memset(c, 0, sizeof(c));
    aiserve_ledger_usage_each(l, 1, 0, 0, training_rows_cb, c);
    tap_ok(c[1] == 2000 && c[2] == 2000000,
           "charged once: 2000 tokens, %llu nano (1 unit per 1M tokens)",
           (unsigned long long) c[2]);

    aiserve_ledger_close(l);
}


typedef struct {
    int                 n;
    aiserve_row_key_t   rk[8];
    aiserve_usage_t     u[8];
} rows_t;


static int
rows_cb(const aiserve_row_key_t *rk, const aiserve_usage_t *u, void *arg)
{
    rows_t  *r = arg;

    if (r->n < 8) {
        r->rk[r->n] = *rk;
        r->u[r->n] = *u;
        r->n++;
    }

    return 0;
}


static int
migrate_audit_cb(const aiserve_audit_t *e, void *arg)
{
    if (strcmp(e->action, "ledger.migrate") == 0) {
        snprintf(arg, 160, "%s", e->detail);
    }

    return 0;
}


/* Opens a copy of the committed ledger fixture (a version 1 or 2 ledger)
 * and reads its rows into *r and its migration's audit detail. */
static aiserve_ledger_t *
open_fixture(const char *fixture, rows_t *r, char *detail)
{
    char               cmd[600], err[256];
    aiserve_ledger_t  *l;

    snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s && cp %s/data.mdb "
             "%s/hmac.key %s/ && chmod 600 %s/*", dir, dir, fixture, fixture,
             dir, dir);
    if (system(cmd) != 0
        || aiserve_ledger_open(&l, dir, 0, 0, err, sizeof(err))
           != AISERVE_LEDGER_OK)
    {
        tap_diag("%s: %s", fixture, err);
        return NULL;
    }

    memset(r, 0, sizeof(*r));
    aiserve_ledger_usage_each(l, 0, 0, 0, rows_cb, r);
    detail[0] = '\0';
    aiserve_ledger_audit_each(l, 0, migrate_audit_cb, detail);

    return l;
}


/* Version 2 (t/data/ledger-v2, tools/gen-ledger-v2.sh) and version 1 to
 * 3: rows keep their numbers and row ids, get the price they were charged
 * at and no route. */
static void
test_migration_v3(void)
{
    char                id[17], id2[17], detail[160], err[256];
    uint64_t            tokens;
    rows_t              r;
    aiserve_key_t       k;
    aiserve_ledger_t   *l;
    aiserve_row_key_t   old;

    l = open_fixture("t/data/ledger-v2", &r, detail);
    tap_ok(l != NULL, "version 2 ledger opens");
    if (l == NULL) {
        return;
    }

    tap_ok(r.n == 3, "3 rows: %d", r.n);
    tap_ok(r.rk[0].key_id == 1 && strcmp(r.rk[0].model, "tiny") == 0
           && r.rk[0].api[0] == '\0' && r.rk[0].price == 20000
           && r.u[0].requests == 3 && r.u[0].prompt_tokens == 15
           && r.u[0].cost_nano == 300000 && r.u[0].trained_tokens == 0,
           "key_1 tiny: 3 requests, 15 tokens, 300 micro, price 20000 "
           "(the aiserve_price then)");
    tap_ok(r.rk[1].key_id == 2 && r.rk[1].model[0] == '\0'
           && r.rk[1].price == 0 && r.u[1].refused_401 == 1,
           "key_2's refusal row keeps its 401");
    tap_ok(r.rk[2].key_id == 2 && strcmp(r.rk[2].model, "max") == 0
           && r.rk[2].price == 7000 && r.u[2].prompt_tokens == 8
           && r.u[2].cost_nano == 56000, "key_2 max: price 7000");

    memset(&old, 0, sizeof(old));
    old.key_id = 1;
    old.day = r.rk[0].day;
    snprintf(old.model, sizeof(old.model), "tiny");
    aiserve_row_id(&old, id);
    aiserve_row_id(&r.rk[0], id2);
    tap_ok(strcmp(id, id2) == 0, "a migrated row keeps the row id of "
           "version 2 (SHA-256 of \"1|day|tiny\"): %s", id2);
    snprintf(old.api, sizeof(old.api), "openai");
    old.price = 20000;
    aiserve_row_id(&old, id);
    tap_ok(strcmp(id, id2) != 0, "a row of version 3 has its own id: %s",
           id);

    tap_ok(strstr(detail, "from version 2: 3 usage rows") != NULL,
           "audit: %s", detail);
    tap_ok(aiserve_ledger_account_tokens_used(l, 1, r.rk[0].day,
                                              r.rk[0].day, &tokens) == 0
           && tokens == 23, "acct_1 (key_1 and key_2): 23 tokens");
    tap_ok(aiserve_ledger_key_get(l, 2, &k) == 0
           && k.status == AISERVE_KEY_REVOKED && k.account_id == 1,
           "key_2 stays revoked in acct_1");
    tap_ok(aiserve_ledger_training_reserve(l, 1, 1, "tiny", "ftjob-m", 10,
                                           1, 1796256000, err, sizeof(err))
           == AISERVE_LEDGER_OK, "the migrated ledger takes training "
           "charges");
    aiserve_ledger_close(l);

    l = open_fixture("t/data/ledger-v1", &r, detail);
    tap_ok(l != NULL && r.n == 2 && r.rk[0].price == 20
           && r.u[0].prompt_tokens == 15 && r.rk[1].price == 20
           && r.u[1].prompt_tokens == 8,
           "version 1 rows migrate too, price 20 (300 nano / 15 tokens)");
    tap_ok(strstr(detail, "from version 1: 3 keys") != NULL
           && strstr(detail, "from version 2: 2 usage rows") != NULL,
           "one audit entry: %s", detail);
    aiserve_ledger_close(l);
}


static void
test_currency(void)
{
    char                cur[16], err[256];
    aiserve_ledger_t   *l;

    l = training_ledger();
    tap_ok(l != NULL && aiserve_ledger_currency(l, cur, sizeof(cur)) == 0
           && cur[0] == '\0', "a new ledger has no currency yet");
    tap_ok(aiserve_ledger_set_currency(l, "EUR") == AISERVE_LEDGER_OK
           && aiserve_ledger_currency(l, cur, sizeof(cur)) == 0
           && strcmp(cur, "eur") == 0, "bound to eur (lower case)");
    tap_ok(aiserve_ledger_set_currency(l, "eur") == AISERVE_LEDGER_OK,
           "the same again: OK");
    tap_ok(aiserve_ledger_set_currency(l, "usd") == AISERVE_LEDGER_ERROR
           && strstr(aiserve_ledger_error(l), "\"eur\", not \"usd\""),
           "another one refused: %s", aiserve_ledger_error(l));
    tap_ok(aiserve_ledger_set_currency(l, "dollar") == AISERVE_LEDGER_ERROR
           && aiserve_ledger_set_currency(l, "u$d") == AISERVE_LEDGER_ERROR,
           "three letters only: %s", aiserve_ledger_error(l));
    aiserve_ledger_close(l);

    aiserve_ledger_open(&l, dir, 0, 0, err, sizeof(err));
    tap_ok(aiserve_ledger_currency(l, cur, sizeof(cur)) == 0
           && strcmp(cur, "eur") == 0, "kept in the ledger");
    aiserve_ledger_close(l);
}


/* Closing an account: its keys revoked in one transaction, no new key,
 * not closed twice, its usage kept. */
static void
test_account_close(void)
{
    char                secret[AISERVE_API_KEY_MAX];
    unsigned            revoked;
    uint64_t            c[5];
    aiserve_key_t       k;
    aiserve_ledger_t   *l;
    aiserve_account_t   a;

    l = training_ledger();
    tap_ok(l != NULL && aiserve_ledger_training_reserve(l, 1, 1, "tiny",
                            "ftjob-z", 10, 1000, 1796256000, NULL, 0) == 0
           && aiserve_ledger_training_settle(l, 1, "", "ftjob-z", 10,
                                             1796256000, NULL, 0) == 0,
           "acct_1 with a charge");

    memset(&k, 0, sizeof(k));
    k.account_id = 1;
    aiserve_ledger_key_create(l, &k, "test", secret);

    tap_ok(aiserve_ledger_account_close(l, 1, &revoked) == AISERVE_LEDGER_OK
           && revoked == 2, "closed: its 2 keys revoked (%u)", revoked);
    tap_ok(aiserve_ledger_account_get(l, 1, &a) == 0
           && a.status == AISERVE_ACCOUNT_CLOSED
           && strcmp(aiserve_account_status_name(a.status), "closed") == 0,
           "status closed");
    tap_ok(aiserve_ledger_key_get(l, 1, &k) == 0
           && k.status == AISERVE_KEY_REVOKED
           && aiserve_ledger_key_get(l, 2, &k) == 0
           && k.status == AISERVE_KEY_ACTIVE,
           "its keys revoked, another account's key untouched");
    tap_ok(aiserve_ledger_account_close(l, 1, &revoked)
           == AISERVE_LEDGER_ERROR && revoked == 0,
           "closed again: %s", aiserve_ledger_error(l));
    tap_ok(aiserve_ledger_account_close(l, 77, &revoked)
           == AISERVE_LEDGER_NOTFOUND, "an unknown account: NOTFOUND");

    memset(&k, 0, sizeof(k));
    k.account_id = 1;
    tap_ok(aiserve_ledger_key_create(l, &k, "test", secret)
           == AISERVE_LEDGER_ERROR, "no new key: %s",
           aiserve_ledger_error(l));

    memset(c, 0, sizeof(c));
    aiserve_ledger_usage_each(l, 1, 0, 0, training_rows_cb, c);
    tap_ok(c[1] == 10, "its usage stays");

    aiserve_ledger_close(l);
}


int
main(void)
{
    char  cmd[300];

    snprintf(dir, sizeof(dir), "/tmp/aiserve-test-ledger.%d", (int) getpid());

    test_key_format();
    test_key_mask();
    test_hash();
    test_keys();
    test_usage();
    test_map_full();
    test_resized_by_other();
    test_missing_parents();
    test_training();
    test_training_crash();
    test_migration_v3();
    test_currency();
    test_account_close();

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) {
        tap_diag("cannot remove %s", dir);
    }

    return tap_done();
}
