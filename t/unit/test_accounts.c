/*
 * Unit tests of accounts in the ledger (src/aiserve_ledger.c): the
 * migration of a version 1 ledger (t/data/ledger-v1, made by the code
 * before accounts: tools/gen-ledger-v1.sh), accounts and their keys, key
 * rotation with a grace period, the audit trail and the validation shared
 * by aiserve-keys and the admin API.  Runs from the repository root.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "aiserve_ledger.h"
#include "tap.h"

#define FIXTURE  "t/data/ledger-v1"

static char  dir[128];


static int
audit_cb(const aiserve_audit_t *e, void *arg)
{
    aiserve_audit_t  *last = arg;

    last[0].seq++;
    last[1] = *e;
    return 0;
}


static int
lookup(aiserve_ledger_t *l, const char *secret, int64_t now,
    aiserve_key_t *k, aiserve_account_t *a)
{
    uint8_t  h[AISERVE_HASH_LEN], pepper[AISERVE_PEPPER_LEN];
    char     err[256];

    if (aiserve_ledger_read_pepper(dir, pepper, err, sizeof(err)) != 0) {
        return -2;
    }

    aiserve_key_hash(pepper, secret, strlen(secret), h);

    return aiserve_ledger_key_lookup_at(l, h, now, k, a);
}


static void
test_migration(void)
{
    int                 rc;
    char                cmd[1024], err[512];
    uint64_t            tokens;
    json_t             *fx;
    const char         *s1, *s3;
    aiserve_key_t       k, nk;
    aiserve_audit_t     audit[2];
    aiserve_ledger_t   *l;
    aiserve_account_t   a;
    char                secret[AISERVE_API_KEY_MAX];

    snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s && cp %s/data.mdb "
             "%s/hmac.key %s/ && chmod 600 %s/*", dir, dir, FIXTURE, FIXTURE,
             dir, dir);
    tap_ok(system(cmd) == 0, "copy of the version 1 ledger");

    fx = json_load_file(FIXTURE "/keys.json", 0, NULL);
    s1 = json_string_value(json_object_get(json_object_get(fx, "keys"),
                                           "key_1"));
    s3 = json_string_value(json_object_get(json_object_get(fx, "keys"),
                                           "key_3"));
    tap_ok(s1 && s3, "fixture secrets");

    /* opened as aiserve-keys list or an nginx worker would: no CREATE */
    rc = aiserve_ledger_open(&l, dir, 0, 0, err, sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "version 1 ledger opens (%s)",
           rc ? err : "migrated");
    if (rc != AISERVE_LEDGER_OK) {
        json_decref(fx);
        return;
    }

    rc = aiserve_ledger_key_get(l, 1, &k);
    tap_ok(rc == AISERVE_LEDGER_OK && k.account_id == 1
           && strcmp(k.name, "acme") == 0 && k.tpm == 100000
           && k.budget_tokens == 5000000
           && k.budget_period == AISERVE_PERIOD_MONTH
           && strcmp(k.models, "tiny") == 0,
           "key_1 keeps its limits and models, in acct_1");

    rc = aiserve_ledger_account_get(l, 1, &a);
    tap_ok(rc == AISERVE_LEDGER_OK && strcmp(a.name, "acme") == 0
           && a.status == AISERVE_ACCOUNT_ACTIVE && a.tpm == 0
           && a.budget_tokens == 0 && a.models[0] == '\0'
           && a.created == k.created,
           "acct_1: the key's name and creation time, no limits of its own");

    tap_ok(aiserve_ledger_key_get(l, 2, &k) == AISERVE_LEDGER_OK
           && k.account_id == 2 && (k.flags & AISERVE_KEY_ADMIN),
           "key_2 stays admin, in acct_2");
    tap_ok(aiserve_ledger_key_get(l, 3, &k) == AISERVE_LEDGER_OK
           && k.account_id == 3 && k.status == AISERVE_KEY_REVOKED,
           "key_3 stays revoked, in acct_3");

    rc = lookup(l, s1, time(NULL), &k, &a);
    tap_ok(rc == AISERVE_LEDGER_OK && k.id == 1 && a.id == 1,
           "key_1's secret still authenticates, with its account");
    rc = lookup(l, s3, time(NULL), &k, &a);
    tap_ok(rc == AISERVE_LEDGER_OK && k.status == AISERVE_KEY_REVOKED,
           "key_3's secret finds the revoked key");

    rc = aiserve_ledger_tokens_used(l, 1, 0, 0, &tokens);
    tap_ok(rc == AISERVE_LEDGER_OK && tokens == 15,
           "key_1's usage kept: %llu", (unsigned long long) tokens);
    rc = aiserve_ledger_account_tokens_used(l, 2, 20261201, 20261231,
                                            &tokens);
    tap_ok(rc == AISERVE_LEDGER_OK && tokens == 8,
           "acct_2's usage is key_2's: %llu", (unsigned long long) tokens);

    memset(audit, 0, sizeof(audit));
    aiserve_ledger_audit_each(l, 0, audit_cb, audit);
    tap_ok(audit[0].seq == 1
           && strcmp(audit[1].action, "ledger.migrate") == 0
           && strstr(audit[1].detail, "3 keys") != NULL,
           "the migration is in the audit trail: %s", audit[1].detail);

    aiserve_ledger_close(l);

    rc = aiserve_ledger_open(&l, dir, 0, 0, err, sizeof(err));
    memset(audit, 0, sizeof(audit));
    if (rc == AISERVE_LEDGER_OK) {
        aiserve_ledger_audit_each(l, 0, audit_cb, audit);
    }
    tap_ok(rc == AISERVE_LEDGER_OK && audit[0].seq == 1,
           "opened again: migrated once");

    memset(&nk, 0, sizeof(nk));
    snprintf(nk.name, sizeof(nk.name), "new");
    rc = aiserve_ledger_key_create(l, &nk, "live", secret);
    tap_ok(rc == AISERVE_LEDGER_OK && nk.id == 4 && nk.account_id == 4,
           "a new key without an account: key_4 in its own acct_4 (%s)",
           aiserve_ledger_error(l));
    tap_ok(aiserve_ledger_account_get(l, 4, &a) == AISERVE_LEDGER_OK
           && strcmp(a.name, "new") == 0, "acct_4 named after its key");

    aiserve_ledger_close(l);
    json_decref(fx);

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    tap_ok(system(cmd) == 0, "cleaned");
}


