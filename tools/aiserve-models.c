/*
 * aiserve-models: lists, publishes and removes the fine-tuned models a
 * running aiserve deploys (the registry of src/aiserve_registry.h, under
 * DIR/models of aiserve_fine_tuning_store).  Every nginx worker serves a
 * published model, or stops serving a removed one, within a second.
 * See --help and README.md, "Deploying fine-tuned models".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "aiserve_model.h"
#include "aiserve_registry.h"


static void
usage(FILE *f)
{
    fprintf(f,
"usage: aiserve-models --store DIR list [--json]\n"
"       aiserve-models --store DIR publish --base NAME --account ACCOUNT\n"
"                      [--suffix S] [--id ID] [--job-id ID] [--task T] SRC\n"
"       aiserve-models --store DIR remove ID\n"
"\n"
"Manages the fine-tuned models aiserve deploys from DIR/models, where DIR\n"
"is the directory of aiserve_fine_tuning_store.  Running nginx workers\n"
"load a published model, and drop a removed one, within a second, with no\n"
"reload.\n"
"\n"
"  list      the published models: id, base, account, mode, task, created\n"
"            (--json: one JSON object a line)\n"
"  publish   copies SRC, a directory tools/aiserve-train wrote (--mode\n"
"            full, head or lora; the mode is read from its files), into\n"
"            the registry and prints the model's id.  NAME is the\n"
"            aiserve_model name of its base; ACCOUNT the owning account\n"
"            (acct_N, as aiserve-keys account list shows it): only that\n"
"            account's keys (and admin keys) see and call the model.\n"
"            The id is ft:NAME:ACCOUNT:S:<24 random characters> unless\n"
"            --id gives one; the task (classify or ner) is read from\n"
"            SRC/config.json unless --task gives it.\n"
"  remove    removes model ID from the registry and the disk\n"
"\n"
"  -h, --help   this text\n"
"\n"
"example:\n"
"  tools/aiserve-train --model models/tiny-bert-seq-cls --task classify \\\n"
"      --train t/data/train/classify.jsonl --mode head --out /tmp/head\n"
"  tools/aiserve-models --store /var/lib/aiserve/ft publish --base tiny \\\n"
"      --account acct_1 --suffix demo /tmp/head\n");
}


static int
die(const char *msg, const char *arg)
{
    fprintf(stderr, "aiserve-models: %s%s%s\n", msg, arg ? ": " : "",
            arg ? arg : "");
    return 1;
}


static void
fmt_time(int64_t t, char *buf, size_t len)
{
    time_t     tt;
    struct tm  tm;

    tt = (time_t) t;
    gmtime_r(&tt, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}


static int
cmd_list(const char *root, int argc, char **argv)
{
    int                        json;
    char                       err[512], when[32];
    size_t                     i, n;
    json_t                    *o;
    aiserve_registry_model_t  *m;

    json = (argc == 1 && strcmp(argv[0], "--json") == 0);

    if (argc > 0 && !json) {
        return die("list: unknown option", argv[0]);
    }

    if (aiserve_registry_list(root, &m, &n, err, sizeof(err)) != 0) {
        return die(err, NULL);
    }

    if (!json) {
        printf("%-56s %-12s %-10s %-5s %-9s %s\n", "ID", "BASE", "ACCOUNT",
               "MODE", "TASK", "CREATED");
    }

    for (i = 0; i < n; i++) {
        if (json) {
            o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}",
                          "id", m[i].id, "base", m[i].base,
                          "account", m[i].account, "mode", m[i].mode,
                          "task", m[i].task, "job_id", m[i].job_id,
                          "created_at", (json_int_t) m[i].created_at);
            if (o == NULL) {
                free(m);
                return die("out of memory", NULL);
            }
            json_dumpf(o, stdout, JSON_COMPACT);
            putchar('\n');
            json_decref(o);
            continue;
        }

        fmt_time(m[i].created_at, when, sizeof(when));
        printf("%-56s %-12s %-10s %-5s %-9s %s\n", m[i].id, m[i].base,
               m[i].account, m[i].mode, m[i].task, when);
    }

    free(m);

    return 0;
}


/* The mode of a directory tools/aiserve-train wrote, from its files. */
static const char *
detect_mode(const char *dir)
{
    char   p[4096];
    FILE  *f;

    snprintf(p, sizeof(p), "%s/adapter_config.json", dir);
    if ((f = fopen(p, "r")) != NULL) {
        fclose(f);
        return "lora";
    }

    snprintf(p, sizeof(p), "%s/head.safetensors", dir);
    if ((f = fopen(p, "r")) != NULL) {
        fclose(f);
        return "head";
    }

    return "full";
}


