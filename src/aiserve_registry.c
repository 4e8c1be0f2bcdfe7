/*
 * aiserve registry of fine-tuned models: see aiserve_registry.h.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "aiserve_err.h"
#include "aiserve_registry.h"


#define REGISTRY_MANIFEST    "manifest.json"
#define REGISTRY_GENERATION  "generation"
#define REGISTRY_LOCK        ".lock"
#define REGISTRY_STAGING     ".staging-"
#define REGISTRY_TRASH       ".removed-"
#define REGISTRY_ESC_MAX     (AISERVE_REGISTRY_ID_MAX * 3 + 1)


static int
reg_path(char *buf, size_t len, const char *a, const char *b)
{
    int  n;

    n = snprintf(buf, len, "%s/%s", a, b);

    return (n < 0 || (size_t) n >= len) ? -1 : 0;
}


int
aiserve_registry_escape(const char *id, char *buf, size_t len)
{
    static const char  hex[] = "0123456789ABCDEF";

    size_t         o;
    unsigned char  c;

    for (o = 0; *id; id++) {
        c = (unsigned char) *id;

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9') || c == '_' || c == '-'
            || (c == '.' && o > 0))
        {
            if (o + 1 >= len) {
                return -1;
            }
            buf[o++] = (char) c;
            continue;
        }

        /* a leading '.' too: "." and ".." are not ids, hidden names are
         * the registry's own */
        if (o + 3 >= len) {
            return -1;
        }

        buf[o++] = '%';
        buf[o++] = hex[c >> 4];
        buf[o++] = hex[c & 15];
    }

    if (o >= len) {
        return -1;
    }

    buf[o] = '\0';

    return 0;
}


static int
fsync_dir(const char *dir, char *err, size_t err_len)
{
    int  fd;

    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1 || fsync(fd) == -1) {
        aiserve_err(err, err_len, "%s: fsync: %s", dir, strerror(errno));
        if (fd != -1) {
            close(fd);
        }
        return -1;
    }

    close(fd);

    return 0;
}


/* Writes LEN bytes of DATA to PATH (created, mode 0644) and fsyncs it. */
static int
write_file(const char *path, const void *data, size_t len, char *err,
    size_t err_len)
{
    int          fd;
    ssize_t      n;
    const char  *p;

    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd == -1) {
        aiserve_err(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }

    for (p = data; len > 0; p += n, len -= (size_t) n) {
        n = write(fd, p, len);
        if (n == -1) {
            if (errno == EINTR) {
                n = 0;
                continue;
            }
            aiserve_err(err, err_len, "%s: write: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }

    if (fsync(fd) == -1) {
        aiserve_err(err, err_len, "%s: fsync: %s", path, strerror(errno));
        close(fd);
        return -1;
    }

    if (close(fd) == -1) {
        aiserve_err(err, err_len, "%s: close: %s", path, strerror(errno));
        return -1;
    }

    return 0;
}


static int
copy_file(const char *from, const char *to, char *err, size_t err_len)
{
    int      in, out;
    char     buf[65536];
    ssize_t  n, w, off;

    in = open(from, O_RDONLY | O_CLOEXEC);
    if (in == -1) {
        aiserve_err(err, err_len, "%s: %s", from, strerror(errno));
        return -1;
    }

    out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out == -1) {
        aiserve_err(err, err_len, "%s: %s", to, strerror(errno));
        close(in);
        return -1;
    }

    for ( ;; ) {
        n = read(in, buf, sizeof(buf));
        if (n == 0) {
            break;
        }

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            aiserve_err(err, err_len, "%s: read: %s", from, strerror(errno));
            goto failed;
        }

        for (off = 0; off < n; off += w) {
            w = write(out, buf + off, (size_t) (n - off));
            if (w == -1) {
                if (errno == EINTR) {
                    w = 0;
                    continue;
                }
                aiserve_err(err, err_len, "%s: write: %s", to,
                            strerror(errno));
                goto failed;
            }
        }
    }

    if (fsync(out) == -1) {
        aiserve_err(err, err_len, "%s: fsync: %s", to, strerror(errno));
        goto failed;
    }

    close(in);

    if (close(out) == -1) {
        aiserve_err(err, err_len, "%s: close: %s", to, strerror(errno));
        return -1;
    }

    return 0;

failed:

    close(in);
    close(out);

    return -1;
}


/* Copies the regular files and directories under FROM into TO (made). */
static int
copy_tree(const char *from, const char *to, char *err, size_t err_len)
{
    DIR            *d;
    int             rc;
    char            a[AISERVE_REGISTRY_PATH_MAX], b[AISERVE_REGISTRY_PATH_MAX];
    struct stat     st;
    struct dirent  *de;

    if (mkdir(to, 0700) == -1) {
        aiserve_err(err, err_len, "%s: mkdir: %s", to, strerror(errno));
        return -1;
    }

    d = opendir(from);
    if (d == NULL) {
        aiserve_err(err, err_len, "%s: %s", from, strerror(errno));
        return -1;
    }

    rc = 0;

    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }

        if (reg_path(a, sizeof(a), from, de->d_name) != 0
            || reg_path(b, sizeof(b), to, de->d_name) != 0)
        {
            aiserve_err(err, err_len, "%s/%s: path too long", from,
                        de->d_name);
            rc = -1;
            break;
        }

        if (stat(a, &st) == -1) {
            aiserve_err(err, err_len, "%s: %s", a, strerror(errno));
            rc = -1;
            break;
        }

        if (S_ISDIR(st.st_mode)) {
            rc = copy_tree(a, b, err, err_len);

        } else if (S_ISREG(st.st_mode)) {
            rc = copy_file(a, b, err, err_len);
        }
    }

    closedir(d);

    if (rc == 0) {
        rc = fsync_dir(to, err, err_len);
    }

    return rc;
}


