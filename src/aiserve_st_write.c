/*
 * aiserve safetensors writer: the layout of the reference serializer
 * (huggingface/safetensors, safetensors/src/tensor.rs: prepare(), the
 * Serialize impl of Metadata), written atomically.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <utf8proc.h>

#include "aiserve_err.h"
#include "aiserve_st_write.h"


/* --- a growing string --------------------------------------------------- */

typedef struct {
    char    *p;
    size_t   len;
    size_t   cap;
    int      oom;
} aiserve_sb_t;


static void
aiserve_sb_add(aiserve_sb_t *sb, const char *s, size_t n)
{
    char    *np;
    size_t   cap;

    if (sb->oom) {
        return;
    }
    if (sb->len + n + 1 > sb->cap) {
        cap = sb->cap ? sb->cap : 256;
        while (cap < sb->len + n + 1) {
            cap *= 2;
        }
        np = realloc(sb->p, cap);
        if (np == NULL) {
            sb->oom = 1;
            return;
        }
        sb->p = np;
        sb->cap = cap;
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
}


static void
aiserve_sb_str(aiserve_sb_t *sb, const char *s)
{
    aiserve_sb_add(sb, s, strlen(s));
}


static void
aiserve_sb_size(aiserve_sb_t *sb, size_t v)
{
    char  buf[32];

    aiserve_sb_add(sb, buf, (size_t) snprintf(buf, sizeof(buf), "%zu", v));
}


/* S as a JSON string, escaped as serde_json escapes it: the quote, the
 * backslash, \b \f \n \r \t, other control bytes as \u00xx (lowercase);
 * everything else, non-ASCII included, as is. */
static void
aiserve_sb_json_str(aiserve_sb_t *sb, const char *s)
{
    static const char   hex[] = "0123456789abcdef";
    const unsigned char *c;
    char                 esc[7];

    aiserve_sb_add(sb, "\"", 1);
    for (c = (const unsigned char *) s; *c; c++) {
        switch (*c) {
        case '"':  aiserve_sb_add(sb, "\\\"", 2); break;
        case '\\': aiserve_sb_add(sb, "\\\\", 2); break;
        case '\b': aiserve_sb_add(sb, "\\b", 2); break;
        case '\f': aiserve_sb_add(sb, "\\f", 2); break;
        case '\n': aiserve_sb_add(sb, "\\n", 2); break;
        case '\r': aiserve_sb_add(sb, "\\r", 2); break;
        case '\t': aiserve_sb_add(sb, "\\t", 2); break;
        default:
            if (*c < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[*c >> 4];
                esc[5] = hex[*c & 15];
                aiserve_sb_add(sb, esc, 6);
            } else {
                aiserve_sb_add(sb, (const char *) c, 1);
            }
        }
    }
    aiserve_sb_add(sb, "\"", 1);
}


/* --- the header --------------------------------------------------------- */

static int
aiserve_st_valid_utf8(const char *s)
{
    utf8proc_int32_t  cp;
    utf8proc_ssize_t  n;
    size_t            len = strlen(s);

    while (len > 0) {
        n = utf8proc_iterate((const utf8proc_uint8_t *) s,
                             (utf8proc_ssize_t) len, &cp);
        if (n <= 0) {
            return 0;
        }
        s += n;
        len -= (size_t) n;
    }
    return 1;
}


/* Serialization order of the reference: dtype descending (the format's
 * dtype order, which aiserve_st_dtype_e follows), then name ascending. */
static int
aiserve_st_cmp_order(const void *a, const void *b)
{
    const aiserve_st_wtensor_t  *x = *(const aiserve_st_wtensor_t *const *) a;
    const aiserve_st_wtensor_t  *y = *(const aiserve_st_wtensor_t *const *) b;

    if (x->dtype != y->dtype) {
        return x->dtype > y->dtype ? -1 : 1;
    }
    return strcmp(x->name, y->name);
}


static int
aiserve_st_cmp_name(const void *a, const void *b)
{
    return strcmp((*(const aiserve_st_wtensor_t *const *) a)->name,
                  (*(const aiserve_st_wtensor_t *const *) b)->name);
}


/* Bytes of tensor T, or (size_t) -1 on overflow. */
static size_t
aiserve_st_wbytes(const aiserve_st_wtensor_t *t)
{
    size_t  i, n = aiserve_st_dtype_size(t->dtype);

    for (i = 0; i < t->ndim; i++) {
        if (t->shape[i] != 0 && n > SIZE_MAX / 2 / t->shape[i]) {
            return (size_t) -1;
        }
        n *= t->shape[i];
    }
    return n;
}


/* Checks the input and returns the tensors in serialization order
 * (malloc'ed array of pointers into TENSORS). */
static const aiserve_st_wtensor_t **
aiserve_st_order(const aiserve_st_wtensor_t *tensors, size_t n,
    const aiserve_st_meta_t *meta, size_t n_meta, const char *name,
    char *err, size_t err_len)
{
    const aiserve_st_wtensor_t  **ord;
    size_t                        i;

    for (i = 0; i < n_meta; i++) {
        if (meta[i].key == NULL || meta[i].value == NULL
            || !aiserve_st_valid_utf8(meta[i].key)
            || !aiserve_st_valid_utf8(meta[i].value))
        {
            aiserve_err(err, err_len, "%s: __metadata__ entry %zu is not a "
                        "pair of UTF-8 strings", name, i);
            return NULL;
        }
    }
    ord = malloc((n ? n : 1) * sizeof(*ord));
    if (ord == NULL) {
        aiserve_err(err, err_len, "%s: out of memory", name);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        const aiserve_st_wtensor_t  *t = &tensors[i];

        if (t->name == NULL || t->name[0] == '\0'
            || !aiserve_st_valid_utf8(t->name))
        {
            aiserve_err(err, err_len, "%s: tensor %zu: the name is empty or "
                        "not UTF-8", name, i);
            goto fail;
        }
        if (strcmp(t->name, "__metadata__") == 0) {
            aiserve_err(err, err_len, "%s: tensor %zu: \"__metadata__\" is "
                        "reserved", name, i);
            goto fail;
        }
        if (aiserve_st_dtype_size(t->dtype) == 0) {
            aiserve_err(err, err_len, "%s: tensor \"%s\": unknown dtype %d",
                        name, t->name, (int) t->dtype);
            goto fail;
        }
        if (t->ndim > AISERVE_ST_MAX_DIMS) {
            aiserve_err(err, err_len, "%s: tensor \"%s\": %zu dimensions "
                        "(at most %d)", name, t->name, t->ndim,
                        AISERVE_ST_MAX_DIMS);
            goto fail;
        }
        if (aiserve_st_wbytes(t) == (size_t) -1) {
            aiserve_err(err, err_len, "%s: tensor \"%s\": shape overflows",
                        name, t->name);
            goto fail;
        }
        if (t->data == NULL && aiserve_st_wbytes(t) > 0) {
            aiserve_err(err, err_len, "%s: tensor \"%s\": no data", name,
                        t->name);
            goto fail;
        }
        ord[i] = t;
    }
    /* duplicates are adjacent by name alone */
    qsort(ord, n, sizeof(*ord), aiserve_st_cmp_name);
    for (i = 1; i < n; i++) {
        if (strcmp(ord[i]->name, ord[i - 1]->name) == 0) {
            aiserve_err(err, err_len, "%s: tensor \"%s\" is given twice",
                        name, ord[i]->name);
            goto fail;
        }
    }
    qsort(ord, n, sizeof(*ord), aiserve_st_cmp_order);
    return ord;

fail:
    free(ord);
    return NULL;
}


static char *
aiserve_st_header_of(const aiserve_st_wtensor_t *const *ord, size_t n,
    const aiserve_st_meta_t *meta, size_t n_meta, size_t *len,
    const char *name, char *err, size_t err_len)
{
    aiserve_sb_t  sb = { NULL, 0, 0, 0 };
    size_t        i, d, off = 0, bytes;

    aiserve_sb_str(&sb, "{");
    if (n_meta > 0) {
        aiserve_sb_str(&sb, "\"__metadata__\":{");
        for (i = 0; i < n_meta; i++) {
            if (i > 0) {
                aiserve_sb_str(&sb, ",");
            }
            aiserve_sb_json_str(&sb, meta[i].key);
            aiserve_sb_str(&sb, ":");
            aiserve_sb_json_str(&sb, meta[i].value);
        }
        aiserve_sb_str(&sb, "}");
    }
    for (i = 0; i < n; i++) {
        if (i > 0 || n_meta > 0) {
            aiserve_sb_str(&sb, ",");
        }
        aiserve_sb_json_str(&sb, ord[i]->name);
        aiserve_sb_str(&sb, ":{\"dtype\":");
        aiserve_sb_json_str(&sb, aiserve_st_dtype_name(ord[i]->dtype));
        aiserve_sb_str(&sb, ",\"shape\":[");
        for (d = 0; d < ord[i]->ndim; d++) {
            if (d > 0) {
                aiserve_sb_str(&sb, ",");
            }
            aiserve_sb_size(&sb, ord[i]->shape[d]);
        }
        bytes = aiserve_st_wbytes(ord[i]);
        aiserve_sb_str(&sb, "],\"data_offsets\":[");
        aiserve_sb_size(&sb, off);
        aiserve_sb_str(&sb, ",");
        aiserve_sb_size(&sb, off + bytes);
        aiserve_sb_str(&sb, "]}");
        off += bytes;
    }
    aiserve_sb_str(&sb, "}");
    while (!sb.oom && sb.len % 8 != 0) {
        aiserve_sb_str(&sb, " ");
    }
    if (sb.oom) {
        free(sb.p);
        aiserve_err(err, err_len, "%s: out of memory for the header", name);
        return NULL;
    }
    if (sb.len > AISERVE_ST_MAX_HEADER) {
        free(sb.p);
        aiserve_err(err, err_len, "%s: header of %zu bytes is over the "
                    "%d-byte limit of the format", name, sb.len,
                    AISERVE_ST_MAX_HEADER);
        return NULL;
    }
    *len = sb.len;
    return sb.p;
}


char *
aiserve_st_header(const aiserve_st_wtensor_t *tensors, size_t n_tensors,
    const aiserve_st_meta_t *meta, size_t n_meta, size_t *len,
    const char *name, char *err, size_t err_len)
{
    const aiserve_st_wtensor_t  **ord;
    char                         *h;

    ord = aiserve_st_order(tensors, n_tensors, meta, n_meta, name, err,
                           err_len);
    if (ord == NULL) {
        return NULL;
    }
    h = aiserve_st_header_of(ord, n_tensors, meta, n_meta, len, name, err,
                             err_len);
    free(ord);
    return h;
}


/* --- atomic file writes ------------------------------------------------- */

static int
aiserve_write_all(int fd, const void *p, size_t len)
{
    const char  *c = p;
    ssize_t      w;

    while (len > 0) {
        w = write(fd, c, len > ((size_t) 1 << 30) ? ((size_t) 1 << 30) : len);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        c += w;
        len -= (size_t) w;
    }
    return 0;
}


/* fsync of the directory holding PATH, so that the rename is durable. */
static int
aiserve_fsync_dir_of(const char *path)
{
    char  *copy = strdup(path);
    int    fd, rc;

    if (copy == NULL) {
        errno = ENOMEM;
        return -1;
    }
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0) {
        return -1;
    }
    rc = fsync(fd);
    close(fd);
    return rc;
}


