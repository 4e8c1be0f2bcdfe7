/*
 * aiserve ledger: API keys and the usage ledger, stored in one LMDB
 * environment.  Nginx-free: the module, tools/aiserve-keys and the unit
 * tests link it directly.
 *
 * On disk (a directory, the LMDB environment):
 *   data.mdb, lock.mdb   LMDB files
 *   hmac.key             32 random bytes, mode 0600: the HMAC-SHA-256 key
 *                        ("pepper") API keys are hashed with.  Created with
 *                        the environment; kept outside data.mdb so a copy
 *                        of the ledger (backup, billing export) holds no
 *                        material that can verify a guessed key.
 *
 * Named databases inside the environment (ledger version 3):
 *   meta      "version" u32, "next_id" u32, "next_account" u32,
 *             "next_audit" u64, "flush_seq" u64 (the sequence number of
 *             the last flush the nginx module committed), "training_gen"
 *             u64 (moves on with every training charge), "currency" (the
 *             ISO 4217 code, lower case, its costs are in; set once)
 *   accounts  account id (u32, MDB_INTEGERKEY) -> aiserve_account_t
 *   keys      key id (u32, MDB_INTEGERKEY) -> aiserve_key_t
 *   hashes    HMAC-SHA-256(pepper, api_key) (32 bytes) -> key id (u32);
 *             a rotated key has two: its secret and, until the grace
 *             period ends, the previous one
 *   usage     aiserve_row_key_t bytes (key id BE, day BE, api length,
 *             api, price BE, model) -> aiserve_usage_t; an account's
 *             usage is that of its keys
 *   audit     sequence number (u64, MDB_INTEGERKEY) -> aiserve_audit_t:
 *             who changed what, when
 *   training  job id (its bytes) -> aiserve_training_t: the reservation
 *             and the settled charge of a fine-tuning job
 *
 * Older ledgers are migrated when they are opened, in one write
 * transaction.  Version 1 (before accounts): each key becomes the only key
 * of an account of the same number and name, with no limits of its own (a
 * key without an account is its own account).  Version 2 (usage rows
 * without route and price): each row keeps its numbers under a key with
 * the api "" (not recorded) and the price it was charged at, cost_nano /
 * prompt_tokens (a row of no tokens: 0; a row charged at two prices, which
 * does not divide: AISERVE_PRICE_UNKNOWN).
 *
 * Records are host-endian fixed structs with a version field: the ledger is
 * a local file, read by the tools on the same host.
 *
 * LMDB caveats this follows (lmdb.h): an environment is opened per process
 * and never used across fork(); MDB_NOTLS so one reusable read transaction
 * works from any thread; maxreaders raised because old and new nginx
 * workers coexist during a reload; stale reader slots of killed processes
 * are cleared with mdb_reader_check(); MDB_MAP_RESIZED (another process
 * grew the map) is handled by adopting the new size; MDB_MAP_FULL is
 * reported to the caller, who may grow the map with aiserve_ledger_grow().
 */
#ifndef AISERVE_LEDGER_H
#define AISERVE_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#define AISERVE_LEDGER_OK          0
#define AISERVE_LEDGER_NOTFOUND    1
#define AISERVE_LEDGER_FULL        2   /* MDB_MAP_FULL: grow or refuse */
#define AISERVE_LEDGER_ERROR      -1

#define AISERVE_LEDGER_CREATE      0x01  /* create env and hmac.key */
#define AISERVE_LEDGER_NO_PEPPER   0x02  /* do not read hmac.key */

#define AISERVE_PEPPER_LEN         32
#define AISERVE_HASH_LEN           32
/* "ft:<base>:<account>:<suffix>:<job>", the fine-tuned models' names */
#define AISERVE_MODEL_MAX          128
/* the route of a usage row: an api= value, "fine_tuning", "storage" */
#define AISERVE_API_MAX            16
#define AISERVE_API_FINE_TUNING    "fine_tuning"
#define AISERVE_API_STORAGE        "storage"
/* the price of a migrated row that was charged at more than one */
#define AISERVE_PRICE_UNKNOWN      UINT64_MAX
/* "ftjob-" and 24 base62 characters, with room to spare */
#define AISERVE_JOB_ID_MAX         63
#define AISERVE_KEY_NAME_MAX       64
#define AISERVE_MODELS_MAX         256
/* "ais_" + type (<= 8) + "_" + 32 base62 + 6 base62 checksum + NUL */
#define AISERVE_API_KEY_MAX        64
#define AISERVE_KEY_RANDOM_CHARS   32
#define AISERVE_KEY_CHECK_CHARS    6
#define AISERVE_KEY_PCT_DEPTH      3      /* "%252561" is 'a' */

