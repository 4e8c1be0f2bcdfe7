/*
 * aiserve-keys: manage API keys and read the usage ledger of aiserve.
 * Works on the same LMDB environment as the nginx module
 * (aiserve_meter_db), while nginx runs.  See README.md, "Metering".
 */
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "aiserve_ledger.h"

static const char  *db_path;
static size_t       max_map_size;
static uint32_t     account_filter;     /* usage, export --account */


static void
usage_main(FILE *f)
{
    fprintf(f,
"usage: aiserve-keys [--db PATH] COMMAND [OPTIONS]\n"
"\n"
"Manages the API keys and reads the usage ledger of aiserve.  PATH is the\n"
"LMDB directory of aiserve_meter_db (default: $AISERVE_DB).\n"
"\n"
"  --max-map-size SIZE  when a key write finds the LMDB map full, grow it\n"
"                       (doubling) up to SIZE (e.g. 64m) and no further;\n"
"                       default: no limit\n"
"\n"
"commands:\n"
"  create   create a key; prints its secret once\n"
"  list     list keys (id, name, prefix...last4, status, limits)\n"
"  revoke   revoke a key for good\n"
"  block    block a key (reversible)\n"
"  unblock  unblock a key\n"
"  set      change a key's limits, models, expiry, name\n"
"  rotate   a new secret for a key; the old one valid for a grace period\n"
"  account  create, list, show, set, suspend accounts (owners of keys)\n"
"  audit    the audit trail of changes to keys and accounts\n"
"  usage    usage per key, model and period\n"
"  export   billing export, one row per key, model and day (CSV, JSON lines)\n"
"\n"
"Run 'aiserve-keys COMMAND --help' for a command's options.\n"
"Changes take effect in running nginx workers on their next request.\n");
}


static void
die(const char *fmt, const char *arg)
{
    fprintf(stderr, "aiserve-keys: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(1);
}


static aiserve_ledger_t *
open_db(unsigned flags)
{
    char               err[512];
    aiserve_ledger_t  *l;

    if (db_path == NULL) {
        db_path = getenv("AISERVE_DB");
    }
    if (db_path == NULL) {
        die("%s", "no ledger: use --db PATH or set AISERVE_DB");
    }

    if (aiserve_ledger_open(&l, db_path, 0, flags, err, sizeof(err))
        != AISERVE_LEDGER_OK)
    {
        die("%s", err);
    }

    aiserve_ledger_set_max_map_size(l, max_map_size);

    return l;
}


/* "key_12" or "12" (prefix "key_"), "acct_3" or "3" (prefix "acct_") */
static uint32_t
parse_id(const char *s, const char *prefix, const char *what)
{
    char           *end;
    char            msg[128];
    unsigned long   n;

    if (strncmp(s, prefix, strlen(prefix)) == 0) {
        s += strlen(prefix);
    }

    n = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || n == 0 || n > UINT32_MAX) {
        snprintf(msg, sizeof(msg), "invalid %s id \"%%s\"", what);
        die(msg, s);
    }

    return (uint32_t) n;
}


static uint32_t
parse_key_id(const char *s)
{
    return parse_id(s, "key_", "key");
}


/* A decimal number for option opt: digits only (no sign, no blank, no
 * wrap past 2^64: strtoull's ERANGE), at most max. */
static uint64_t
parse_number(const char *opt, const char *s, uint64_t max)
{
    char                *end;
    char                 msg[256];
    unsigned long long   n;

    errno = 0;
    n = strtoull(s, &end, 10);

    if (*s < '0' || *s > '9' || *end != '\0' || errno == ERANGE) {
        snprintf(msg, sizeof(msg), "invalid %s \"%s\" (a decimal number)",
                 opt, s);
        die("%s", msg);
    }

    if (n > max) {
        snprintf(msg, sizeof(msg), "%s %s is over the maximum of %llu", opt,
                 s, (unsigned long long) max);
        die("%s", msg);
    }

    return n;
}


/* YYYY-MM-DD or YYYYMMDD, a day of the calendar -> YYYYMMDD */
static uint32_t
parse_day(const char *s)
{
    char         buf[11];
    int64_t      t;
    const char  *date;

    date = s;

    if (strlen(s) == 8 && strspn(s, "0123456789") == 8) {
        snprintf(buf, sizeof(buf), "%.4s-%.2s-%.2s", s, s + 4, s + 6);
        date = buf;
    }

    if (aiserve_parse_date(date, strlen(date), &t) != 0) {
        die("invalid day \"%s\" (YYYY-MM-DD)", s);
    }

    return aiserve_day(t);
}


/* "never", "+30d", "+12h", YYYY-MM-DD (00:00 UTC), unix seconds, in the
 * future: the ledger's parser, which the admin API uses too */
static int64_t
parse_expires(const char *s)
{
    char     err[256];
    int64_t  t;

    if (aiserve_parse_expires(s, time(NULL), &t, err, sizeof(err)) != 0) {
        die("%s", err);
    }

    return t;
}


static uint32_t
parse_account_id(const char *s)
{
    return parse_id(s, "acct_", "account");
}


/* Records a change in the ledger's audit trail: actor "cli:USER". */
static void
audit(aiserve_ledger_t *l, const char *action, const char *object,
    const char *detail)
{
    struct passwd    *pw;
    aiserve_audit_t   e;

    memset(&e, 0, sizeof(e));
    e.time = time(NULL);
    pw = getpwuid(geteuid());
    snprintf(e.actor, sizeof(e.actor), "cli:%s", pw ? pw->pw_name : "?");
    snprintf(e.action, sizeof(e.action), "%s", action);
    snprintf(e.object, sizeof(e.object), "%s", object);
    snprintf(e.detail, sizeof(e.detail), "%s", detail ? detail : "");

    if (aiserve_ledger_audit_add(l, &e) != AISERVE_LEDGER_OK) {
        die("audit trail: %s", aiserve_ledger_error(l));
    }
}


/* "expired" for a key past its expiry (still "revoked" if revoked): what
 * the server answers for it. */
static const char *
key_status(const aiserve_key_t *k)
{
    if (k->status != AISERVE_KEY_REVOKED && k->expires
        && k->expires <= time(NULL))
    {
        return "expired";
    }

    return aiserve_key_status_name(k->status);
}