/* Writes the N_IOV buffers one after the other to PATH atomically. */
static int
aiserve_writev_atomic(const char *path, const struct iovec *iov,
    size_t n_iov, char *err, size_t err_len)
{
    char    *tmp;
    size_t   i;
    int      fd;

    tmp = malloc(strlen(path) + 16);
    if (tmp == NULL) {
        aiserve_err(err, err_len, "%s: out of memory", path);
        return -1;
    }
    sprintf(tmp, "%s.tmp.XXXXXX", path);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        aiserve_err(err, err_len, "%s: cannot create a temporary file "
                    "beside it: %s", path, strerror(errno));
        free(tmp);
        return -1;
    }
    for (i = 0; i < n_iov; i++) {
        if (aiserve_write_all(fd, iov[i].iov_base, iov[i].iov_len) != 0) {
            aiserve_err(err, err_len, "%s: write: %s", tmp, strerror(errno));
            goto fail;
        }
    }
    if (fchmod(fd, 0644) != 0 || fsync(fd) != 0) {
        aiserve_err(err, err_len, "%s: fsync: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        aiserve_err(err, err_len, "%s: close: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        aiserve_err(err, err_len, "%s: rename from %s: %s", path, tmp,
                    strerror(errno));
        goto fail;
    }
    free(tmp);
    if (aiserve_fsync_dir_of(path) != 0) {
        aiserve_err(err, err_len, "%s: fsync of its directory: %s", path,
                    strerror(errno));
        return -1;
    }
    return 0;

fail:
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
    free(tmp);
    return -1;
}


