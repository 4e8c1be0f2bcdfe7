/*
 * aiserve safetensors reader: mmap + validation as in the reference reader
 * (huggingface/safetensors, safetensors/src/tensor.rs: read_metadata and
 * Metadata::validate).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "aiserve_safetensors.h"


static const struct {
    const char  *name;
    size_t       size;
} aiserve_st_dtypes[] = {
    [AISERVE_ST_BOOL]    = { "BOOL", 1 },
    [AISERVE_ST_U8]      = { "U8", 1 },
    [AISERVE_ST_I8]      = { "I8", 1 },
    [AISERVE_ST_F8_E5M2] = { "F8_E5M2", 1 },
    [AISERVE_ST_F8_E4M3] = { "F8_E4M3", 1 },
    [AISERVE_ST_I16]     = { "I16", 2 },
    [AISERVE_ST_U16]     = { "U16", 2 },
    [AISERVE_ST_F16]     = { "F16", 2 },
    [AISERVE_ST_BF16]    = { "BF16", 2 },
    [AISERVE_ST_I32]     = { "I32", 4 },
    [AISERVE_ST_U32]     = { "U32", 4 },
    [AISERVE_ST_F32]     = { "F32", 4 },
    [AISERVE_ST_F64]     = { "F64", 8 },
    [AISERVE_ST_I64]     = { "I64", 8 },
    [AISERVE_ST_U64]     = { "U64", 8 },
};

#define AISERVE_ST_N_DTYPES \
    (sizeof(aiserve_st_dtypes) / sizeof(aiserve_st_dtypes[0]))


const char *
aiserve_st_dtype_name(aiserve_st_dtype_e dtype)
{
    return (size_t) dtype < AISERVE_ST_N_DTYPES
           ? aiserve_st_dtypes[dtype].name : "?";
}


size_t
aiserve_st_dtype_size(aiserve_st_dtype_e dtype)
{
    return (size_t) dtype < AISERVE_ST_N_DTYPES
           ? aiserve_st_dtypes[dtype].size : 0;
}


static int
aiserve_st_dtype_parse(const char *s, aiserve_st_dtype_e *dtype)
{
    size_t  i;

    for (i = 0; i < AISERVE_ST_N_DTYPES; i++) {
        if (strcmp(s, aiserve_st_dtypes[i].name) == 0) {
            *dtype = (aiserve_st_dtype_e) i;
            return 0;
        }
    }
    return -1;
}


void
aiserve_st_close(aiserve_st_file_t *st)
{
    size_t  i;

    if (st == NULL) {
        return;
    }
    for (i = 0; i < st->n_tensors; i++) {
        free(st->tensors[i].name);
    }
    free(st->tensors);
    if (st->map != NULL) {
        munmap(st->map, st->map_len);
    }
    free(st->path);
    free(st);
}


static int
aiserve_st_cmp_name(const void *a, const void *b)
{
    return strcmp(((const aiserve_st_tensor_t *) a)->name,
                  ((const aiserve_st_tensor_t *) b)->name);
}


typedef struct {
    size_t  begin;
    size_t  end;
    size_t  index;
} aiserve_st_span_t;


static int
aiserve_st_cmp_span(const void *a, const void *b)
{
    const aiserve_st_span_t  *x = a, *y = b;

    if (x->begin != y->begin) {
        return x->begin < y->begin ? -1 : 1;
    }
    if (x->end != y->end) {
        return x->end < y->end ? -1 : 1;
    }
    return 0;
}


/* A JSON integer that is a valid size (>= 0). */
static int
aiserve_st_json_size(const json_t *v, size_t *out)
{
    json_int_t  i;

    if (!json_is_integer(v)) {
        return -1;
    }
    i = json_integer_value(v);
    if (i < 0) {
        return -1;
    }
    *out = (size_t) i;
    return 0;
}


/* One "name": {dtype, shape, data_offsets} entry; offsets relative to the
 * data buffer go to *begin / *end. */