static void
fmt_time(int64_t t, char *buf, size_t len)
{
    time_t     tt = (time_t) t;
    struct tm  tm;

    if (t == 0) {
        snprintf(buf, len, "never");
        return;
    }

    gmtime_r(&tt, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}


static void
fmt_day(uint32_t day, char *buf, size_t len)
{
    snprintf(buf, len, "%04u-%02u-%02u", day / 10000, day / 100 % 100,
             day % 100);
}


/* --- limits shared by create and set ------------------------------------- */

enum {
    OPT_RPM = 1000, OPT_TPM, OPT_BUDGET, OPT_PERIOD, OPT_CONCURRENCY,
    OPT_MODELS, OPT_EXPIRES, OPT_NAME, OPT_ADMIN, OPT_NO_ADMIN, OPT_TYPE,
    OPT_DB, OPT_JSON, OPT_KEY, OPT_MODEL, OPT_FROM, OPT_TO, OPT_BY,
    OPT_FORMAT, OPT_ACCOUNT, OPT_GRACE, OPT_HELP
};

#define LIMIT_OPTIONS                                                        \
    { "name", required_argument, NULL, OPT_NAME },                           \
    { "rpm", required_argument, NULL, OPT_RPM },                             \
    { "tpm", required_argument, NULL, OPT_TPM },                             \
    { "budget", required_argument, NULL, OPT_BUDGET },                       \
    { "period", required_argument, NULL, OPT_PERIOD },                       \
    { "concurrency", required_argument, NULL, OPT_CONCURRENCY },             \
    { "models", required_argument, NULL, OPT_MODELS },                       \
    { "expires", required_argument, NULL, OPT_EXPIRES },                     \
    { "admin", no_argument, NULL, OPT_ADMIN },                               \
    { "no-admin", no_argument, NULL, OPT_NO_ADMIN },                         \
    { "db", required_argument, NULL, OPT_DB },                               \
    { "help", no_argument, NULL, OPT_HELP }

static const char  limit_help[] =
"  --name NAME          a label for people (not secret)\n"
"  --rpm N              requests per minute (0: unlimited)\n"
"  --tpm N              prompt tokens per minute (0: unlimited)\n"
"  --budget N           prompt tokens per --period (0: unlimited)\n"
"  --period day|month   budget period, UTC (needed with --budget)\n"
"  --concurrency N      requests in flight at once (0: unlimited)\n"
"  --models A,B         models this key may call (\"\": all)\n"
"  --expires WHEN       never, +30d, +12h, YYYY-MM-DD (UTC), unix seconds;\n"
"                       in the future\n"
"  rpm, tpm and budget are at most 100000000000000 (10^14), concurrency\n"
"  at most 4294967295\n"
"  --admin, --no-admin  an admin key sees every key's usage\n"
"  --db PATH            the ledger (or $AISERVE_DB)\n";


/* Applies one limit option to k; 0 if opt is not a limit option. */
static int
apply_limit(aiserve_key_t *k, int opt, const char *arg)
{
    char  msg[80];

    switch (opt) {
    case OPT_NAME:
        if (aiserve_name_check(arg, strlen(arg), msg, sizeof(msg)) != 0) {
            die("--name: %s", msg);
        }
        snprintf(k->name, sizeof(k->name), "%s", arg);
        return 1;
    case OPT_RPM:
        k->rpm = parse_number("--rpm", arg, AISERVE_KEY_LIMIT_MAX);
        return 1;
    case OPT_TPM:
        k->tpm = parse_number("--tpm", arg, AISERVE_KEY_LIMIT_MAX);
        return 1;
    case OPT_BUDGET:
        k->budget_tokens = parse_number("--budget", arg,
                                        AISERVE_KEY_LIMIT_MAX);
        return 1;
    case OPT_PERIOD:
        if (strcmp(arg, "day") == 0) {
            k->budget_period = AISERVE_PERIOD_DAY;
        } else if (strcmp(arg, "month") == 0) {
            k->budget_period = AISERVE_PERIOD_MONTH;
        } else {
            die("invalid period \"%s\" (day or month)", arg);
        }
        return 1;
    case OPT_CONCURRENCY:
        k->max_concurrent = (uint32_t) parse_number("--concurrency", arg,
                                                    UINT32_MAX);
        return 1;
    case OPT_MODELS:
        if (strlen(arg) >= sizeof(k->models)) {
            die("model list \"%s\" is too long", arg);
        }
        snprintf(k->models, sizeof(k->models), "%s", arg);
        return 1;
    case OPT_EXPIRES:
        k->expires = parse_expires(arg);
        if (k->expires && k->expires <= time(NULL)) {
            die("expiry \"%s\" is in the past", arg);
        }
        return 1;
    case OPT_ADMIN:
        k->flags |= AISERVE_KEY_ADMIN;
        return 1;
    case OPT_NO_ADMIN:
        k->flags &= ~AISERVE_KEY_ADMIN;
        return 1;
    case OPT_DB:
        db_path = arg;
        return 1;
    }

    return 0;
}


/* After the options: what they cannot be alone. */
static void
check_limits(const aiserve_key_t *k)
{
    if (k->budget_tokens && k->budget_period == AISERVE_PERIOD_NONE) {
        die("%s", "--budget needs --period day|month");
    }
}


static int
cmd_create(int argc, char **argv)
{
    int                opt;
    const char        *type = "live";
    char               secret[AISERVE_API_KEY_MAX], obj[32], detail[64];
    aiserve_key_t      k;
    aiserve_ledger_t  *l;
    static struct option  opts[] = {
        LIMIT_OPTIONS,
        { "type", required_argument, NULL, OPT_TYPE },
        { "account", required_argument, NULL, OPT_ACCOUNT },
        { NULL, 0, NULL, 0 }
    };

    memset(&k, 0, sizeof(k));

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            printf("usage: aiserve-keys create [OPTIONS]\n\n"
                   "Creates a key (and the ledger, if it does not exist)."
                   "  Prints the key id\nand the secret; the secret is "
                   "shown only now, the ledger keeps only its\n"
                   "HMAC-SHA-256.\n\n%s"
                   "  --type live|test     the key's typed prefix "
                   "(ais_live_..., ais_test_...)\n"
                   "  --account ID         the account that owns the key "
                   "(acct_N); without it,\n"
                   "                       a new account of the key's "
                   "name\n", limit_help);
            return 0;
        }
        if (opt == OPT_TYPE) {
            type = optarg;
            continue;
        }
        if (opt == OPT_ACCOUNT) {
            k.account_id = parse_account_id(optarg);
            continue;
        }
        if (!apply_limit(&k, opt, optarg)) {
            return 2;
        }
    }

    if (optind != argc) {
        die("create: unexpected argument \"%s\"", argv[optind]);
    }

    if (strcmp(type, "live") != 0 && strcmp(type, "test") != 0) {
        die("invalid type \"%s\" (live or test)", type);
    }

    check_limits(&k);

    l = open_db(AISERVE_LEDGER_CREATE);

    if (aiserve_ledger_key_create(l, &k, type, secret) != AISERVE_LEDGER_OK)
    {
        die("%s", aiserve_ledger_error(l));
    }

    snprintf(obj, sizeof(obj), "key_%u", k.id);
    snprintf(detail, sizeof(detail), "account=acct_%u", k.account_id);
    audit(l, "key.create", obj, detail);

    printf("key_id: key_%u\naccount_id: acct_%u\napi_key: %s\n", k.id,
           k.account_id, secret);
    fprintf(stderr, "aiserve-keys: store the api_key now; it is not shown "
            "again\n");

    aiserve_ledger_close(l);
    return 0;
}