/* Removes DIR and everything under it; a missing DIR is no error. */
static int
remove_tree(const char *dir)
{
    DIR            *d;
    int             rc;
    char            p[AISERVE_REGISTRY_PATH_MAX];
    struct stat     st;
    struct dirent  *de;

    d = opendir(dir);
    if (d == NULL) {
        return errno == ENOENT ? 0 : -1;
    }

    rc = 0;

    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }

        if (reg_path(p, sizeof(p), dir, de->d_name) != 0
            || lstat(p, &st) == -1)
        {
            rc = -1;
            continue;
        }

        if (S_ISDIR(st.st_mode)) {
            if (remove_tree(p) != 0) {
                rc = -1;
            }

        } else if (unlink(p) == -1) {
            rc = -1;
        }
    }

    closedir(d);

    if (rmdir(dir) == -1) {
        rc = -1;
    }

    return rc;
}


/*
 * Run as root (an operator's aiserve-models), what the registry creates
 * goes to the owner of ROOT (the nginx workers' user, which removes
 * models too).  No-op otherwise.
 */
static void
give(const char *root, const char *path)
{
    struct stat  st;

    if (geteuid() == 0 && stat(root, &st) == 0 && st.st_uid != 0) {
        (void) lchown(path, st.st_uid, st.st_gid);
    }
}


static void
give_tree(const char *root, const char *dir)
{
    DIR            *d;
    char            p[AISERVE_REGISTRY_PATH_MAX];
    struct stat     st;
    struct dirent  *de;

    give(root, dir);

    d = opendir(dir);
    if (d == NULL) {
        return;
    }

    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0
            || reg_path(p, sizeof(p), dir, de->d_name) != 0
            || lstat(p, &st) == -1)
        {
            continue;
        }

        if (S_ISDIR(st.st_mode)) {
            give_tree(root, p);

        } else {
            give(root, p);
        }
    }

    closedir(d);
}