static void
test_accounts(void)
{
    int                 rc;
    char                err[512], secret[AISERVE_API_KEY_MAX];
    char                other[AISERVE_API_KEY_MAX];
    aiserve_key_t       k, got;
    aiserve_ledger_t   *l;
    aiserve_account_t   a, b;

    rc = aiserve_ledger_open(&l, dir, 0, AISERVE_LEDGER_CREATE, err,
                             sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "new ledger");
    if (rc != AISERVE_LEDGER_OK) {
        return;
    }

    memset(&a, 0, sizeof(a));
    snprintf(a.name, sizeof(a.name), "acme");
    a.budget_tokens = 1000;
    tap_ok(aiserve_ledger_account_create(l, &a) == AISERVE_LEDGER_ERROR,
           "a budget without a period refused: %s", aiserve_ledger_error(l));

    a.budget_period = AISERVE_PERIOD_DAY;
    a.tpm = AISERVE_KEY_LIMIT_MAX + 1;
    tap_ok(aiserve_ledger_account_create(l, &a) == AISERVE_LEDGER_ERROR,
           "a limit over the maximum refused: %s", aiserve_ledger_error(l));

    a.tpm = 500;
    snprintf(a.models, sizeof(a.models), "tiny");
    tap_ok(aiserve_ledger_account_create(l, &a) == AISERVE_LEDGER_OK
           && a.id == 1, "acct_1 created");

    memset(&k, 0, sizeof(k));
    k.account_id = 1;
    snprintf(k.name, sizeof(k.name), "acme-prod");
    rc = aiserve_ledger_key_create(l, &k, "live", secret);
    tap_ok(rc == AISERVE_LEDGER_OK && k.account_id == 1,
           "key_%u under acct_1", k.id);

    memset(&k, 0, sizeof(k));
    k.account_id = 1;
    tap_ok(aiserve_ledger_key_create(l, &k, "test", secret)
           == AISERVE_LEDGER_OK, "a second key under acct_1");

    memset(&got, 0, sizeof(got));
    got.account_id = 99;
    tap_ok(aiserve_ledger_key_create(l, &got, "live", other)
           == AISERVE_LEDGER_NOTFOUND, "a key under a missing account: %s",
           aiserve_ledger_error(l));

    rc = lookup(l, secret, time(NULL), &got, &b);
    tap_ok(rc == AISERVE_LEDGER_OK && b.id == 1 && b.tpm == 500
           && strcmp(b.models, "tiny") == 0, "lookup reads the account");

    b.status = AISERVE_ACCOUNT_SUSPENDED;
    tap_ok(aiserve_ledger_account_put(l, &b) == AISERVE_LEDGER_OK
           && aiserve_ledger_account_get(l, 1, &a) == AISERVE_LEDGER_OK
           && a.status == AISERVE_ACCOUNT_SUSPENDED, "account suspended");

    b.id = 42;
    tap_ok(aiserve_ledger_account_put(l, &b) == AISERVE_LEDGER_NOTFOUND,
           "update of a missing account");

    tap_ok(aiserve_models_allowed("a,tiny", 7, "tiny", 4)
           && !aiserve_models_allowed("a,tiny", 7, "tin", 3)
           && aiserve_models_allowed("", 1, "x", 1), "model lists");

    aiserve_ledger_close(l);
}