int
aiserve_write_file_atomic(const char *path, const void *data, size_t len,
    char *err, size_t err_len)
{
    struct iovec  iov;

    iov.iov_base = (void *) data;
    iov.iov_len = len;
    return aiserve_writev_atomic(path, &iov, 1, err, err_len);
}


int
aiserve_st_write(const char *path, const aiserve_st_wtensor_t *tensors,
    size_t n_tensors, const aiserve_st_meta_t *meta, size_t n_meta,
    char *err, size_t err_len)
{
    const aiserve_st_wtensor_t  **ord;
    struct iovec                 *iov;
    unsigned char                 prefix[8];
    char                         *header;
    size_t                        hlen, i;
    int                           rc = -1;

    ord = aiserve_st_order(tensors, n_tensors, meta, n_meta, path, err,
                           err_len);
    if (ord == NULL) {
        return -1;
    }
    header = aiserve_st_header_of(ord, n_tensors, meta, n_meta, &hlen, path,
                                  err, err_len);
    iov = malloc((n_tensors + 2) * sizeof(*iov));
    if (header == NULL || iov == NULL) {
        if (header != NULL) {
            aiserve_err(err, err_len, "%s: out of memory", path);
        }
        goto done;
    }
    for (i = 0; i < 8; i++) {
        prefix[i] = (unsigned char) ((uint64_t) hlen >> (8 * i));
    }
    iov[0].iov_base = prefix;
    iov[0].iov_len = 8;
    iov[1].iov_base = header;
    iov[1].iov_len = hlen;
    for (i = 0; i < n_tensors; i++) {
        iov[i + 2].iov_base = (void *) ord[i]->data;
        iov[i + 2].iov_len = aiserve_st_wbytes(ord[i]);
    }
    rc = aiserve_writev_atomic(path, iov, n_tensors + 2, err, err_len);

done:
    free(iov);
    free(header);
    free(ord);
    return rc;
}