#define AISERVE_KEY_ACTIVE         0
#define AISERVE_KEY_BLOCKED        1
#define AISERVE_KEY_REVOKED        2

#define AISERVE_KEY_ADMIN          0x01   /* the admin API, every usage */

#define AISERVE_ACCOUNT_ACTIVE     0
#define AISERVE_ACCOUNT_SUSPENDED  1
#define AISERVE_ACCOUNT_CLOSED     2   /* for good: its keys revoked */

/* The largest rpm, tpm and budget_tokens of a key (10^14): the zone keeps
 * rate levels in thousandths and drains them over 60000 ms, so limit x
 * 1000 x 60 must fit in 64 bits (up to 3 x 10^14 would). */
#define AISERVE_KEY_LIMIT_MAX      100000000000000ULL

#define AISERVE_PERIOD_NONE        0
#define AISERVE_PERIOD_DAY         1
#define AISERVE_PERIOD_MONTH       2

#define AISERVE_KEY_RECORD_VERSION     2
#define AISERVE_ACCOUNT_RECORD_VERSION 1

/* The longest grace period of a rotated secret: 30 days, in seconds. */
#define AISERVE_GRACE_MAX          2592000


/* One API key, owned by an account.  Limits of 0 mean "unlimited"; where
 * the key and its account both set one, the stricter wins. */
typedef struct {
    uint32_t  version;
    uint32_t  id;
    uint32_t  status;                    /* AISERVE_KEY_* */
    uint32_t  flags;                     /* AISERVE_KEY_ADMIN */
    char      name[AISERVE_KEY_NAME_MAX];
    char      prefix[24];                /* "ais_live_AbCd" */
    char      last4[8];
    int64_t   created;                   /* unix seconds */
    int64_t   updated;                   /* unix seconds */
    int64_t   expires;                   /* unix seconds, 0: never */
    uint64_t  rpm;                       /* requests per minute */
    uint64_t  tpm;                       /* prompt tokens per minute */
    uint64_t  budget_tokens;             /* per budget_period */
    uint32_t  budget_period;             /* AISERVE_PERIOD_* */
    uint32_t  max_concurrent;            /* requests in flight */
    char      models[AISERVE_MODELS_MAX];  /* "a,b"; "" allows all */
    uint8_t   hash[AISERVE_HASH_LEN];
    uint32_t  account_id;
    uint32_t  reserved;
    uint8_t   prev_hash[AISERVE_HASH_LEN];  /* the secret before rotate */
    int64_t   prev_expires;      /* unix seconds: refused from then on */
} aiserve_key_t;


/* One account (a customer): owns keys, their usage and limits.  Limits of
 * 0 mean "unlimited". */
typedef struct {
    uint32_t  version;
    uint32_t  id;
    uint32_t  status;                    /* AISERVE_ACCOUNT_* */
    uint32_t  flags;
    char      name[AISERVE_KEY_NAME_MAX];
    int64_t   created;                   /* unix seconds */
    int64_t   updated;
    uint64_t  rpm;
    uint64_t  tpm;
    uint64_t  budget_tokens;
    uint32_t  budget_period;             /* AISERVE_PERIOD_* */
    uint32_t  max_concurrent;
    char      models[AISERVE_MODELS_MAX];
} aiserve_account_t;


/* One admin action: who (the key id of an admin key, 0: the CLI, run by
 * the user named in actor), what and when. */
typedef struct {
    uint64_t  seq;
    int64_t   time;                      /* unix seconds */
    uint32_t  key_id;                    /* 0: aiserve-keys */
    uint32_t  reserved;
    char      actor[32];                 /* "key_3", "cli:root" */
    char      action[32];                /* "key.rotate", ... */
    char      object[32];                /* "key_7", "acct_2" */
    char      detail[160];               /* "grace_period=3600" */
} aiserve_audit_t;