/* Makes DIR and the directories above it that are missing. */
static int
mkdir_p(const char *dir, char *err, size_t err_len)
{
    char    p[AISERVE_REGISTRY_PATH_MAX];
    char   *s;
    size_t  len;

    len = strlen(dir);
    if (len == 0 || len >= sizeof(p)) {
        aiserve_err(err, err_len, "%s: bad path", dir);
        return -1;
    }

    memcpy(p, dir, len + 1);

    for (s = p + 1; ; s++) {
        if (*s != '/' && *s != '\0') {
            continue;
        }

        if (s[-1] != '/') {
            *s = '\0';
            if (mkdir(p, 0700) == -1 && errno != EEXIST) {
                aiserve_err(err, err_len, "%s: mkdir: %s", p, strerror(errno));
                return -1;
            }
            *s = dir[s - p];
        }

        if (dir[s - p] == '\0') {
            return 0;
        }
    }
}


/* Takes ROOT's lock (made with ROOT when missing): the fd, or -1. */
static int
reg_lock(const char *root, char *err, size_t err_len)
{
    int   fd;
    char  p[AISERVE_REGISTRY_PATH_MAX];

    if (mkdir_p(root, err, err_len) != 0) {
        return -1;
    }

    if (reg_path(p, sizeof(p), root, REGISTRY_LOCK) != 0) {
        aiserve_err(err, err_len, "%s: path too long", root);
        return -1;
    }

    /* flock() needs no write access: read-only for every user */
    fd = open(p, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd == -1) {
        aiserve_err(err, err_len, "%s: %s", p, strerror(errno));
        return -1;
    }

    give(root, p);

    while (flock(fd, LOCK_EX) == -1) {
        if (errno != EINTR) {
            aiserve_err(err, err_len, "%s: flock: %s", p, strerror(errno));
            close(fd);
            return -1;
        }
    }

    return fd;
}


int
aiserve_registry_generation(const char *root, uint64_t *gen, char *err,
    size_t err_len)
{
    int                 fd;
    char                p[AISERVE_REGISTRY_PATH_MAX], buf[32], *end;
    ssize_t             n;
    unsigned long long  v;

    *gen = 0;

    if (reg_path(p, sizeof(p), root, REGISTRY_GENERATION) != 0) {
        aiserve_err(err, err_len, "%s: path too long", root);
        return -1;
    }

    fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        if (errno == ENOENT) {
            return 0;
        }
        aiserve_err(err, err_len, "%s: %s", p, strerror(errno));
        return -1;
    }

    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);

    if (n <= 0) {
        aiserve_err(err, err_len, "%s: %s", p,
                    n == 0 ? "empty" : strerror(errno));
        return -1;
    }

    buf[n] = '\0';
    errno = 0;
    v = strtoull(buf, &end, 10);

    if (errno != 0 || end == buf || (*end != '\n' && *end != '\0')) {
        aiserve_err(err, err_len, "%s: not a generation number", p);
        return -1;
    }

    *gen = (uint64_t) v;

    return 0;
}


/* Writes generation + 1 (the lock held). */
static int
reg_bump(const char *root, char *err, size_t err_len)
{
    int       n;
    char      p[AISERVE_REGISTRY_PATH_MAX], tmp[AISERVE_REGISTRY_PATH_MAX];
    char      buf[32];
    uint64_t  gen;

    if (aiserve_registry_generation(root, &gen, err, err_len) != 0) {
        return -1;
    }

    if (reg_path(p, sizeof(p), root, REGISTRY_GENERATION) != 0
        || reg_path(tmp, sizeof(tmp), root, ".generation.tmp") != 0)
    {
        aiserve_err(err, err_len, "%s: path too long", root);
        return -1;
    }

    n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", gen + 1);

    if (write_file(tmp, buf, (size_t) n, err, err_len) != 0) {
        return -1;
    }

    give(root, tmp);

    if (rename(tmp, p) == -1) {
        aiserve_err(err, err_len, "%s: rename: %s", p, strerror(errno));
        unlink(tmp);
        return -1;
    }

    return fsync_dir(root, err, err_len);
}


