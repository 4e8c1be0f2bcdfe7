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

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) {
        tap_diag("cannot remove %s", dir);
    }

    return tap_done();
}