/* Usage counters of one (key, UTC day, api, price, model).  cost is in
 * nano-units of currency (micro-units / 1000): for inference
 * prompt_tokens * price exactly (price in micro-units per 1k tokens, that
 * is nano-units per token), so summing never rounds; for fine-tuning
 * floor(trained_tokens * price / 1000) per job (price in micro-units per
 * 1M trained tokens), the job's settles telescoping to that one rounding;
 * rounding to micro-units happens once, on export (aiserve_cost_micro()). */
typedef struct {
    uint64_t  requests;        /* admitted requests, failed ones included */
    uint64_t  prompt_tokens;   /* tokens of successful requests */
    uint64_t  compute_usec;    /* encoder microseconds */
    uint64_t  bytes_in;        /* request body bytes */
    uint64_t  bytes_out;       /* response body bytes */
    uint64_t  errors;          /* admitted requests that failed */
    uint64_t  cost_nano;       /* see above */
    uint64_t  refused_401;     /* refused requests of the key: revoked, */
    uint64_t  refused_403;     /* expired or rotated-away secret; */
    uint64_t  refused_429;     /* blocked, suspended, model; limits */
    uint64_t  trained_tokens;  /* fine_tuning rows: tokens x epochs */
    uint64_t  storage_bytes;   /* storage rows: the day's largest */
} aiserve_usage_t;

/* A usage row as ledgers before refusal counts stored it: the fields up
 * to cost_nano.  Read as a row with no refusals; written back whole. */
#define AISERVE_USAGE_V1_SIZE      offsetof(aiserve_usage_t, refused_401)
/* ... and as version 2 stored it: up to the refusals. */
#define AISERVE_USAGE_V2_SIZE      offsetof(aiserve_usage_t, trained_tokens)


/* The key of a usage row.  api "" is a row from before version 3, whose
 * route was not recorded.  price: the price the row was charged at, in
 * micro-units per 1k prompt tokens (inference), per 1M trained tokens
 * (fine_tuning) or per GiB-day (storage); a price change starts a new
 * row, so a row never mixes prices. */
typedef struct {
    uint32_t  key_id;
    uint32_t  day;             /* YYYYMMDD, UTC */
    uint64_t  price;
    char      api[AISERVE_API_MAX + 1];
    char      model[AISERVE_MODEL_MAX + 1];
} aiserve_row_key_t;


#define AISERVE_TRAINING_OPEN      0
#define AISERVE_TRAINING_RELEASED  1
#define AISERVE_TRAINING_RECORD_VERSION  1

/* The charge of one fine-tuning job: reserved at its creation, settled as
 * it trains, released at its end. */
typedef struct {
    uint32_t  version;
    uint32_t  status;                    /* AISERVE_TRAINING_* */
    uint32_t  account_id;
    uint32_t  key_id;                    /* the key that created the job */
    char      job_id[AISERVE_JOB_ID_MAX + 1];
    char      model[AISERVE_MODEL_MAX + 1];  /* the base model */
    uint64_t  reserved_tokens;           /* estimate at creation */
    uint64_t  trained_tokens;            /* settled so far */
    uint64_t  price;                     /* micro-units per 1M tokens */
    uint64_t  cost_nano;                 /* charged so far */
    int64_t   created;                   /* unix seconds */
    int64_t   updated;
} aiserve_training_t;


typedef struct aiserve_ledger_s  aiserve_ledger_t;


/*
 * Opens (with AISERVE_LEDGER_CREATE: creates, directory included, mode
 * 0700, and any missing directory above it, mode 0755) the environment at
 * path.  map_size: initial LMDB map size in bytes, 0 keeps
 * the environment's own (1 MiB for a new one).  Reads path/hmac.key unless
 * AISERVE_LEDGER_NO_PEPPER.  Returns AISERVE_LEDGER_OK or ERROR with a
 * message in err.
 */
int aiserve_ledger_open(aiserve_ledger_t **lp, const char *path,
    size_t map_size, unsigned flags, char *err, size_t errlen);
void aiserve_ledger_close(aiserve_ledger_t *l);

/* The last error message of l (empty when none). */
const char *aiserve_ledger_error(aiserve_ledger_t *l);

/* Reads path/hmac.key (AISERVE_PEPPER_LEN bytes) into pepper. */
int aiserve_ledger_read_pepper(const char *path,
    uint8_t pepper[AISERVE_PEPPER_LEN], char *err, size_t errlen);