static int
check_name(const char *what, const char *s, size_t max, int empty_ok,
    char *err, size_t err_len)
{
    size_t  len;

    if (s == NULL) {
        s = "";
    }

    len = strlen(s);

    if ((len == 0 && !empty_ok) || len > max) {
        aiserve_err(err, err_len, "%s: %s", what,
                    len == 0 ? "missing" : "too long");
        return -1;
    }

    for ( ; *s; s++) {
        if ((unsigned char) *s < 0x20 || *s == 0x7f) {
            aiserve_err(err, err_len, "%s: a control character", what);
            return -1;
        }
    }

    return 0;
}


static int
file_exists(const char *dir, const char *name)
{
    char         p[AISERVE_REGISTRY_PATH_MAX];
    struct stat  st;

    return reg_path(p, sizeof(p), dir, name) == 0 && stat(p, &st) == 0
           && S_ISREG(st.st_mode);
}


int
aiserve_registry_publish(const char *root,
    const aiserve_registry_entry_t *e, const char *src_dir, char *err,
    size_t err_len)
{
    int          lock, rc;
    char         esc[REGISTRY_ESC_MAX], name[REGISTRY_ESC_MAX + 16];
    char         dst[AISERVE_REGISTRY_PATH_MAX];
    char         staging[AISERVE_REGISTRY_PATH_MAX];
    char         mpath[AISERVE_REGISTRY_PATH_MAX];
    char        *text;
    json_t      *o;
    const char  *weights;
    struct stat  st;

    if (check_name("id", e->id, AISERVE_REGISTRY_ID_MAX, 0, err, err_len)
        || check_name("base", e->base, AISERVE_REGISTRY_NAME_MAX, 0, err,
                      err_len)
        || check_name("account", e->account, AISERVE_REGISTRY_NAME_MAX, 0,
                      err, err_len)
        || check_name("job_id", e->job_id, AISERVE_REGISTRY_NAME_MAX, 1,
                      err, err_len))
    {
        return -1;
    }

    if (e->mode == NULL) {
        weights = NULL;

    } else if (strcmp(e->mode, "full") == 0) {
        weights = "model.safetensors";

    } else if (strcmp(e->mode, "head") == 0) {
        weights = "head.safetensors";

    } else if (strcmp(e->mode, "lora") == 0) {
        weights = "adapter_model.safetensors";

    } else {
        weights = NULL;
    }

    if (weights == NULL) {
        aiserve_err(err, err_len, "mode: \"%s\" is not full, head or lora",
                    e->mode ? e->mode : "");
        return -1;
    }

    if (e->task == NULL
        || (strcmp(e->task, "classify") != 0 && strcmp(e->task, "ner") != 0
            && strcmp(e->task, "pair") != 0))
    {
        aiserve_err(err, err_len, "task: \"%s\" is not classify, ner or pair",
                    e->task ? e->task : "");
        return -1;
    }

    if (stat(src_dir, &st) == -1 || !S_ISDIR(st.st_mode)) {
        aiserve_err(err, err_len, "%s: not a directory", src_dir);
        return -1;
    }

    if (!file_exists(src_dir, "config.json")
        || !file_exists(src_dir, weights))
    {
        aiserve_err(err, err_len, "%s: a %s model needs config.json and %s",
                    src_dir, e->mode, weights);
        return -1;
    }

    if (aiserve_registry_escape(e->id, esc, sizeof(esc)) != 0) {
        aiserve_err(err, err_len, "id: too long");
        return -1;
    }

    snprintf(name, sizeof(name), REGISTRY_STAGING "%s", esc);

    if (reg_path(dst, sizeof(dst), root, esc) != 0
        || reg_path(staging, sizeof(staging), root, name) != 0
        || reg_path(mpath, sizeof(mpath), staging, REGISTRY_MANIFEST) != 0)
    {
        aiserve_err(err, err_len, "%s: path too long", root);
        return -1;
    }

    lock = reg_lock(root, err, err_len);
    if (lock == -1) {
        return -1;
    }

    rc = -1;
    text = NULL;

    if (lstat(dst, &st) == 0) {
        aiserve_err(err, err_len, "\"%s\" is published already", e->id);
        rc = AISERVE_REGISTRY_EXISTS;
        goto done;
    }

    /* what a crash left of an earlier try */
    remove_tree(staging);

    if (copy_tree(src_dir, staging, err, err_len) != 0) {
        goto failed;
    }

    o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}",
                  "id", e->id, "base", e->base, "account", e->account,
                  "mode", e->mode, "task", e->task,
                  "job_id", e->job_id ? e->job_id : "",
                  "created_at", (json_int_t) e->created_at);
    if (o == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto failed;
    }

    text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(o);

    if (text == NULL) {
        aiserve_err(err, err_len, "out of memory");
        goto failed;
    }

    if (write_file(mpath, text, strlen(text), err, err_len) != 0
        || fsync_dir(staging, err, err_len) != 0)
    {
        goto failed;
    }

    give_tree(root, staging);

    if (rename(staging, dst) == -1) {
        aiserve_err(err, err_len, "%s: rename: %s", dst, strerror(errno));
        goto failed;
    }

    if (fsync_dir(root, err, err_len) != 0
        || reg_bump(root, err, err_len) != 0)
    {
        goto done;
    }

    rc = 0;
    goto done;