static json_t *
key_json(const aiserve_key_t *k)
{
    char  id[32], account[32], created[32], expires[32];

    snprintf(id, sizeof(id), "key_%u", k->id);
    fmt_time(k->created, created, sizeof(created));
    fmt_time(k->expires, expires, sizeof(expires));

    snprintf(account, sizeof(account), "acct_%u", k->account_id);

    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:I,"
                     " s:s, s:I, s:s, s:s, s:s}",
                     "id", id, "account_id", account, "name", k->name,
                     "prefix", k->prefix,
                     "last4", k->last4,
                     "status", key_status(k),
                     "admin", (k->flags & AISERVE_KEY_ADMIN) != 0,
                     "rpm", (json_int_t) k->rpm,
                     "tpm", (json_int_t) k->tpm,
                     "budget", (json_int_t) k->budget_tokens,
                     "period",
                     k->budget_period == AISERVE_PERIOD_DAY ? "day"
                     : k->budget_period == AISERVE_PERIOD_MONTH ? "month"
                     : "none",
                     "concurrency", (json_int_t) k->max_concurrent,
                     "models", k->models,
                     "created", created, "expires", expires);
}


static int
list_cb(const aiserve_key_t *k, void *arg)
{
    int      json = *(int *) arg;
    char    *s, created[32], expires[32], budget[48];
    json_t  *o;

    if (json) {
        o = key_json(k);
        s = json_dumps(o, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(o);
        return 0;
    }

    fmt_time(k->created, created, sizeof(created));
    fmt_time(k->expires, expires, sizeof(expires));

    if (k->budget_tokens) {
        snprintf(budget, sizeof(budget), "%llu/%s",
                 (unsigned long long) k->budget_tokens,
                 k->budget_period == AISERVE_PERIOD_DAY ? "day" : "month");
    } else {
        snprintf(budget, sizeof(budget), "-");
    }

    printf("key_%-6u %-16s %s...%s %-8s%s %6llu %8llu %14s %4u %-16s %s %s\n",
           k->id, k->name[0] ? k->name : "-", k->prefix, k->last4,
           key_status(k),
           (k->flags & AISERVE_KEY_ADMIN) ? " admin" : "",
           (unsigned long long) k->rpm, (unsigned long long) k->tpm,
           budget, k->max_concurrent, k->models[0] ? k->models : "*",
           created, expires);

    return 0;
}


static int
cmd_list(int argc, char **argv)
{
    int                opt, json = 0;
    aiserve_ledger_t  *l;
    static struct option  opts[] = {
        { "json", no_argument, NULL, OPT_JSON },
        { "db", required_argument, NULL, OPT_DB },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 }
    };

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_HELP:
            printf("usage: aiserve-keys list [--json] [--db PATH]\n\n"
                   "Lists keys: id, name, prefix...last4, status, rpm, "
                   "tpm, budget/period,\nconcurrency, models, created, "
                   "expires (UTC).  Secrets are never shown.\n"
                   "  --json   one JSON object per line\n");
            return 0;
        case OPT_JSON:
            json = 1;
            break;
        case OPT_DB:
            db_path = optarg;
            break;
        default:
            return 2;
        }
    }

    l = open_db(AISERVE_LEDGER_NO_PEPPER);

    if (!json) {
        printf("%-10s %-16s %-26s %-8s %6s %8s %14s %4s %-16s %-20s %s\n",
               "id", "name", "key", "status", "rpm", "tpm", "budget", "conc",
               "models", "created", "expires");
    }

    aiserve_ledger_key_each(l, list_cb, &json);
    aiserve_ledger_close(l);

    return 0;
}


/* revoke, block, unblock: one key id, a status */
static int
cmd_status(int argc, char **argv, uint32_t status, const char *what)
{
    int                opt;
    char               obj[32], action[32];
    uint32_t           id;
    aiserve_key_t      k;
    aiserve_ledger_t  *l;
    static struct option  opts[] = {
        { "db", required_argument, NULL, OPT_DB },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 }
    };

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_HELP:
            printf("usage: aiserve-keys %s KEY_ID [--db PATH]\n\n", what);
            if (status == AISERVE_KEY_REVOKED) {
                printf("Revokes a key for good: requests with it get 401 "
                       "within a second.\nIts usage stays in the ledger.\n");
            } else if (status == AISERVE_KEY_BLOCKED) {
                printf("Blocks a key: requests with it get 403 until "
                       "'unblock'.\n");
            } else {
                printf("Unblocks a blocked key.\n");
            }
            return 0;
        case OPT_DB:
            db_path = optarg;
            break;
        default:
            return 2;
        }
    }

    if (optind + 1 != argc) {
        die("%s: one KEY_ID expected", what);
    }

    id = parse_key_id(argv[optind]);
    l = open_db(AISERVE_LEDGER_NO_PEPPER);

    if (aiserve_ledger_key_get(l, id, &k) != AISERVE_LEDGER_OK) {
        die("no key \"%s\"", argv[optind]);
    }

    if (k.status == AISERVE_KEY_REVOKED) {
        die("key \"%s\" is revoked", argv[optind]);
    }

    k.status = status;

    if (aiserve_ledger_key_put(l, &k) != AISERVE_LEDGER_OK) {
        die("%s", aiserve_ledger_error(l));
    }

    snprintf(obj, sizeof(obj), "key_%u", k.id);
    snprintf(action, sizeof(action), "key.%s", what);
    audit(l, action, obj, NULL);

    printf("key_%u %s\n", k.id, aiserve_key_status_name(k.status));
    aiserve_ledger_close(l);

    return 0;
}