static int
cmd_publish(const char *root, int argc, char **argv)
{
    int                        i, rc;
    char                       err[512], id[AISERVE_REGISTRY_ID_MAX + 1];
    char                       rnd[25];
    unsigned char              bytes[24];
    const char                *base, *account, *suffix, *given, *job, *task;
    const char                *src, *p;
    aiserve_model_info_t       info;
    aiserve_registry_entry_t   e;

    static const char  b62[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    base = account = given = job = task = src = NULL;
    suffix = "";

    for (i = 0; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--base") == 0) {
            base = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--account") == 0) {
            account = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--suffix") == 0) {
            suffix = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--id") == 0) {
            given = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--job-id") == 0) {
            job = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--task") == 0) {
            task = argv[++i];
        } else if (argv[i][0] == '-' || src != NULL) {
            return die("publish: unknown option or argument", argv[i]);
        } else {
            src = argv[i];
        }
    }

    if (base == NULL || account == NULL || src == NULL) {
        return die("publish needs --base, --account and SRC (see --help)",
                   NULL);
    }

    p = account;
    if (strncmp(p, "acct_", 5) != 0 || p[5] == '\0'
        || strspn(p + 5, "0123456789") != strlen(p + 5))
    {
        return die("--account: not an account id (acct_N)", account);
    }

    if (strchr(suffix, ':') != NULL || strchr(base, ':') != NULL) {
        return die("--base and --suffix may not hold ':'", NULL);
    }

    if (task == NULL) {
        if (aiserve_model_read_config(src, &info, err, sizeof(err)) != 0) {
            return die(err, NULL);
        }

        task = info.arch == AISERVE_ARCH_SEQUENCE_CLASSIFICATION ? "classify"
               : info.arch == AISERVE_ARCH_TOKEN_CLASSIFICATION ? "ner"
               : NULL;
        aiserve_model_info_clear(&info);

        if (task == NULL) {
            return die("SRC/config.json is a BertModel: no task head to "
                       "serve (use --task)", NULL);
        }
    }

    if (given == NULL) {
        if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
            return die("RAND_bytes failed", NULL);
        }

        for (i = 0; i < 24; i++) {
            rnd[i] = b62[bytes[i] % 62];
        }
        rnd[24] = '\0';

        if ((size_t) snprintf(id, sizeof(id), "ft:%s:%s:%s:%s", base,
                              account, suffix, rnd) >= sizeof(id))
        {
            return die("the id would be too long", NULL);
        }

        given = id;
    }

    e.id = given;
    e.base = base;
    e.account = account;
    e.mode = detect_mode(src);
    e.task = task;
    e.job_id = job ? job : "";
    e.created_at = (int64_t) time(NULL);

    rc = aiserve_registry_publish(root, &e, src, err, sizeof(err));
    if (rc != 0) {
        return die(err, NULL);
    }

    printf("%s\n", e.id);

    return 0;
}


static int
cmd_remove(const char *root, int argc, char **argv)
{
    int   rc;
    char  err[512];

    if (argc != 1) {
        return die("remove needs one ID", NULL);
    }

    rc = aiserve_registry_remove(root, argv[0], err, sizeof(err));

    if (rc == AISERVE_REGISTRY_NOTFOUND) {
        return die("no such model", argv[0]);
    }

    if (rc != 0) {
        return die(err, NULL);
    }

    printf("removed %s\n", argv[0]);

    return 0;
}


int
main(int argc, char **argv)
{
    char         root[4096];
    const char  *store;

    if (argc > 1
        && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
    {
        usage(stdout);
        return 0;
    }

    if (argc < 4 || strcmp(argv[1], "--store") != 0) {
        usage(stderr);
        return 2;
    }

    store = argv[2];

    if ((size_t) snprintf(root, sizeof(root), "%s/models", store)
        >= sizeof(root))
    {
        return die("--store: path too long", NULL);
    }

    if (strcmp(argv[3], "list") == 0) {
        return cmd_list(root, argc - 4, argv + 4);
    }

    if (strcmp(argv[3], "publish") == 0) {
        return cmd_publish(root, argc - 4, argv + 4);
    }

    if (strcmp(argv[3], "remove") == 0) {
        return cmd_remove(root, argc - 4, argv + 4);
    }

    return die("unknown command (list, publish, remove)", argv[3]);
}