aiserve_st_wtensor_t *
aiserve_st_wtensors(const aiserve_st_file_t *st)
{
    aiserve_st_wtensor_t  *w;
    size_t                 i;

    w = calloc(st->n_tensors ? st->n_tensors : 1, sizeof(*w));
    if (w == NULL) {
        return NULL;
    }
    for (i = 0; i < st->n_tensors; i++) {
        w[i].name = st->tensors[i].name;
        w[i].dtype = st->tensors[i].dtype;
        w[i].ndim = st->tensors[i].ndim;
        memcpy(w[i].shape, st->tensors[i].shape, sizeof(w[i].shape));
        w[i].data = st->tensors[i].data;
    }
    return w;
}


/* --- float conversions -------------------------------------------------- */

/* float -> IEEE half, round to nearest even (as torch's c10::Half). */
static uint16_t
aiserve_f32_to_f16(float f)
{
    uint32_t  x, sign, mant, rem;
    uint16_t  h;
    int       exp;

    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000;
    x &= 0x7fffffff;
    if (x > 0x7f800000) {
        return (uint16_t) (sign | 0x7e00);                  /* NaN */
    }
    if (x >= 0x477ff000) {
        return (uint16_t) (sign | 0x7c00);   /* >= 65520: infinity */
    }
    if (x < 0x38800000) {
        /* below 2^-14: a subnormal half, value * 2^24 rounded to the
         * nearest even integer (the scaling is exact) */
        memcpy(&f, &x, 4);
        return (uint16_t) (sign | (uint32_t) nearbyintf(f * 0x1p24f));
    }
    exp = (int) (x >> 23) - 127 + 15;
    mant = x & 0x7fffff;
    h = (uint16_t) (((uint32_t) exp << 10) | (mant >> 13));
    rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) {
        h++;                        /* a carry into the exponent is right */
    }
    return (uint16_t) (sign | h);
}


/* float -> bfloat16, round to nearest even (as torch's c10::BFloat16). */
static uint16_t
aiserve_f32_to_bf16(float f)
{
    uint32_t  x;

    if (isnan(f)) {
        return 0x7fc0;
    }
    memcpy(&x, &f, 4);
    return (uint16_t) ((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}


int
aiserve_st_from_f32(aiserve_st_dtype_e dtype, const float *src,
    uint8_t *dst, size_t n)
{
    size_t    i;
    uint16_t  h;

    if (dtype != AISERVE_ST_F16 && dtype != AISERVE_ST_BF16) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        h = dtype == AISERVE_ST_F16 ? aiserve_f32_to_f16(src[i])
                                    : aiserve_f32_to_bf16(src[i]);
        dst[2 * i] = (uint8_t) (h & 0xff);
        dst[2 * i + 1] = (uint8_t) (h >> 8);
    }
    return 0;
}