static int
cmd_set(int argc, char **argv)
{
    int                opt, i, nargs = 0;
    char               obj[32];
    uint32_t           id;
    aiserve_key_t      k;
    aiserve_ledger_t  *l;
    static struct option  opts[] = {
        LIMIT_OPTIONS,
        { NULL, 0, NULL, 0 }
    };
    struct { int opt; char *arg; }  args[64];

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            printf("usage: aiserve-keys set KEY_ID [OPTIONS]\n\n"
                   "Changes a key; options not given keep their value.  "
                   "Running workers see\nthe change on their next "
                   "request.\n\n%s", limit_help);
            return 0;
        }
        if (opt == '?' || nargs == 64) {
            return 2;
        }
        if (opt == OPT_DB) {
            db_path = optarg;
            continue;
        }
        args[nargs].opt = opt;
        args[nargs].arg = optarg;
        nargs++;
    }

    if (optind + 1 != argc) {
        die("%s", "set: one KEY_ID expected");
    }

    id = parse_key_id(argv[optind]);
    l = open_db(AISERVE_LEDGER_NO_PEPPER);

    if (aiserve_ledger_key_get(l, id, &k) != AISERVE_LEDGER_OK) {
        die("no key \"%s\"", argv[optind]);
    }

    for (i = 0; i < nargs; i++) {
        apply_limit(&k, args[i].opt, args[i].arg);
    }

    check_limits(&k);

    if (aiserve_ledger_key_put(l, &k) != AISERVE_LEDGER_OK) {
        die("%s", aiserve_ledger_error(l));
    }

    snprintf(obj, sizeof(obj), "key_%u", k.id);
    audit(l, "key.update", obj, NULL);

    list_cb(&k, &(int) { 0 });
    aiserve_ledger_close(l);

    return 0;
}


/* --- usage and export ---------------------------------------------------- */

typedef struct {
    aiserve_ledger_t   *l;
    const char         *model;
    int                 by;          /* 0 day, 1 month, 2 total */
    int                 json;
    int                 csv;
    int                 have;
    aiserve_row_key_t   cur;
    aiserve_usage_t     sum;
} usage_ctx_t;


static void
usage_emit(usage_ctx_t *c)
{
    char     period[16], id[32];
    char    *s;
    json_t  *o;

    if (!c->have) {
        return;
    }

    if (c->by == 2) {
        snprintf(period, sizeof(period), "total");
    } else if (c->by == 1) {
        snprintf(period, sizeof(period), "%04u-%02u", c->cur.day / 10000,
                 c->cur.day / 100 % 100);
    } else {
        fmt_day(c->cur.day, period, sizeof(period));
    }

    if (c->json) {
        snprintf(id, sizeof(id), "key_%u", c->cur.key_id);
        o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                      " s:I, s:I, s:I}",
                      "key_id", id, "model", c->cur.model,
                      "period", period,
                      "requests", (json_int_t) c->sum.requests,
                      "prompt_tokens", (json_int_t) c->sum.prompt_tokens,
                      "compute_usec", (json_int_t) c->sum.compute_usec,
                      "bytes_in", (json_int_t) c->sum.bytes_in,
                      "bytes_out", (json_int_t) c->sum.bytes_out,
                      "errors", (json_int_t) c->sum.errors,
                      "cost_micro",
                      (json_int_t) aiserve_cost_micro(c->sum.cost_nano),
                      "refused_401", (json_int_t) c->sum.refused_401,
                      "refused_403", (json_int_t) c->sum.refused_403,
                      "refused_429", (json_int_t) c->sum.refused_429);
        json_object_set_new(o, "trained_tokens",
                            json_integer(c->sum.trained_tokens));
        s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(o);

    } else {
        printf("key_%-6u %-24s %-10s %9llu %12llu %14llu %12llu %12llu "
               "%7llu %12llu\n",
               c->cur.key_id, c->cur.model, period,
               (unsigned long long) c->sum.requests,
               (unsigned long long) c->sum.prompt_tokens,
               (unsigned long long) c->sum.compute_usec,
               (unsigned long long) c->sum.bytes_in,
               (unsigned long long) c->sum.bytes_out,
               (unsigned long long) c->sum.errors,
               (unsigned long long) aiserve_cost_micro(c->sum.cost_nano));
    }

    c->have = 0;
    memset(&c->sum, 0, sizeof(c->sum));
}


static int
usage_cb(const aiserve_row_key_t *rk, const aiserve_usage_t *u, void *arg)
{
    usage_ctx_t  *c = arg;
    int           same;

    if (c->model && strcmp(c->model, rk->model) != 0) {
        return 0;
    }

    /* rows come in (key, day, model) order: group by (key, model, period)
     * for "day"; month and total groups need a model-major pass, which
     * usage_run() provides by iterating per model */
    same = c->have && c->cur.key_id == rk->key_id
           && strcmp(c->cur.model, rk->model) == 0
           && (c->by == 2
               || (c->by == 1 && c->cur.day / 100 == rk->day / 100)
               || (c->by == 0 && c->cur.day == rk->day));

    if (!same) {
        usage_emit(c);
        c->cur = *rk;
        c->have = 1;
    }

    c->sum.requests += u->requests;
    c->sum.prompt_tokens += u->prompt_tokens;
    c->sum.compute_usec += u->compute_usec;
    c->sum.bytes_in += u->bytes_in;
    c->sum.bytes_out += u->bytes_out;
    c->sum.errors += u->errors;
    c->sum.cost_nano += u->cost_nano;
    c->sum.refused_401 += u->refused_401;
    c->sum.refused_403 += u->refused_403;
    c->sum.refused_429 += u->refused_429;
    c->sum.trained_tokens += u->trained_tokens;

    return 0;
}


/* collects the distinct models of the rows, for per-model grouping */
typedef struct {
    char   names[256][AISERVE_MODEL_MAX + 1];
    int    n;
} models_t;


static int
models_cb(const aiserve_row_key_t *rk, const aiserve_usage_t *u, void *arg)
{
    int        i;
    models_t  *m = arg;

    for (i = 0; i < m->n; i++) {
        if (strcmp(m->names[i], rk->model) == 0) {
            return 0;
        }
    }

    if (m->n < 256) {
        snprintf(m->names[m->n++], AISERVE_MODEL_MAX + 1, "%s", rk->model);
    }

    return 0;
}


typedef struct {
    uint32_t   ids[4096];
    int        n;
} ids_t;