/* Gives l the HMAC key (as read by aiserve_ledger_read_pepper elsewhere,
 * e.g. by nginx's master), so a process that cannot read hmac.key can
 * create and rotate keys. */
void aiserve_ledger_set_pepper(aiserve_ledger_t *l,
    const uint8_t pepper[AISERVE_PEPPER_LEN]);

/* The currency of the ledger's costs into out (at least 16 bytes): its
 * code, or "" for a ledger that has none yet.  OK or ERROR. */
int aiserve_ledger_currency(aiserve_ledger_t *l, char *out, size_t len);

/* Binds a ledger without a currency to code (3 letters, stored lower
 * case); a ledger bound to another one is refused (ERROR, with both in
 * the error), to the same one is OK.  One synced write. */
int aiserve_ledger_set_currency(aiserve_ledger_t *l, const char *code);

/* Current map size (bytes) and bytes in use (last page number * page). */
void aiserve_ledger_map_info(aiserve_ledger_t *l, size_t *map_size,
    size_t *used);

/*
 * Doubles the map size, up to max_size bytes (0: no limit).  Must be called
 * with no transaction of this process active (lmdb.h,
 * mdb_env_set_mapsize).  Returns OK, or FULL when max_size is reached.
 */
int aiserve_ledger_grow(aiserve_ledger_t *l, size_t max_size);

/* Caps the growth of key writes (create, put) on MDB_MAP_FULL: 0, the
 * default, doubles without limit; otherwise FULL is returned at max_size. */
void aiserve_ledger_set_max_map_size(aiserve_ledger_t *l, size_t max_size);

/* Clears reader slots left by dead processes; returns how many. */
int aiserve_ledger_reader_check(aiserve_ledger_t *l);


/* --- API keys ------------------------------------------------------------ */

/*
 * Generates a new secret "ais_<type>_<32 base62 random><6 base62 crc32>"
 * from RAND_bytes into out (AISERVE_API_KEY_MAX).  type: "live", "test"
 * (lower-case letters, at most 8).  Returns 0 or -1.
 */
int aiserve_key_generate(const char *type, char *out);

/* 1 if s[0..len) has the shape and a valid checksum of a generated key. */
int aiserve_key_well_formed(const char *s, size_t len);

/* 1 if s[0..len) has the shape of a generated key (no checksum: what a
 * server checks before its HMAC lookup, which decides anyway). */
int aiserve_key_shaped(const char *s, size_t len);

/*
 * Masks, in place, every API key in s[0..len) (a request line, a log
 * line): text that reads, once percent-decoded (RFC 3986 2.1, up to
 * AISERVE_KEY_PCT_DEPTH times: "%61is%5Flive..." and "%2561is..." too), as
 * "ais_" [a-z]{1,8} "_" and 38 alphanumerics, even glued to more
 * alphanumerics, keeps its prefix and the first 4 characters after it; the
 * raw bytes of the other 34 become '*' (length unchanged).  No checksum is
 * verified: a mistyped key is a secret all the same.  Returns how many
 * keys were masked: the server refuses a request with one in its request
 * line.
 */
size_t aiserve_key_mask(char *s, size_t len);

/* HMAC-SHA-256(pepper, key). */
void aiserve_key_hash(const uint8_t pepper[AISERVE_PEPPER_LEN],
    const char *key, size_t len, uint8_t out[AISERVE_HASH_LEN]);

/*
 * The same HMAC with a context keyed once (OpenSSL's EVP_MAC, re-initialised
 * with the key it holds): about 0.25 us a key instead of 1.5 us for the
 * one-shot HMAC(), which fetches the algorithm on every call.  A context is
 * for one thread.  create returns NULL on failure; hmac returns 0 or -1.
 */
typedef struct aiserve_key_hmac_s  aiserve_key_hmac_t;

aiserve_key_hmac_t *aiserve_key_hmac_create(
    const uint8_t pepper[AISERVE_PEPPER_LEN]);
int aiserve_key_hmac(aiserve_key_hmac_t *h, const char *key, size_t len,
    uint8_t out[AISERVE_HASH_LEN]);
void aiserve_key_hmac_free(aiserve_key_hmac_t *h);

