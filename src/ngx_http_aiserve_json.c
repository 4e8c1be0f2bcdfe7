/*
 * A small JSON writer for aiserve responses: a buffer in the request pool
 * that grows by doubling.  Strings are escaped per RFC 8259 section 7
 * (quote, backslash and control characters; UTF-8 passes through, inputs
 * were validated by jansson).  Floats use %.9g, which round-trips every
 * float32; non-finite values, which JSON cannot carry, are written as null.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <math.h>
#include <stdio.h>

#include "ngx_http_aiserve_infer.h"


static ngx_int_t ngx_http_aiserve_json_reserve(ngx_http_aiserve_json_t *j,
    size_t n);


void
ngx_http_aiserve_json_init(ngx_http_aiserve_json_t *j, ngx_pool_t *pool,
    size_t size)
{
    j->pool = pool;
    j->failed = 0;
    j->start = ngx_pnalloc(pool, size);

    if (j->start == NULL) {
        j->failed = 1;
        j->pos = NULL;
        j->end = NULL;
        return;
    }

    j->pos = j->start;
    j->end = j->start + size;
}


static ngx_int_t
ngx_http_aiserve_json_reserve(ngx_http_aiserve_json_t *j, size_t n)
{
    size_t   size, used;
    u_char  *p;

    if (j->failed) {
        return NGX_ERROR;
    }

    if ((size_t) (j->end - j->pos) >= n) {
        return NGX_OK;
    }

    used = j->pos - j->start;
    size = (j->end - j->start) * 2;

    while (size - used < n) {
        size *= 2;
    }

    p = ngx_pnalloc(j->pool, size);
    if (p == NULL) {
        j->failed = 1;
        return NGX_ERROR;
    }

    ngx_memcpy(p, j->start, used);
    ngx_pfree(j->pool, j->start);

    j->start = p;
    j->pos = p + used;
    j->end = p + size;

    return NGX_OK;
}


void
ngx_http_aiserve_json_raw(ngx_http_aiserve_json_t *j, const char *s,
    size_t len)
{
    if (ngx_http_aiserve_json_reserve(j, len) != NGX_OK) {
        return;
    }

    j->pos = ngx_cpymem(j->pos, s, len);
}


void
ngx_http_aiserve_json_string(ngx_http_aiserve_json_t *j, const char *s,
    size_t len)
{
    u_char        c, *p;
    size_t        i;
    static u_char  hex[] = "0123456789abcdef";

    /* worst case: every byte becomes \u00XX */

    if (ngx_http_aiserve_json_reserve(j, len * 6 + 2) != NGX_OK) {
        return;
    }

    p = j->pos;
    *p++ = '"';

    for (i = 0; i < len; i++) {
        c = (u_char) s[i];

        switch (c) {

        case '"':
        case '\\':
            *p++ = '\\';
            *p++ = c;
            break;

        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            break;

        case '\r':
            *p++ = '\\';
            *p++ = 'r';
            break;

        case '\t':
            *p++ = '\\';
            *p++ = 't';
            break;

        default:
            if (c < 0x20 || c == 0x7f) {
                p = ngx_cpymem(p, "\\u00", 4);
                *p++ = hex[c >> 4];
                *p++ = hex[c & 0xf];

            } else {
                *p++ = c;
            }
        }
    }

    *p++ = '"';
    j->pos = p;
}


void
ngx_http_aiserve_json_float(ngx_http_aiserve_json_t *j, double v)
{
    int  n;

    if (!isfinite(v)) {
        ngx_http_aiserve_json_lit(j, "null");
        return;
    }

    if (ngx_http_aiserve_json_reserve(j, 32) != NGX_OK) {
        return;
    }

    n = snprintf((char *) j->pos, 32, "%.9g", v);
    if (n > 0 && n < 32) {
        j->pos += n;
    }
}


void
ngx_http_aiserve_json_int(ngx_http_aiserve_json_t *j, int64_t v)
{
    if (ngx_http_aiserve_json_reserve(j, NGX_INT64_LEN) != NGX_OK) {
        return;
    }

    j->pos = ngx_sprintf(j->pos, "%L", v);
}


/*
 * OpenAI's encoding_format "base64": the float32 values, little-endian,
 * base64 (RFC 4648) in a JSON string.
 */

void
ngx_http_aiserve_json_base64_floats(ngx_http_aiserve_json_t *j,
    const float *v, size_t n)
{
    ngx_str_t  src, dst;

    src.len = n * sizeof(float);
    src.data = (u_char *) v;

    if (ngx_http_aiserve_json_reserve(j, ngx_base64_encoded_length(src.len)
                                         + 2)
        != NGX_OK)
    {
        return;
    }

    *j->pos++ = '"';
    dst.data = j->pos;
    ngx_encode_base64(&dst, &src);
    j->pos += dst.len;
    *j->pos++ = '"';
}