static int
aiserve_st_parse_entry(const char *name, const char *key, json_t *info,
    aiserve_st_tensor_t *t, size_t *begin, size_t *end, char *err,
    size_t err_len)
{
    json_t      *dtype, *shape, *offs, *v;
    const char  *k;
    size_t       i, n, dim;

    if (!json_is_object(info)) {
        snprintf(err, err_len, "%s: tensor \"%s\": entry is not a JSON object",
                 name, key);
        return -1;
    }
    json_object_foreach(info, k, v) {
        if (strcmp(k, "dtype") != 0 && strcmp(k, "shape") != 0
            && strcmp(k, "data_offsets") != 0)
        {
            snprintf(err, err_len, "%s: tensor \"%s\": unknown field \"%s\"",
                     name, key, k);
            return -1;
        }
    }

    dtype = json_object_get(info, "dtype");
    if (!json_is_string(dtype)
        || aiserve_st_dtype_parse(json_string_value(dtype), &t->dtype) != 0)
    {
        snprintf(err, err_len, "%s: tensor \"%s\": missing or unknown dtype",
                 name, key);
        return -1;
    }

    shape = json_object_get(info, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > AISERVE_ST_MAX_DIMS)
    {
        snprintf(err, err_len, "%s: tensor \"%s\": shape is not an array of "
                 "at most %d sizes", name, key, AISERVE_ST_MAX_DIMS);
        return -1;
    }
    t->ndim = json_array_size(shape);
    n = 1;
    for (i = 0; i < t->ndim; i++) {
        if (aiserve_st_json_size(json_array_get(shape, i), &dim) != 0) {
            snprintf(err, err_len, "%s: tensor \"%s\": shape[%zu] is not a "
                     "non-negative integer", name, key, i);
            return -1;
        }
        if (dim != 0 && n > SIZE_MAX / dim) {
            snprintf(err, err_len, "%s: tensor \"%s\": shape overflows",
                     name, key);
            return -1;
        }
        t->shape[i] = dim;
        n *= dim;
    }
    t->n_elements = n;
    if (n > SIZE_MAX / aiserve_st_dtype_size(t->dtype)) {
        snprintf(err, err_len, "%s: tensor \"%s\": shape overflows", name,
                 key);
        return -1;
    }
    t->n_bytes = n * aiserve_st_dtype_size(t->dtype);

    offs = json_object_get(info, "data_offsets");
    if (!json_is_array(offs) || json_array_size(offs) != 2
        || aiserve_st_json_size(json_array_get(offs, 0), begin) != 0
        || aiserve_st_json_size(json_array_get(offs, 1), end) != 0)
    {
        snprintf(err, err_len, "%s: tensor \"%s\": data_offsets is not "
                 "[begin, end]", name, key);
        return -1;
    }
    if (*end < *begin) {
        snprintf(err, err_len, "%s: tensor \"%s\": data_offsets [%zu, %zu] "
                 "end before begin", name, key, *begin, *end);
        return -1;
    }
    if (*end - *begin != t->n_bytes) {
        snprintf(err, err_len, "%s: tensor \"%s\": data_offsets [%zu, %zu] "
                 "hold %zu bytes but dtype %s and shape need %zu", name, key,
                 *begin, *end, *end - *begin, aiserve_st_dtype_name(t->dtype),
                 t->n_bytes);
        return -1;
    }
    return 0;
}