static int
ids_cb(const aiserve_key_t *k, void *arg)
{
    ids_t  *ids = arg;

    if (account_filter && k->account_id != account_filter) {
        return 0;
    }

    if (ids->n < 4096) {
        ids->ids[ids->n++] = k->id;
    }

    return 0;
}


static int
cmd_usage(int argc, char **argv)
{
    int                opt, i, j;
    uint32_t           key = 0, from = 0, to = 0;
    ids_t             *ids;
    models_t          *models;
    usage_ctx_t        c;
    static struct option  opts[] = {
        { "key", required_argument, NULL, OPT_KEY },
        { "account", required_argument, NULL, OPT_ACCOUNT },
        { "model", required_argument, NULL, OPT_MODEL },
        { "from", required_argument, NULL, OPT_FROM },
        { "to", required_argument, NULL, OPT_TO },
        { "by", required_argument, NULL, OPT_BY },
        { "json", no_argument, NULL, OPT_JSON },
        { "db", required_argument, NULL, OPT_DB },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 }
    };

    memset(&c, 0, sizeof(c));

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_HELP:
            printf("usage: aiserve-keys usage [OPTIONS]\n\n"
                   "Usage per key, model and period from the ledger "
                   "(what nginx has flushed:\nat most aiserve_meter_db "
                   "flush= behind).  Columns: key, model, period,\n"
                   "requests, prompt_tokens, compute_usec, bytes_in, "
                   "bytes_out, errors,\ncost_micro (micro-units of "
                   "currency, rounded half up per row).\n\n"
                   "  --key KEY_ID         one key (default: all)\n"
                   "  --model NAME         one model\n"
                   "  --from, --to DAY     YYYY-MM-DD, UTC, inclusive\n"
                   "  --by day|month|total grouping (default: day)\n"
                   "  --json               one JSON object per line\n"
                   "  --db PATH            the ledger (or $AISERVE_DB)\n");
            return 0;
        case OPT_ACCOUNT:
            account_filter = parse_account_id(optarg);
            break;
        case OPT_KEY:
            key = parse_key_id(optarg);
            break;
        case OPT_MODEL:
            c.model = optarg;
            break;
        case OPT_FROM:
            from = parse_day(optarg);
            break;
        case OPT_TO:
            to = parse_day(optarg);
            break;
        case OPT_BY:
            if (strcmp(optarg, "day") == 0) {
                c.by = 0;
            } else if (strcmp(optarg, "month") == 0) {
                c.by = 1;
            } else if (strcmp(optarg, "total") == 0) {
                c.by = 2;
            } else {
                die("invalid --by \"%s\" (day, month, total)", optarg);
            }
            break;
        case OPT_JSON:
            c.json = 1;
            break;
        case OPT_DB:
            db_path = optarg;
            break;
        default:
            return 2;
        }
    }

    c.l = open_db(AISERVE_LEDGER_NO_PEPPER);

    if (!c.json) {
        printf("%-10s %-24s %-10s %9s %12s %14s %12s %12s %7s %12s\n",
               "key", "model", "period", "requests", "prompt_tokens",
               "compute_usec", "bytes_in", "bytes_out", "errors",
               "cost_micro");
    }

    ids = calloc(1, sizeof(ids_t));
    models = calloc(1, sizeof(models_t));
    if (ids == NULL || models == NULL) {
        die("%s", "out of memory");
    }

    if (key) {
        ids->ids[ids->n++] = key;
    } else {
        aiserve_ledger_key_each(c.l, ids_cb, ids);
    }

    for (i = 0; i < ids->n; i++) {
        if (c.by == 0) {
            aiserve_ledger_usage_each(c.l, ids->ids[i], from, to, usage_cb,
                                      &c);
            usage_emit(&c);
            continue;
        }

        /* month and total: one pass per model keeps groups contiguous */
        models->n = 0;
        aiserve_ledger_usage_each(c.l, ids->ids[i], from, to, models_cb,
                                  models);

        for (j = 0; j < models->n; j++) {
            if (c.model && strcmp(c.model, models->names[j]) != 0) {
                continue;
            }
            {
                const char  *keep = c.model;

                c.model = models->names[j];
                aiserve_ledger_usage_each(c.l, ids->ids[i], from, to,
                                          usage_cb, &c);
                usage_emit(&c);
                c.model = keep;
            }
        }
    }

    free(ids);
    free(models);
    aiserve_ledger_close(c.l);

    return 0;
}


typedef struct {
    aiserve_ledger_t  *l;
    int                jsonl;
    uint32_t           names_for;
    char               name[AISERVE_KEY_NAME_MAX];
} export_ctx_t;


static void
csv_field(const char *s)
{
    putchar('"');
    for ( /* void */ ; *s; s++) {
        if (*s == '"') {
            putchar('"');
        }
        putchar(*s);
    }
    putchar('"');
}


static int
export_cb(const aiserve_row_key_t *rk, const aiserve_usage_t *u, void *arg)
{
    export_ctx_t   *c = arg;
    char            id[17], day[16], key_id[32], *s;
    json_t         *o;

    aiserve_row_id(rk, id);
    fmt_day(rk->day, day, sizeof(day));
    snprintf(key_id, sizeof(key_id), "key_%u", rk->key_id);

    if (c->jsonl) {
        o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I,"
                      " s:I, s:I, s:I, s:I, s:I}",
                      "row_id", id, "key_id", key_id, "key_name", c->name,
                      "model", rk->model, "day", day,
                      "requests", (json_int_t) u->requests,
                      "prompt_tokens", (json_int_t) u->prompt_tokens,
                      "compute_usec", (json_int_t) u->compute_usec,
                      "bytes_in", (json_int_t) u->bytes_in,
                      "bytes_out", (json_int_t) u->bytes_out,
                      "errors", (json_int_t) u->errors,
                      "cost_micro",
                      (json_int_t) aiserve_cost_micro(u->cost_nano),
                      "refused_401", (json_int_t) u->refused_401,
                      "refused_403", (json_int_t) u->refused_403,
                      "refused_429", (json_int_t) u->refused_429);
        json_object_set_new(o, "api", rk->api[0] ? json_string(rk->api)
                                                 : json_null());
        json_object_set_new(o, "price_micro",
                            rk->price == AISERVE_PRICE_UNKNOWN
                            ? json_null() : json_integer(rk->price));
        json_object_set_new(o, "trained_tokens",
                            json_integer(u->trained_tokens));
        json_object_set_new(o, "storage_bytes",
                            json_integer(u->storage_bytes));
        s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(o);
        return 0;
    }

    printf("%s,%s,", id, key_id);
    csv_field(c->name);
    putchar(',');
    csv_field(rk->model);
    printf(",%s,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,", day,
           (unsigned long long) u->requests,
           (unsigned long long) u->prompt_tokens,
           (unsigned long long) u->compute_usec,
           (unsigned long long) u->bytes_in,
           (unsigned long long) u->bytes_out,
           (unsigned long long) u->errors,
           (unsigned long long) aiserve_cost_micro(u->cost_nano),
           (unsigned long long) u->refused_401,
           (unsigned long long) u->refused_403,
           (unsigned long long) u->refused_429);
    printf("%s,", rk->api);
    if (rk->price != AISERVE_PRICE_UNKNOWN) {
        printf("%llu", (unsigned long long) rk->price);
    }
    printf(",%llu,%llu\n", (unsigned long long) u->trained_tokens,
           (unsigned long long) u->storage_bytes);

    return 0;
}