failed:

    remove_tree(staging);

done:

    free(text);
    close(lock);

    return rc;
}


int
aiserve_registry_remove(const char *root, const char *id, char *err,
    size_t err_len)
{
    int          lock, rc;
    char         esc[REGISTRY_ESC_MAX], name[REGISTRY_ESC_MAX + 16];
    char         dst[AISERVE_REGISTRY_PATH_MAX];
    char         trash[AISERVE_REGISTRY_PATH_MAX];
    struct stat  st;

    if (aiserve_registry_escape(id, esc, sizeof(esc)) != 0) {
        return AISERVE_REGISTRY_NOTFOUND;
    }

    snprintf(name, sizeof(name), REGISTRY_TRASH "%s", esc);

    if (reg_path(dst, sizeof(dst), root, esc) != 0
        || reg_path(trash, sizeof(trash), root, name) != 0)
    {
        return AISERVE_REGISTRY_NOTFOUND;
    }

    if (stat(root, &st) == -1) {
        return AISERVE_REGISTRY_NOTFOUND;
    }

    lock = reg_lock(root, err, err_len);
    if (lock == -1) {
        return -1;
    }

    rc = -1;

    if (lstat(dst, &st) == -1) {
        rc = AISERVE_REGISTRY_NOTFOUND;
        goto done;
    }

    remove_tree(trash);

    if (rename(dst, trash) == -1) {
        aiserve_err(err, err_len, "%s: rename: %s", dst, strerror(errno));
        goto done;
    }

    if (fsync_dir(root, err, err_len) != 0
        || reg_bump(root, err, err_len) != 0)
    {
        goto done;
    }

    if (remove_tree(trash) != 0) {
        aiserve_err(err, err_len, "%s: could not remove every file", trash);
        goto done;
    }

    rc = 0;

done:

    close(lock);

    return rc;
}


static int
get_str(json_t *o, const char *key, char *buf, size_t len, int empty_ok,
    const char *path, char *err, size_t err_len)
{
    json_t  *v;

    v = json_object_get(o, key);

    if (!json_is_string(v) || json_string_length(v) >= len
        || (json_string_length(v) == 0 && !empty_ok))
    {
        aiserve_err(err, err_len, "%s: field \"%s\": %s", path, key,
                    v == NULL ? "missing"
                    : !json_is_string(v) ? "not a string"
                    : json_string_length(v) == 0 ? "empty" : "too long");
        return -1;
    }

    memcpy(buf, json_string_value(v), json_string_length(v) + 1);

    return 0;
}