aiserve_st_file_t *
aiserve_st_parse(const uint8_t *buf, size_t len, const char *name, char *err,
    size_t err_len)
{
    aiserve_st_file_t  *st;
    aiserve_st_span_t  *spans = NULL;
    json_t             *root = NULL, *v;
    json_error_t        jerr;
    const char         *key;
    const uint8_t      *data;
    uint64_t            hlen;
    size_t              i, n, data_len, pos;

    st = calloc(1, sizeof(*st));
    if (st == NULL) {
        snprintf(err, err_len, "%s: out of memory", name);
        return NULL;
    }

    if (len < 8) {
        snprintf(err, err_len, "%s: file of %zu bytes is too small for the "
                 "8-byte header size", name, len);
        goto fail;
    }
    hlen = 0;
    for (i = 0; i < 8; i++) {
        hlen |= (uint64_t) buf[i] << (8 * i);
    }
    if (hlen > AISERVE_ST_MAX_HEADER) {
        snprintf(err, err_len, "%s: header size %llu is over the %d-byte "
                 "limit", name, (unsigned long long) hlen,
                 AISERVE_ST_MAX_HEADER);
        goto fail;
    }
    if (hlen > len - 8) {
        snprintf(err, err_len, "%s: header size %llu runs past the end of "
                 "the file (%zu bytes; truncated?)", name,
                 (unsigned long long) hlen, len);
        goto fail;
    }
    if (hlen == 0 || buf[8] != '{') {
        snprintf(err, err_len, "%s: header does not start with '{'", name);
        goto fail;
    }

    root = json_loadb((const char *) buf + 8, (size_t) hlen,
                      JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, err_len, "%s: header is not valid JSON: %s at "
                 "byte %d", name, jerr.text, jerr.position);
        goto fail;
    }
    if (!json_is_object(root)) {
        snprintf(err, err_len, "%s: header is not a JSON object", name);
        goto fail;
    }

    n = json_object_size(root);
    st->tensors = calloc(n ? n : 1, sizeof(*st->tensors));
    spans = calloc(n ? n : 1, sizeof(*spans));
    if (st->tensors == NULL || spans == NULL) {
        snprintf(err, err_len, "%s: out of memory", name);
        goto fail;
    }

    data = buf + 8 + hlen;
    data_len = len - 8 - (size_t) hlen;

    json_object_foreach(root, key, v) {
        aiserve_st_tensor_t  *t;
        const char           *mk;
        json_t               *mv;

        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                snprintf(err, err_len, "%s: __metadata__ is not an object",
                         name);
                goto fail;
            }
            json_object_foreach(v, mk, mv) {
                if (!json_is_string(mv)) {
                    snprintf(err, err_len, "%s: __metadata__ \"%s\" is not "
                             "a string", name, mk);
                    goto fail;
                }
            }
            continue;
        }
        t = &st->tensors[st->n_tensors];
        t->name = strdup(key);
        if (t->name == NULL) {
            snprintf(err, err_len, "%s: out of memory", name);
            goto fail;
        }
        spans[st->n_tensors].index = st->n_tensors;
        st->n_tensors++;
        if (aiserve_st_parse_entry(name, key, v, t,
                                   &spans[st->n_tensors - 1].begin,
                                   &spans[st->n_tensors - 1].end,
                                   err, err_len) != 0)
        {
            goto fail;
        }
    }

    /* The tensors must tile [0, data_len) exactly, as in Metadata::validate
     * followed by the MetadataIncompleteBuffer check.  Overlaps are looked
     * for first, so that one is reported as such and not as the gap it
     * leaves elsewhere. */
    qsort(spans, st->n_tensors, sizeof(*spans), aiserve_st_cmp_span);
    for (i = 1; i < st->n_tensors; i++) {
        if (spans[i].begin < spans[i - 1].end) {
            snprintf(err, err_len, "%s: tensor \"%s\": data_offsets "
                     "[%zu, %zu] overlap those of \"%s\" [%zu, %zu]", name,
                     st->tensors[spans[i].index].name, spans[i].begin,
                     spans[i].end, st->tensors[spans[i - 1].index].name,
                     spans[i - 1].begin, spans[i - 1].end);
            goto fail;
        }
    }
    pos = 0;
    for (i = 0; i < st->n_tensors; i++) {
        aiserve_st_tensor_t  *t = &st->tensors[spans[i].index];

        if (spans[i].begin != pos) {
            snprintf(err, err_len, "%s: tensor \"%s\": data_offsets "
                     "[%zu, %zu] leave a gap after the previous tensor "
                     "(which ends at %zu)", name, t->name, spans[i].begin,
                     spans[i].end, pos);
            goto fail;
        }
        if (spans[i].end > data_len) {
            snprintf(err, err_len, "%s: tensor \"%s\": data_offsets "
                     "[%zu, %zu] run past the end of the data (%zu bytes; "
                     "truncated?)", name, t->name, spans[i].begin,
                     spans[i].end, data_len);
            goto fail;
        }
        t->data = data + spans[i].begin;
        pos = spans[i].end;
    }
    if (pos != data_len) {
        snprintf(err, err_len, "%s: the tensors cover %zu bytes of data but "
                 "the file has %zu", name, pos, data_len);
        goto fail;
    }

    qsort(st->tensors, st->n_tensors, sizeof(*st->tensors),
          aiserve_st_cmp_name);
    free(spans);
    json_decref(root);
    return st;