/*
 * Creates a key from the fields of *k (name, flags, limits, models,
 * expires, account_id); assigns id, created, prefix, last4, hash.  With
 * account_id 0 it also creates an account of the key's name, in the same
 * transaction; another account_id must exist (NOTFOUND).  Writes the
 * secret (shown once) to secret.  Needs the pepper.  This and key_put
 * refuse (AISERVE_LEDGER_ERROR) limits over AISERVE_KEY_LIMIT_MAX and a
 * budget without a period.
 */
int aiserve_ledger_key_create(aiserve_ledger_t *l, aiserve_key_t *k,
    const char *type, char *secret);

/* Reads key id into *k: OK or NOTFOUND. */
int aiserve_ledger_key_get(aiserve_ledger_t *l, uint32_t id,
    aiserve_key_t *k);

/*
 * Finds the key whose secret hashes to hash (one read transaction, reused:
 * cheap enough for every request).  The stored hash is compared with
 * CRYPTO_memcmp.  The previous secret of a rotated key is found while
 * now < prev_expires (unix seconds; refused from the second the grace
 * period ends).  OK or NOTFOUND.  With a, also reads the key's account
 * (in the same transaction) into *a.
 */
int aiserve_ledger_key_lookup(aiserve_ledger_t *l,
    const uint8_t hash[AISERVE_HASH_LEN], aiserve_key_t *k);
int aiserve_ledger_key_lookup_at(aiserve_ledger_t *l,
    const uint8_t hash[AISERVE_HASH_LEN], int64_t now, aiserve_key_t *k,
    aiserve_account_t *a);

/*
 * Rotates key id: a new secret (written to secret, of the key's type)
 * under the same id, limits and usage.  The previous secret stays valid
 * for grace seconds (0 to AISERVE_GRACE_MAX; 0: refused at once) from
 * now; a secret rotated away before that one is removed.  OK, NOTFOUND,
 * or ERROR (revoked key, grace out of range).
 */
int aiserve_ledger_key_rotate(aiserve_ledger_t *l, uint32_t id,
    int64_t grace, aiserve_key_t *k, char *secret);

/* Rewrites key k->id (status, limits, ...; updated set to now). */
int aiserve_ledger_key_put(aiserve_ledger_t *l, aiserve_key_t *k);

/* Calls cb for each key in id order; stops when cb returns non-zero. */
int aiserve_ledger_key_each(aiserve_ledger_t *l,
    int (*cb)(const aiserve_key_t *k, void *arg), void *arg);

/* 1 if model (len bytes) is allowed by the key's model list. */
int aiserve_key_model_allowed(const aiserve_key_t *k, const char *model,
    size_t len);

/* 1 if model (len bytes) is in the comma-separated list ("" allows all). */
int aiserve_models_allowed(const char *list, size_t size, const char *model,
    size_t len);

const char *aiserve_key_status_name(uint32_t status);


/* --- accounts ------------------------------------------------------------ */

/*
 * Creates an account from *a (name, limits, models); assigns id, created,
 * updated, version.  Refuses limits over AISERVE_KEY_LIMIT_MAX and a
 * budget without a period (ERROR).
 */
int aiserve_ledger_account_create(aiserve_ledger_t *l, aiserve_account_t *a);

/* Reads account id into *a: OK or NOTFOUND. */
int aiserve_ledger_account_get(aiserve_ledger_t *l, uint32_t id,
    aiserve_account_t *a);

/* Rewrites account a->id (updated set to now): OK, NOTFOUND or ERROR. */
int aiserve_ledger_account_put(aiserve_ledger_t *l, aiserve_account_t *a);

/*
 * Closes account id for good, in one transaction: its status becomes
 * AISERVE_ACCOUNT_CLOSED and every key of it is revoked (its usage
 * stays).  *revoked gets the number of keys revoked now.  OK, NOTFOUND,
 * or ERROR for an account closed already.  A closed account takes no new
 * key and cannot be suspended or reopened.
 */
int aiserve_ledger_account_close(aiserve_ledger_t *l, uint32_t id,
    unsigned *revoked);

/* Calls cb for each account in id order; stops when cb returns non-zero. */
int aiserve_ledger_account_each(aiserve_ledger_t *l,
    int (*cb)(const aiserve_account_t *a, void *arg), void *arg);

const char *aiserve_account_status_name(uint32_t status);

/*
 * Checks the limits of a key or an account the way aiserve-keys and the
 * admin API both do: rpm, tpm, budget at most AISERVE_KEY_LIMIT_MAX, a
 * budget needs a period.  0 or -1 with a message in err.
 */