static void
test_rotate(void)
{
    int                 rc;
    char                err[512], old[AISERVE_API_KEY_MAX];
    char                cur[AISERVE_API_KEY_MAX], next[AISERVE_API_KEY_MAX];
    int64_t             now, until;
    aiserve_key_t       k, got;
    aiserve_ledger_t   *l;

    rc = aiserve_ledger_open(&l, dir, 0, AISERVE_LEDGER_CREATE, err,
                             sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "ledger");
    if (rc != AISERVE_LEDGER_OK) {
        return;
    }

    memset(&k, 0, sizeof(k));
    k.tpm = 77;
    aiserve_ledger_key_create(l, &k, "test", old);

    now = time(NULL);
    rc = aiserve_ledger_key_rotate(l, k.id, 100, &got, cur);
    until = got.prev_expires;
    tap_ok(rc == AISERVE_LEDGER_OK && got.id == k.id && got.tpm == 77
           && strncmp(cur, "ais_test_", 9) == 0 && strcmp(cur, old) != 0
           && until >= now + 100 && until <= now + 101,
           "rotated: a new test secret under key_%u, the old one valid "
           "100 s", k.id);

    tap_ok(lookup(l, cur, now, &got, NULL) == AISERVE_LEDGER_OK
           && got.id == k.id, "the new secret authenticates");
    tap_ok(lookup(l, old, until - 1, &got, NULL) == AISERVE_LEDGER_OK
           && got.id == k.id, "the old one, a second before its grace ends");
    tap_ok(lookup(l, old, until, &got, NULL) == AISERVE_LEDGER_NOTFOUND,
           "the old one is refused the second its grace ends");

    rc = aiserve_ledger_key_rotate(l, k.id, 0, &got, next);
    tap_ok(rc == AISERVE_LEDGER_OK
           && lookup(l, next, now, &got, NULL) == AISERVE_LEDGER_OK
           && lookup(l, cur, now, &got, NULL) == AISERVE_LEDGER_NOTFOUND
           && lookup(l, old, now, &got, NULL) == AISERVE_LEDGER_NOTFOUND,
           "rotated with no grace: only the newest secret works");

    tap_ok(aiserve_ledger_key_rotate(l, k.id, AISERVE_GRACE_MAX + 1, &got,
                                     cur) == AISERVE_LEDGER_ERROR,
           "grace over 30 days refused: %s", aiserve_ledger_error(l));
    tap_ok(aiserve_ledger_key_rotate(l, 999, 10, &got, cur)
           == AISERVE_LEDGER_NOTFOUND, "rotate of a missing key");

    got.status = AISERVE_KEY_REVOKED;
    aiserve_ledger_key_put(l, &got);
    tap_ok(aiserve_ledger_key_rotate(l, k.id, 10, &got, cur)
           == AISERVE_LEDGER_ERROR, "a revoked key is not rotated: %s",
           aiserve_ledger_error(l));

    aiserve_ledger_close(l);
}


