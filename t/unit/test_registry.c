/*
 * The registry of fine-tuned models (src/aiserve_registry.c).
 *
 *  - an empty or missing registry: generation 0, no models
 *  - publish copies a real model directory (models/tiny-bert-seq-cls)
 *    byte for byte with its manifest, leaves the source and no staging
 *    directory, bumps the generation; the copy loads as a model
 *  - a second publish of the id, a bad mode, task or field, a directory
 *    without the mode's weights: refused, nothing changed
 *  - ids escaped as file names ("/" and a leading "." too)
 *  - list sorted by id, skipping directories that are not models
 *  - remove: files gone, generation bumped, a second remove NOTFOUND
 *  - 4 processes publishing at once: every model there, generation + 4
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "aiserve_registry.h"
#include "aiserve_model.h"


#define SRC  "models/tiny-bert-seq-cls"

static char  tmp[] = "/tmp/aiserve-test-registry-XXXXXX";
static char  root[512];


/* Whether files A and B hold the same bytes. */
static int
same_file(const char *a, const char *b)
{
    int     same;
    FILE   *x, *y;
    char    bx[4096], by[4096];
    size_t  nx, ny;

    x = fopen(a, "rb");
    y = fopen(b, "rb");
    same = (x != NULL && y != NULL);

    while (same) {
        nx = fread(bx, 1, sizeof(bx), x);
        ny = fread(by, 1, sizeof(by), y);
        same = (nx == ny && memcmp(bx, by, nx) == 0);
        if (nx == 0) {
            break;
        }
    }

    if (x) {
        fclose(x);
    }
    if (y) {
        fclose(y);
    }

    return same;
}


static int
exists(const char *path)
{
    struct stat  st;

    return stat(path, &st) == 0;
}


static int
count_entries(const char *dir, const char *prefix)
{
    DIR            *d;
    int             n;
    struct dirent  *de;

    d = opendir(dir);
    if (d == NULL) {
        return -1;
    }

    n = 0;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
            n++;
        }
    }

    closedir(d);

    return n;
}


static uint64_t
generation(void)
{
    char      err[256];
    uint64_t  gen;

    if (aiserve_registry_generation(root, &gen, err, sizeof(err)) != 0) {
        tap_diag("generation: %s", err);
        return (uint64_t) -1;
    }

    return gen;
}


static aiserve_registry_entry_t
entry(const char *id, const char *mode)
{
    aiserve_registry_entry_t  e;

    memset(&e, 0, sizeof(e));
    e.id = id;
    e.base = "tiny";
    e.account = "acct_2";
    e.mode = mode;
    e.task = "classify";
    e.job_id = "ftjob-abc";
    e.created_at = 1765000000;

    return e;
}