/* Reads the manifest of the model directory DIR into *M. */
static int
read_manifest(const char *dir, aiserve_registry_model_t *m, char *err,
    size_t err_len)
{
    char          p[AISERVE_REGISTRY_PATH_MAX];
    json_t       *o, *v;
    json_error_t  je;

    memset(m, 0, sizeof(*m));

    if (reg_path(p, sizeof(p), dir, REGISTRY_MANIFEST) != 0
        || strlen(dir) >= sizeof(m->dir))
    {
        aiserve_err(err, err_len, "%s: path too long", dir);
        return -1;
    }

    o = json_load_file(p, 0, &je);
    if (o == NULL) {
        aiserve_err(err, err_len, "%s: line %d: %s", p, je.line, je.text);
        return -1;
    }

    if (!json_is_object(o)
        || get_str(o, "id", m->id, sizeof(m->id), 0, p, err, err_len)
        || get_str(o, "base", m->base, sizeof(m->base), 0, p, err, err_len)
        || get_str(o, "account", m->account, sizeof(m->account), 0, p, err,
                   err_len)
        || get_str(o, "mode", m->mode, sizeof(m->mode), 0, p, err, err_len)
        || get_str(o, "task", m->task, sizeof(m->task), 0, p, err, err_len)
        || get_str(o, "job_id", m->job_id, sizeof(m->job_id), 1, p, err,
                   err_len))
    {
        if (!json_is_object(o)) {
            aiserve_err(err, err_len, "%s: not a JSON object", p);
        }
        json_decref(o);
        return -1;
    }

    v = json_object_get(o, "created_at");
    if (!json_is_integer(v)) {
        aiserve_err(err, err_len, "%s: field \"created_at\": not an integer",
                    p);
        json_decref(o);
        return -1;
    }

    m->created_at = json_integer_value(v);
    json_decref(o);

    strcpy(m->dir, dir);

    return 0;
}


int
aiserve_registry_lookup(const char *root, const char *id,
    aiserve_registry_model_t *m, char *err, size_t err_len)
{
    char         esc[REGISTRY_ESC_MAX], dir[AISERVE_REGISTRY_PATH_MAX];
    struct stat  st;

    if (aiserve_registry_escape(id, esc, sizeof(esc)) != 0
        || reg_path(dir, sizeof(dir), root, esc) != 0
        || stat(dir, &st) == -1 || !S_ISDIR(st.st_mode))
    {
        return AISERVE_REGISTRY_NOTFOUND;
    }

    if (read_manifest(dir, m, err, err_len) != 0) {
        return -1;
    }

    if (strcmp(m->id, id) != 0) {
        aiserve_err(err, err_len, "%s/" REGISTRY_MANIFEST ": id \"%s\" is not "
                    "the directory's", dir, m->id);
        return -1;
    }

    return 0;
}


static int
cmp_model(const void *a, const void *b)
{
    return strcmp(((const aiserve_registry_model_t *) a)->id,
                  ((const aiserve_registry_model_t *) b)->id);
}


int
aiserve_registry_list(const char *root,
    aiserve_registry_model_t **models, size_t *n, char *err,
    size_t err_len)
{
    DIR                       *d;
    char                       dir[AISERVE_REGISTRY_PATH_MAX];
    char                       esc[REGISTRY_ESC_MAX], lerr[8];
    size_t                     cap;
    struct dirent             *de;
    aiserve_registry_model_t  *all, *grown;

    *models = NULL;
    *n = 0;

    d = opendir(root);
    if (d == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        aiserve_err(err, err_len, "%s: %s", root, strerror(errno));
        return -1;
    }

    all = NULL;
    cap = 0;

    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.'
            || strcmp(de->d_name, REGISTRY_GENERATION) == 0
            || reg_path(dir, sizeof(dir), root, de->d_name) != 0)
        {
            continue;
        }

        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            grown = realloc(all, cap * sizeof(*all));
            if (grown == NULL) {
                aiserve_err(err, err_len, "out of memory");
                free(all);
                closedir(d);
                return -1;
            }
            all = grown;
        }

        /* a directory whose manifest does not name it is not a model */
        if (read_manifest(dir, &all[*n], lerr, sizeof(lerr)) != 0
            || aiserve_registry_escape(all[*n].id, esc, sizeof(esc)) != 0
            || strcmp(esc, de->d_name) != 0)
        {
            continue;
        }

        (*n)++;
    }

    closedir(d);

    if (*n == 0) {
        free(all);
        return 0;
    }

    qsort(all, *n, sizeof(*all), cmp_model);
    *models = all;

    return 0;
}