int aiserve_limits_check(uint64_t rpm, uint64_t tpm, uint64_t budget,
    uint32_t period, char *err, size_t errlen);

/*
 * Parses an expiry as aiserve-keys and the admin API take it: "never"
 * (0), "+N" followed by d, h or s from now, YYYY-MM-DD (00:00 UTC) or unix
 * seconds; it must lie in the future (after now) and not after 9999-12-31.
 * 0 or -1 with a message in err.
 */
int aiserve_parse_expires(const char *s, int64_t now, int64_t *out,
    char *err, size_t errlen);

/*
 * Checks the name of a key or an account (len bytes at s): at most
 * AISERVE_KEY_NAME_MAX - 1 bytes, none of them a control character (C0 or
 * DEL), so that a name stays one field of one line in aiserve-keys' tables,
 * the audit trail and logs.  0, or -1 with a message in err.
 */
int aiserve_name_check(const char *s, size_t len, char *err, size_t errlen);

/*
 * Parses a calendar date YYYY-MM-DD (len bytes at s, not NUL-terminated):
 * exactly ten characters, digits and the two dashes (ISO 8601's calendar
 * date, extended format), a year from 1970 to 9999 and a day that exists
 * (2024-02-29 is one, 2026-02-30 is not).  *t gets its 00:00 UTC in unix
 * seconds.  0, or -1 for anything else.
 */
int aiserve_parse_date(const char *s, size_t len, int64_t *t);

/* Parses a duration "3600", "90s", "15m", "1h", "7d" into seconds, at most
 * max: 0 or -1 with a message in err. */
int aiserve_parse_duration(const char *s, int64_t max, int64_t *out,
    char *err, size_t errlen);


/* --- audit trail --------------------------------------------------------- */

/*
 * Appends an admin action (e->time, actor, action, object, detail; seq is
 * assigned).  Committed (synced) before it returns.  OK or ERROR/FULL.
 */
int aiserve_ledger_audit_add(aiserve_ledger_t *l, aiserve_audit_t *e);

/* Calls cb for each audit entry in order, from sequence number from. */
int aiserve_ledger_audit_each(aiserve_ledger_t *l, uint64_t from,
    int (*cb)(const aiserve_audit_t *e, void *arg), void *arg);


/* --- usage ---------------------------------------------------------------- */

/*
 * Batched, synced flush.  wbegin starts the write transaction and returns
 * the sequence number of the last committed flush in *seq (read inside the
 * transaction, so it is exact while the writer lock is held).  wadd adds
 * *u to row *rk.  wcommit stores new_seq and commits (synced).  Any error
 * aborts the transaction: FULL when the map is full (grow and redo).
 */
int aiserve_ledger_wbegin(aiserve_ledger_t *l, uint64_t *seq);
int aiserve_ledger_wadd(aiserve_ledger_t *l, const aiserve_row_key_t *rk,
    const aiserve_usage_t *u);
int aiserve_ledger_wcommit(aiserve_ledger_t *l, uint64_t new_seq);
void aiserve_ledger_wabort(aiserve_ledger_t *l);

/* Reads the committed flush sequence number (read transaction). */
int aiserve_ledger_flush_seq(aiserve_ledger_t *l, uint64_t *seq);

/*
 * Calls cb for each usage row with key_id (0: all keys) and day in
 * [day_from, day_to] (0: open), in (key, day, model) order.
 */
int aiserve_ledger_usage_each(aiserve_ledger_t *l, uint32_t key_id,
    uint32_t day_from, uint32_t day_to,
    int (*cb)(const aiserve_row_key_t *rk, const aiserve_usage_t *u,
              void *arg), void *arg);

/* Sum of prompt_tokens and trained_tokens (both count against a token
 * budget) of key_id over days [day_from, day_to]. */
int aiserve_ledger_tokens_used(aiserve_ledger_t *l, uint32_t key_id,
    uint32_t day_from, uint32_t day_to, uint64_t *tokens);

/* The same sum over every key of account_id. */
int aiserve_ledger_account_tokens_used(aiserve_ledger_t *l,
    uint32_t account_id, uint32_t day_from, uint32_t day_to,
    uint64_t *tokens);

/* Stable id of a usage row: 16 hex digits of SHA-256 of "id|day|model"
 * (rows from before version 3, api "": the id they had) or of
 * "id|day|model|api|price". */