int
main(void)
{
    int                        rc, i, status, ok;
    char                       err[512], esc[256], p[8192], q[8192];
    pid_t                      pids[4];
    size_t                     n;
    uint64_t                   gen;
    aiserve_model_t           *model;
    aiserve_registry_entry_t   e;
    aiserve_registry_model_t   m, *list;

    if (mkdtemp(tmp) == NULL) {
        perror("mkdtemp");
        return 1;
    }

    snprintf(root, sizeof(root), "%s/models", tmp);

    /* empty */
    tap_ok(generation() == 0, "a missing registry is generation 0");
    rc = aiserve_registry_list(root, &list, &n, err, sizeof(err));
    tap_ok(rc == 0 && n == 0 && list == NULL, "a missing registry lists "
           "nothing");

    /* escaping */
    tap_ok(aiserve_registry_escape("ft:tiny:acct_2:bank:abc", esc,
                                   sizeof(esc)) == 0
           && strcmp(esc, "ft%3Atiny%3Aacct_2%3Abank%3Aabc") == 0,
           "ids escaped: %s", esc);
    tap_ok(aiserve_registry_escape("../x", esc, sizeof(esc)) == 0
           && strcmp(esc, "%2E.%2Fx") == 0, "a leading . and / escaped: %s",
           esc);
    tap_ok(aiserve_registry_escape("ft:tiny", esc, 8) == -1,
           "an escape that does not fit is refused");

    /* publish */
    e = entry("ft:tiny:acct_2:bank:abc", "full");
    rc = aiserve_registry_publish(root, &e, SRC, err, sizeof(err));
    if (!tap_ok(rc == 0, "publish a full model")) {
        tap_diag("%s", err);
    }

    tap_ok(generation() == 1, "the generation is 1");

    rc = aiserve_registry_lookup(root, e.id, &m, err, sizeof(err));
    tap_ok(rc == 0 && strcmp(m.id, e.id) == 0 && strcmp(m.base, "tiny") == 0
           && strcmp(m.account, "acct_2") == 0 && strcmp(m.mode, "full") == 0
           && strcmp(m.task, "classify") == 0
           && strcmp(m.job_id, "ftjob-abc") == 0
           && m.created_at == 1765000000, "lookup reads the manifest back");

    snprintf(p, sizeof(p), "%s/ft%%3Atiny%%3Aacct_2%%3Abank%%3Aabc", root);
    tap_ok(strcmp(m.dir, p) == 0, "the model's directory: %s", m.dir);
    {
        struct stat  rs, ms;
        int          st;

        st = stat(root, &rs) == 0 && stat(m.dir, &ms) == 0;
        tap_ok(st && (rs.st_mode & 07777) == 0700
               && (ms.st_mode & 07777) == 0700,
               "the registry and the model's directory are the owner's "
               "only (0%o, 0%o): customers' models", rs.st_mode & 07777,
               ms.st_mode & 07777);
    }

    ok = 1;
    for (i = 0; i < 6; i++) {
        static const char *files[] = {
            "config.json", "model.safetensors", "special_tokens_map.json",
            "tokenizer.json", "tokenizer_config.json", "vocab.txt"
        };

        snprintf(p, sizeof(p), "%s/%s", SRC, files[i]);
        snprintf(q, sizeof(q), "%s/%s", m.dir, files[i]);
        ok &= same_file(p, q);
    }

    tap_ok(ok, "every file copied byte for byte");
    tap_ok(exists(SRC "/model.safetensors"), "the source is left in place");
    tap_ok(count_entries(root, ".staging-") == 0, "no staging directory "
           "left");

    model = aiserve_model_load(m.dir, err, sizeof(err));
    if (!tap_ok(model != NULL
                && aiserve_model_info(model)->arch
                   == AISERVE_ARCH_SEQUENCE_CLASSIFICATION,
                "the published copy loads as a model"))
    {
        tap_diag("%s", err);
    }
    aiserve_model_free(model);

    /* refusals */
    rc = aiserve_registry_publish(root, &e, SRC, err, sizeof(err));
    tap_ok(rc == AISERVE_REGISTRY_EXISTS && strstr(err, "published already"),
           "a second publish of the id: EXISTS (%s)", err);

    e = entry("ft:tiny:acct_2::x1", "head");
    rc = aiserve_registry_publish(root, &e, SRC, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "head.safetensors"),
           "a head without head.safetensors: %s", err);

    e = entry("ft:tiny:acct_2::x1", "merged");
    rc = aiserve_registry_publish(root, &e, SRC, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "mode"), "a bad mode: %s", err);

    e = entry("ft:tiny:acct_2::x1", "full");
    e.task = "embed";
    rc = aiserve_registry_publish(root, &e, SRC, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "task"), "a bad task: %s", err);

    e = entry("ft:tiny:acct_2::x1", "full");
    e.account = "";
    rc = aiserve_registry_publish(root, &e, SRC, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "account: missing"), "no account: %s",
           err);

    e = entry("ft:tiny:acct_2::x1\n", "full");
    rc = aiserve_registry_publish(root, &e, SRC, err, sizeof(err));
    tap_ok(rc == -1 && strstr(err, "control"), "a control character: %s",
           err);

    e = entry("ft:tiny:acct_2::x1", "full");
    rc = aiserve_registry_publish(root, &e, "/nonexistent", err,
                                  sizeof(err));
    tap_ok(rc == -1 && strstr(err, "not a directory"), "a missing source: "
           "%s", err);

    tap_ok(generation() == 1, "refusals leave the generation");

    /* list */
    e = entry("ft:tiny:acct_3::a0", "full");
    e.account = "acct_3";
    rc = aiserve_registry_publish(root, &e, SRC, err, sizeof(err));
    tap_ok(rc == 0 && generation() == 2, "a second model: generation 2");

    snprintf(p, sizeof(p), "%s/stray", root);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/.staging-half", root);
    mkdir(p, 0755);

    rc = aiserve_registry_list(root, &list, &n, err, sizeof(err));
    tap_ok(rc == 0 && n == 2
           && strcmp(list[0].id, "ft:tiny:acct_2:bank:abc") == 0
           && strcmp(list[1].id, "ft:tiny:acct_3::a0") == 0
           && strcmp(list[1].account, "acct_3") == 0,
           "list: 2 models sorted by id, strays skipped");
    free(list);

    /* remove */
    rc = aiserve_registry_remove(root, "ft:tiny:acct_2:bank:abc", err,
                                 sizeof(err));
    tap_ok(rc == 0 && generation() == 3, "remove: generation 3");
    tap_ok(!exists(m.dir) && count_entries(root, ".removed-") == 0,
           "its files are gone");
    rc = aiserve_registry_lookup(root, "ft:tiny:acct_2:bank:abc", &m, err,
                                 sizeof(err));
    tap_ok(rc == AISERVE_REGISTRY_NOTFOUND, "lookup: NOTFOUND");
    rc = aiserve_registry_remove(root, "ft:tiny:acct_2:bank:abc", err,
                                 sizeof(err));
    tap_ok(rc == AISERVE_REGISTRY_NOTFOUND && generation() == 3,
           "a second remove: NOTFOUND, generation kept");

    /* several publishers at once */
    gen = generation();

    for (i = 0; i < 4; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            char  id[64];

            snprintf(id, sizeof(id), "ft:tiny:acct_2::p%d", i);
            e = entry(id, "full");
            _exit(aiserve_registry_publish(root, &e, SRC, err, sizeof(err))
                  == 0 ? 0 : 1);
        }
    }

    ok = 1;
    for (i = 0; i < 4; i++) {
        ok &= waitpid(pids[i], &status, 0) == pids[i] && WIFEXITED(status)
              && WEXITSTATUS(status) == 0;
    }

    rc = aiserve_registry_list(root, &list, &n, err, sizeof(err));
    tap_ok(ok && rc == 0 && n == 5 && generation() == gen + 4,
           "4 processes at once: 5 models, generation + 4");
    free(list);

    snprintf(p, sizeof(p), "rm -rf '%s'", tmp);
    if (system(p) != 0) {
        tap_diag("could not remove %s", tmp);
    }

    return tap_done();
}