static int
cmd_export(int argc, char **argv)
{
    int                opt, i;
    uint32_t           key = 0, from = 0, to = 0;
    ids_t             *ids;
    aiserve_key_t      k;
    export_ctx_t       c;
    static struct option  opts[] = {
        { "format", required_argument, NULL, OPT_FORMAT },
        { "key", required_argument, NULL, OPT_KEY },
        { "account", required_argument, NULL, OPT_ACCOUNT },
        { "from", required_argument, NULL, OPT_FROM },
        { "to", required_argument, NULL, OPT_TO },
        { "db", required_argument, NULL, OPT_DB },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 }
    };

    memset(&c, 0, sizeof(c));

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_HELP:
            printf("usage: aiserve-keys export [OPTIONS]\n\n"
                   "Billing export: one row per key, UTC day, route (api) "
                   "and price and model.\n"
                   "row_id is stable (16 hex digits of SHA-256 of key, day, "
                   "model, api and\nprice; of key, day and model for rows "
                   "from before ledger version 3, api\nempty): a row of a "
                   "day still in progress is exported again with larger\n"
                   "numbers and the same row_id, so an import that upserts "
                   "by row_id never\ndouble charges.  Export --to "
                   "yesterday for closed days only.  price_micro\nis "
                   "micro-units per 1k prompt tokens, per 1M trained tokens "
                   "(api\nfine_tuning) or per GiB-day (api storage).\n\n"
                   "  --format csv|jsonl   default csv (with a header "
                   "line)\n"
                   "  --key KEY_ID         one key (default: all)\n"
                   "  --from, --to DAY     YYYY-MM-DD, UTC, inclusive\n"
                   "  --db PATH            the ledger (or $AISERVE_DB)\n");
            return 0;
        case OPT_FORMAT:
            if (strcmp(optarg, "csv") == 0) {
                c.jsonl = 0;
            } else if (strcmp(optarg, "jsonl") == 0) {
                c.jsonl = 1;
            } else {
                die("invalid --format \"%s\" (csv, jsonl)", optarg);
            }
            break;
        case OPT_ACCOUNT:
            account_filter = parse_account_id(optarg);
            break;
        case OPT_KEY:
            key = parse_key_id(optarg);
            break;
        case OPT_FROM:
            from = parse_day(optarg);
            break;
        case OPT_TO:
            to = parse_day(optarg);
            break;
        case OPT_DB:
            db_path = optarg;
            break;
        default:
            return 2;
        }
    }

    c.l = open_db(AISERVE_LEDGER_NO_PEPPER);

    if (!c.jsonl) {
        printf("row_id,key_id,key_name,model,day,requests,prompt_tokens,"
               "compute_usec,bytes_in,bytes_out,errors,cost_micro,"
               "refused_401,refused_403,refused_429,api,price_micro,"
               "trained_tokens,storage_bytes\n");
    }

    ids = calloc(1, sizeof(ids_t));
    if (ids == NULL) {
        die("%s", "out of memory");
    }

    if (key) {
        ids->ids[ids->n++] = key;
    } else {
        aiserve_ledger_key_each(c.l, ids_cb, ids);
    }

    for (i = 0; i < ids->n; i++) {
        c.name[0] = '\0';
        if (aiserve_ledger_key_get(c.l, ids->ids[i], &k)
            == AISERVE_LEDGER_OK)
        {
            snprintf(c.name, sizeof(c.name), "%s", k.name);
        }
        aiserve_ledger_usage_each(c.l, ids->ids[i], from, to, export_cb, &c);
    }

    free(ids);
    aiserve_ledger_close(c.l);

    return 0;
}


/* --- accounts, rotation, audit trail -------------------------------------- */

static json_t *
account_json(const aiserve_account_t *a)
{
    char  id[32], created[32];

    snprintf(id, sizeof(id), "acct_%u", a->id);
    fmt_time(a->created, created, sizeof(created));

    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:I, s:s, s:s}",
                     "id", id, "name", a->name,
                     "status", aiserve_account_status_name(a->status),
                     "rpm", (json_int_t) a->rpm,
                     "tpm", (json_int_t) a->tpm,
                     "budget", (json_int_t) a->budget_tokens,
                     "period",
                     a->budget_period == AISERVE_PERIOD_DAY ? "day"
                     : a->budget_period == AISERVE_PERIOD_MONTH ? "month"
                     : "none",
                     "concurrency", (json_int_t) a->max_concurrent,
                     "models", a->models, "created", created);
}