fail:
    free(spans);
    if (root != NULL) {
        json_decref(root);
    }
    aiserve_st_close(st);
    return NULL;
}


aiserve_st_file_t *
aiserve_st_open(const char *path, char *err, size_t err_len)
{
    aiserve_st_file_t  *st;
    struct stat         sb;
    void               *map;
    int                 fd;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &sb) != 0) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, err_len, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (sb.st_size < 8) {
        snprintf(err, err_len, "%s: file of %lld bytes is too small for the "
                 "8-byte header size", path, (long long) sb.st_size);
        close(fd);
        return NULL;
    }
    map = mmap(NULL, (size_t) sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(err, err_len, "%s: mmap: %s", path, strerror(errno));
        return NULL;
    }

    st = aiserve_st_parse(map, (size_t) sb.st_size, path, err, err_len);
    if (st == NULL) {
        munmap(map, (size_t) sb.st_size);
        return NULL;
    }
    st->map = map;
    st->map_len = (size_t) sb.st_size;
    st->path = strdup(path);
    if (st->path == NULL) {
        snprintf(err, err_len, "%s: out of memory", path);
        aiserve_st_close(st);
        return NULL;
    }
    return st;
}


const aiserve_st_tensor_t *
aiserve_st_find(const aiserve_st_file_t *st, const char *name)
{
    aiserve_st_tensor_t  key;

    key.name = (char *) name;
    return bsearch(&key, st->tensors, st->n_tensors, sizeof(key),
                   aiserve_st_cmp_name);
}


static float
aiserve_st_f16_to_f32(uint16_t h)
{
    uint32_t  sign = (uint32_t) (h & 0x8000) << 16;
    uint32_t  exp = (h >> 10) & 0x1f;
    uint32_t  man = h & 0x3ff;
    uint32_t  bits;
    float     f;

    if (exp == 0x1f) {
        bits = sign | 0x7f800000 | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        /* subnormal half: value = man * 2^-24, exact in float */
        f = (float) man * 0x1p-24f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    memcpy(&f, &bits, 4);
    return f;
}


int
aiserve_st_to_f32(aiserve_st_dtype_e dtype, const uint8_t *src, float *dst,
    size_t n)
{
    size_t    i;
    uint32_t  bits;
    uint16_t  h;

    switch (dtype) {
    case AISERVE_ST_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case AISERVE_ST_F16:
        for (i = 0; i < n; i++) {
            h = (uint16_t) (src[2 * i] | (src[2 * i + 1] << 8));
            dst[i] = aiserve_st_f16_to_f32(h);
        }
        return 0;
    case AISERVE_ST_BF16:
        for (i = 0; i < n; i++) {
            bits = (uint32_t) (src[2 * i] | (src[2 * i + 1] << 8)) << 16;
            memcpy(&dst[i], &bits, 4);
        }
        return 0;
    default:
        return -1;
    }
}