static void
test_audit_and_validation(void)
{
    int                 rc;
    char                err[256];
    int64_t             t, now;
    aiserve_audit_t     e, last[2];
    aiserve_ledger_t   *l;

    rc = aiserve_ledger_open(&l, dir, 0, AISERVE_LEDGER_CREATE, err,
                             sizeof(err));
    tap_ok(rc == AISERVE_LEDGER_OK, "ledger");
    if (rc != AISERVE_LEDGER_OK) {
        return;
    }

    memset(&e, 0, sizeof(e));
    e.time = 1700000000;
    e.key_id = 7;
    snprintf(e.actor, sizeof(e.actor), "key_7");
    snprintf(e.action, sizeof(e.action), "key.rotate");
    snprintf(e.object, sizeof(e.object), "key_3");
    tap_ok(aiserve_ledger_audit_add(l, &e) == AISERVE_LEDGER_OK
           && aiserve_ledger_audit_add(l, &e) == AISERVE_LEDGER_OK
           && e.seq == 2, "two audit entries");

    memset(last, 0, sizeof(last));
    aiserve_ledger_audit_each(l, 2, audit_cb, last);
    tap_ok(last[0].seq == 1 && last[1].seq == 2 && last[1].key_id == 7
           && strcmp(last[1].action, "key.rotate") == 0
           && last[1].time == 1700000000, "read back from seq 2");

    aiserve_ledger_close(l);

    now = 1800000000;
    tap_ok(aiserve_parse_expires("never", now, &t, err, sizeof(err)) == 0
           && t == 0, "expires never");
    tap_ok(aiserve_parse_expires("+30d", now, &t, err, sizeof(err)) == 0
           && t == now + 30 * 86400, "expires +30d");
    tap_ok(aiserve_parse_expires("2030-01-02", now, &t, err, sizeof(err))
           == 0 && t == 1893542400, "expires YYYY-MM-DD");
    tap_ok(aiserve_parse_expires("2020-01-02", now, &t, err, sizeof(err))
           == -1, "expiry in the past: %s", err);
    tap_ok(aiserve_parse_expires("2031-02-30", now, &t, err, sizeof(err))
           == -1 && aiserve_parse_expires("2031-+2-01", now, &t, err,
                                          sizeof(err)) == -1
           && aiserve_parse_expires("2031-02- 1", now, &t, err, sizeof(err))
              == -1,
           "an expiry that is no calendar day refused: %s", err);
    tap_ok(aiserve_parse_date("2024-02-29", 10, &t) == 0 && t == 1709164800
           && aiserve_parse_date("1970-01-01", 10, &t) == 0 && t == 0
           && aiserve_parse_date("9999-12-31", 10, &t) == 0
           && t == 253402214400LL
           && aiserve_parse_date("2026-12-06xyz", 10, &t) == 0
           && t == 1796515200,
           "aiserve_parse_date: leap day, bounds, len bytes only");
    tap_ok(aiserve_parse_date("2026-02-29", 10, &t) == -1
           && aiserve_parse_date("2026-04-31", 10, &t) == -1
           && aiserve_parse_date("2026-13-01", 10, &t) == -1
           && aiserve_parse_date("2026-00-10", 10, &t) == -1
           && aiserve_parse_date("2026-12-00", 10, &t) == -1
           && aiserve_parse_date("2026-12-+6", 10, &t) == -1
           && aiserve_parse_date("2026-12- 6", 10, &t) == -1
           && aiserve_parse_date("-001-12-06", 10, &t) == -1
           && aiserve_parse_date("1969-12-31", 10, &t) == -1
           && aiserve_parse_date("2026/12/06", 10, &t) == -1
           && aiserve_parse_date("2026-12-6", 9, &t) == -1
           && aiserve_parse_date("2026-12-06x", 11, &t) == -1,
           "aiserve_parse_date: no such day, signs, blanks, other shapes");
    tap_ok(aiserve_parse_expires("+5x", now, &t, err, sizeof(err)) == -1
           && aiserve_parse_expires("-5", now, &t, err, sizeof(err)) == -1
           && aiserve_parse_expires("99999999999999", now, &t, err,
                                    sizeof(err)) == -1,
           "bad expiries refused: %s", err);
    tap_ok(aiserve_parse_duration("1h", AISERVE_GRACE_MAX, &t, err,
                                  sizeof(err)) == 0 && t == 3600
           && aiserve_parse_duration("90", AISERVE_GRACE_MAX, &t, err,
                                     sizeof(err)) == 0 && t == 90,
           "durations");
    tap_ok(aiserve_parse_duration("31d", AISERVE_GRACE_MAX, &t, err,
                                  sizeof(err)) == -1
           && aiserve_parse_duration("1 h", AISERVE_GRACE_MAX, &t, err,
                                     sizeof(err)) == -1
           && aiserve_parse_duration("-1", AISERVE_GRACE_MAX, &t, err,
                                     sizeof(err)) == -1,
           "bad durations refused: %s", err);
    tap_ok(aiserve_limits_check(1, 2, 3, AISERVE_PERIOD_NONE, err,
                                sizeof(err)) == -1
           && aiserve_limits_check(AISERVE_KEY_LIMIT_MAX, 0, 0, 0, err,
                                   sizeof(err)) == 0,
           "limits check");
}


int
main(void)
{
    char  cmd[300];

    snprintf(dir, sizeof(dir), "/tmp/aiserve-test-accounts.%d",
             (int) getpid());

    test_migration();
    test_accounts();
    test_rotate();
    test_audit_and_validation();

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) {
        tap_diag("cannot remove %s", dir);
    }

    return tap_done();
}