static int
account_list_cb(const aiserve_account_t *a, void *arg)
{
    int      json = *(int *) arg;
    char    *s, created[32], budget[48];
    json_t  *o;

    if (json) {
        o = account_json(a);
        s = json_dumps(o, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(o);
        return 0;
    }

    fmt_time(a->created, created, sizeof(created));

    if (a->budget_tokens) {
        snprintf(budget, sizeof(budget), "%llu/%s",
                 (unsigned long long) a->budget_tokens,
                 a->budget_period == AISERVE_PERIOD_DAY ? "day" : "month");
    } else {
        snprintf(budget, sizeof(budget), "-");
    }

    printf("acct_%-5u %-16s %-9s %6llu %8llu %14s %4u %-16s %s\n", a->id,
           a->name[0] ? a->name : "-", aiserve_account_status_name(a->status),
           (unsigned long long) a->rpm, (unsigned long long) a->tpm, budget,
           a->max_concurrent, a->models[0] ? a->models : "*", created);

    return 0;
}


static int
account_keys_cb(const aiserve_key_t *k, void *arg)
{
    if (k->account_id == *(uint32_t *) arg) {
        list_cb(k, &(int) { 0 });
    }

    return 0;
}


/* The limit options of a key that an account has too, applied to a. */
static void
apply_account_limit(aiserve_account_t *a, int opt, const char *arg)
{
    aiserve_key_t  k;

    if (opt == OPT_EXPIRES || opt == OPT_ADMIN || opt == OPT_NO_ADMIN) {
        die("%s", "--expires, --admin and --no-admin are options of keys, "
            "not of accounts");
    }

    memset(&k, 0, sizeof(k));
    memcpy(k.name, a->name, sizeof(k.name));
    memcpy(k.models, a->models, sizeof(k.models));
    k.rpm = a->rpm;
    k.tpm = a->tpm;
    k.budget_tokens = a->budget_tokens;
    k.budget_period = a->budget_period;
    k.max_concurrent = a->max_concurrent;

    if (!apply_limit(&k, opt, arg)) {
        exit(2);
    }

    memcpy(a->name, k.name, sizeof(a->name));
    memcpy(a->models, k.models, sizeof(a->models));
    a->rpm = k.rpm;
    a->tpm = k.tpm;
    a->budget_tokens = k.budget_tokens;
    a->budget_period = k.budget_period;
    a->max_concurrent = k.max_concurrent;
}


static const char  account_help[] =
"usage: aiserve-keys account SUBCOMMAND [OPTIONS]\n"
"\n"
"An account (a customer) owns keys; its limits and model list apply to\n"
"all of its keys together, and where a key sets one too, the stricter\n"
"wins.  Usage and export belong to the account (usage --account ID).\n"
"\n"
"  account create [OPTIONS]          create an account; prints acct_N\n"
"  account list [--json]             list accounts\n"
"  account show ACCT_ID [--json]     an account and its keys\n"
"  account set ACCT_ID [OPTIONS]     change its name, limits, models\n"
"  account suspend ACCT_ID           403 for every key of the account\n"
"  account unsuspend ACCT_ID         lift the suspension\n"
"  account close ACCT_ID             close it for good: its keys revoked,\n"
"                                    its usage kept\n"
"\n"
"OPTIONS: --name, --rpm, --tpm, --budget, --period, --concurrency,\n"
"--models as for keys (aiserve-keys create --help); keys are created\n"
"under an account with 'aiserve-keys create --account ACCT_ID'.\n";


static int
cmd_account(int argc, char **argv)
{
    int                 opt, json = 0, i, nargs = 0;
    char                obj[32];
    const char         *sub;
    uint32_t            id = 0;
    aiserve_ledger_t   *l;
    aiserve_account_t   a;
    static struct option  opts[] = {
        LIMIT_OPTIONS,
        { "json", no_argument, NULL, OPT_JSON },
        { NULL, 0, NULL, 0 }
    };
    struct { int opt; char *arg; }  args[64];

    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs(account_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }

    sub = argv[1];
    argc--;
    argv++;
    optind = 1;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(account_help, stdout);
            return 0;
        }
        if (opt == '?' || nargs == 64) {
            return 2;
        }
        if (opt == OPT_DB) {
            db_path = optarg;
            continue;
        }
        if (opt == OPT_JSON) {
            json = 1;
            continue;
        }
        args[nargs].opt = opt;
        args[nargs].arg = optarg;
        nargs++;
    }

    if (strcmp(sub, "create") == 0 || strcmp(sub, "list") == 0) {
        if (optind != argc) {
            die("account: unexpected argument \"%s\"", argv[optind]);
        }

    } else if (strcmp(sub, "show") == 0 || strcmp(sub, "set") == 0
               || strcmp(sub, "suspend") == 0
               || strcmp(sub, "unsuspend") == 0
               || strcmp(sub, "close") == 0)
    {
        if (optind + 1 != argc) {
            die("account %s: one ACCT_ID expected", sub);
        }
        id = parse_account_id(argv[optind]);

    } else {
        die("unknown account subcommand \"%s\" (create, list, show, set, "
            "suspend, unsuspend, close)", sub);
    }

    if (nargs && strcmp(sub, "create") != 0 && strcmp(sub, "set") != 0) {
        die("account %s takes no limit options", sub);
    }

    memset(&a, 0, sizeof(a));

    l = open_db(strcmp(sub, "create") == 0 ? AISERVE_LEDGER_CREATE
                                            : AISERVE_LEDGER_NO_PEPPER);

    if (strcmp(sub, "list") == 0) {
        aiserve_ledger_account_each(l, account_list_cb, &json);
        aiserve_ledger_close(l);
        return 0;
    }

    if (id && aiserve_ledger_account_get(l, id, &a) != AISERVE_LEDGER_OK) {
        die("no account \"%s\"", argv[optind]);
    }

    if (strcmp(sub, "show") == 0) {
        account_list_cb(&a, &json);
        if (!json) {
            aiserve_ledger_key_each(l, account_keys_cb, &id);
        }
        aiserve_ledger_close(l);
        return 0;
    }

    if (a.status == AISERVE_ACCOUNT_CLOSED) {
        die("%s is closed", argv[optind]);
    }

    if (strcmp(sub, "close") == 0) {
        unsigned  revoked;
        char      detail[32];

        if (aiserve_ledger_account_close(l, id, &revoked)
            != AISERVE_LEDGER_OK)
        {
            die("%s", aiserve_ledger_error(l));
        }

        snprintf(obj, sizeof(obj), "acct_%u", id);
        snprintf(detail, sizeof(detail), "keys_revoked=%u", revoked);
        audit(l, "account.close", obj, detail);
        printf("acct_%u closed, %u keys revoked\n", id, revoked);
        aiserve_ledger_close(l);
        return 0;
    }

    for (i = 0; i < nargs; i++) {
        apply_account_limit(&a, args[i].opt, args[i].arg);
    }

    if (a.budget_tokens && a.budget_period == AISERVE_PERIOD_NONE) {
        die("%s", "--budget needs --period day|month");
    }

    if (strcmp(sub, "suspend") == 0) {
        a.status = AISERVE_ACCOUNT_SUSPENDED;
    } else if (strcmp(sub, "unsuspend") == 0) {
        a.status = AISERVE_ACCOUNT_ACTIVE;
    }

    if ((id ? aiserve_ledger_account_put(l, &a)
            : aiserve_ledger_account_create(l, &a))
        != AISERVE_LEDGER_OK)
    {
        die("%s", aiserve_ledger_error(l));
    }

    snprintf(obj, sizeof(obj), "acct_%u", a.id);
    audit(l, strcmp(sub, "create") == 0 ? "account.create"
             : strcmp(sub, "set") == 0 ? "account.update"
             : strcmp(sub, "suspend") == 0 ? "account.suspend"
             : "account.unsuspend", obj, NULL);

    if (id == 0) {
        printf("account_id: acct_%u\n", a.id);
    } else {
        account_list_cb(&a, &json);
    }

    aiserve_ledger_close(l);

    return 0;
}