void aiserve_row_id(const aiserve_row_key_t *rk, char out[17]);

/* cost_nano -> micro-units, rounded half up. */
uint64_t aiserve_cost_micro(uint64_t cost_nano);


/* --- file storage ----------------------------------------------------------- */

/* The model name of storage rows. */
#define AISERVE_STORAGE_MODEL      "files"

/*
 * Records that the account of key_id stores bytes (its files, as the Files
 * API counts them) at unix time now, after key_id uploaded or deleted one:
 * the row (key_id, day of now, "storage", price 0, "files") keeps the
 * day's largest value in storage_bytes, a gauge (summing two of them
 * means taking the larger).  Nothing is charged.  One synced write: OK,
 * ERROR or FULL.
 */
int aiserve_ledger_storage(aiserve_ledger_t *l, uint32_t key_id,
    uint64_t bytes, int64_t now);


/* --- fine-tuning charges --------------------------------------------------- */

/*
 * Reserves tokens (the trained tokens a job is expected to use: tokens of
 * the training file x epochs, as OpenAI counts trained_tokens) of job_id
 * for key_id of account_id (the key must belong to the account), at price
 * (micro-units per 1M trained tokens; fixed for the job).  Refused when
 * the key's or the account's token budget (the stricter one) cannot hold
 * them: the budget period's tokens in the ledger (prompt and trained) plus
 * what other open jobs still hold reserved plus tokens over the budget.
 * Usage an nginx worker has not flushed yet (at most one aiserve_meter_db
 * flush interval) is not seen.  A job id that is reserved already is not
 * reserved again (OK, nothing changes): a retried creation is harmless.
 * One synced write transaction, at unix time now.  OK; ERROR with err
 * "insufficient_quota: ..." when over budget (the caller's 429), or
 * another message (unknown key, key of another account, bad argument);
 * FULL when the map cannot grow.
 */
int aiserve_ledger_training_reserve(aiserve_ledger_t *l, uint32_t account_id,
    uint32_t key_id, const char *model, const char *job_id, int64_t tokens,
    uint64_t price, int64_t now, char *err, size_t errlen);

/*
 * Charges job_id for trained_tokens, the tokens it has trained so far (a
 * running total): the difference with the last settle goes to the usage
 * row (key, day of now, "fine_tuning", the job's price, model: the
 * fine-tuned model's name or "" for the job's base model) with its cost,
 * in the same transaction as the job's new total, so a settle repeated
 * after a crash (or twice) charges nothing twice; a total not above the
 * settled one charges nothing.  A job may train more than it reserved: all
 * of it is charged.  A released job takes no new charge (ERROR).  OK,
 * NOTFOUND (no such job of account_id), ERROR or FULL, with err.
 */
int aiserve_ledger_training_settle(aiserve_ledger_t *l, uint32_t account_id,
    const char *model, const char *job_id, int64_t trained_tokens,
    int64_t now, char *err, size_t errlen);

/*
 * Ends job_id's reservation (succeeded, failed or cancelled): what it did
 * not train stops counting against the budget; what it trained stays
 * charged.  Idempotent.  OK, NOTFOUND or ERROR, with err.
 */
int aiserve_ledger_training_release(aiserve_ledger_t *l, uint32_t account_id,
    const char *job_id, int64_t now, char *err, size_t errlen);

/* Reads job_id's charge into *t: OK or NOTFOUND. */
int aiserve_ledger_training_get(aiserve_ledger_t *l, const char *job_id,
    aiserve_training_t *t);

/*
 * Tokens that open jobs of key_id (or, with account, of every key of
 * account id) hold reserved and have not trained yet, for a budget check;
 * *gen gets "training_gen", which moves on with every training write, so
 * a cache of budgets knows when to read again (id 0: only *gen).
 */
int aiserve_ledger_training_held(aiserve_ledger_t *l, uint32_t id,
    int account, uint64_t *tokens, uint64_t *gen);


/* UTC day YYYYMMDD of unix time t; first and last day of its month. */
uint32_t aiserve_day(int64_t t);
void aiserve_month_range(uint32_t day, uint32_t *first, uint32_t *last);

/* Parses "123", "64k", "16m", "1g" into bytes; -1 on error. */
int aiserve_parse_size(const char *s, size_t *out);

#endif /* AISERVE_LEDGER_H */