static int
cmd_rotate(int argc, char **argv)
{
    int                opt;
    char               secret[AISERVE_API_KEY_MAX], err[256], obj[32];
    char               detail[64], until[32];
    int64_t            grace = 86400;
    uint32_t           id;
    aiserve_key_t      k;
    aiserve_ledger_t  *l;
    static struct option  opts[] = {
        { "grace", required_argument, NULL, OPT_GRACE },
        { "db", required_argument, NULL, OPT_DB },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 }
    };

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_HELP:
            printf("usage: aiserve-keys rotate KEY_ID [--grace DURATION]\n\n"
                   "Gives the key a new secret (printed once) under the "
                   "same key id, limits\nand usage.  The old secret stays "
                   "valid for the grace period (default 1d;\n0 to 30d: "
                   "N, Ns, Nm, Nh, Nd) and is refused from the second it "
                   "ends.\nA secret rotated away earlier is refused at "
                   "once.\n");
            return 0;
        case OPT_GRACE:
            if (aiserve_parse_duration(optarg, AISERVE_GRACE_MAX, &grace,
                                       err, sizeof(err)) != 0)
            {
                die("--grace: %s", err);
            }
            break;
        case OPT_DB:
            db_path = optarg;
            break;
        default:
            return 2;
        }
    }

    if (optind + 1 != argc) {
        die("%s", "rotate: one KEY_ID expected");
    }

    id = parse_key_id(argv[optind]);
    l = open_db(0);

    if (aiserve_ledger_key_rotate(l, id, grace, &k, secret)
        != AISERVE_LEDGER_OK)
    {
        die("%s", aiserve_ledger_error(l));
    }

    snprintf(obj, sizeof(obj), "key_%u", k.id);
    snprintf(detail, sizeof(detail), "grace_period=%lld",
             (long long) grace);
    audit(l, "key.rotate", obj, detail);

    fmt_time(k.prev_expires, until, sizeof(until));

    printf("key_id: key_%u\napi_key: %s\nprevious_valid_until: %s\n", k.id,
           secret, grace ? until : "now");
    fprintf(stderr, "aiserve-keys: store the api_key now; it is not shown "
            "again\n");

    aiserve_ledger_close(l);

    return 0;
}


static int
audit_cb(const aiserve_audit_t *e, void *arg)
{
    int      json = *(int *) arg;
    char     when[32], *s;
    json_t  *o;

    fmt_time(e->time, when, sizeof(when));

    if (json) {
        o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}",
                      "seq", (json_int_t) e->seq, "time", when,
                      "actor", e->actor, "action", e->action,
                      "object", e->object, "detail", e->detail);
        s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(o);
        return 0;
    }

    printf("%6llu %s %-16s %-18s %-10s %s\n", (unsigned long long) e->seq,
           when, e->actor, e->action, e->object, e->detail);

    return 0;
}


static int
cmd_audit(int argc, char **argv)
{
    int                opt, json = 0;
    aiserve_ledger_t  *l;
    static struct option  opts[] = {
        { "json", no_argument, NULL, OPT_JSON },
        { "db", required_argument, NULL, OPT_DB },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 }
    };

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_HELP:
            printf("usage: aiserve-keys audit [--json]\n\n"
                   "The audit trail: every change to keys and accounts, "
                   "by aiserve-keys\n(actor cli:USER) or the admin API "
                   "(actor key_N), oldest first.\n");
            return 0;
        case OPT_JSON:
            json = 1;
            break;
        case OPT_DB:
            db_path = optarg;
            break;
        default:
            return 2;
        }
    }

    if (optind != argc) {
        die("audit: unexpected argument \"%s\"", argv[optind]);
    }

    l = open_db(AISERVE_LEDGER_NO_PEPPER);
    aiserve_ledger_audit_each(l, 0, audit_cb, &json);
    aiserve_ledger_close(l);

    return 0;
}


int
main(int argc, char **argv)
{
    int          i;
    const char  *cmd;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--db") == 0 && i + 1 < argc) {
            db_path = argv[++i];
            continue;
        }
        if (strncmp(argv[i], "--db=", 5) == 0) {
            db_path = argv[i] + 5;
            continue;
        }
        if (strcmp(argv[i], "--max-map-size") == 0 && i + 1 < argc) {
            if (aiserve_parse_size(argv[++i], &max_map_size) != 0) {
                die("invalid --max-map-size \"%s\"", argv[i]);
            }
            continue;
        }
        break;
    }

    if (i == argc) {
        usage_main(stderr);
        return 2;
    }

    cmd = argv[i];

    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0
        || strcmp(cmd, "help") == 0)
    {
        usage_main(stdout);
        return 0;
    }

    /* the command's own getopt_long sees argv from the command on */
    argc -= i;
    argv += i;
    optind = 1;

    if (strcmp(cmd, "create") == 0) {
        return cmd_create(argc, argv);
    }
    if (strcmp(cmd, "list") == 0) {
        return cmd_list(argc, argv);
    }
    if (strcmp(cmd, "revoke") == 0) {
        return cmd_status(argc, argv, AISERVE_KEY_REVOKED, "revoke");
    }
    if (strcmp(cmd, "block") == 0) {
        return cmd_status(argc, argv, AISERVE_KEY_BLOCKED, "block");
    }
    if (strcmp(cmd, "unblock") == 0) {
        return cmd_status(argc, argv, AISERVE_KEY_ACTIVE, "unblock");
    }
    if (strcmp(cmd, "set") == 0) {
        return cmd_set(argc, argv);
    }
    if (strcmp(cmd, "usage") == 0) {
        return cmd_usage(argc, argv);
    }
    if (strcmp(cmd, "export") == 0) {
        return cmd_export(argc, argv);
    }
    if (strcmp(cmd, "account") == 0) {
        return cmd_account(argc, argv);
    }
    if (strcmp(cmd, "rotate") == 0) {
        return cmd_rotate(argc, argv);
    }
    if (strcmp(cmd, "audit") == 0) {
        return cmd_audit(argc, argv);
    }

    fprintf(stderr, "aiserve-keys: unknown command \"%s\"\n\n", cmd);
    usage_main(stderr);

    return 2;
}
