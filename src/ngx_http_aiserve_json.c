/*
 * A small JSON writer for aiserve responses: a buffer in the request pool
 * that grows by doubling.  Strings are escaped per RFC 8259 section 7
 * (quote, backslash and control characters); valid UTF-8 passes through,
 * invalid bytes, which only an error message quoting the body can hold,
 * become U+FFFD.  Floats are written as %.9g would, which
 * round-trips every float32; non-finite values, which JSON cannot carry,
 * are written as null.  The senders of JSON answers and errors use it.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <math.h>

#include "ngx_http_aiserve_infer.h"


static ngx_int_t ngx_http_aiserve_json_reserve(ngx_http_aiserve_json_t *j,
    size_t n);
static double ngx_http_aiserve_pow10(int k);


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
    u_char         c, *p;
    size_t         i, n;
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

            } else if (c < 0x80) {
                *p++ = c;

            } else {
                /* invalid UTF-8 (in a message quoting the body) -> U+FFFD */
                n = ngx_http_aiserve_utf8_seq((u_char *) s + i, len - i);

                if (n == 0) {
                    p = ngx_cpymem(p, "\\ufffd", 6);

                } else {
                    p = ngx_cpymem(p, s + i, n);
                    i += n - 1;
                }
            }
        }
    }

    *p++ = '"';
    j->pos = p;
}


/*
 * Writes v as printf("%.9g") does (9 significant digits, enough to
 * round-trip a float32; trailing zeros dropped; exponent form below 1e-4
 * and from 1e9), several times faster than snprintf: the 9 digits come
 * from one multiplication by a power of ten and an integer rounding, which
 * can differ from printf's exact decimal conversion only when the value is
 * within 1e-7 of a rounding tie in the 9th digit.
 */

void
ngx_http_aiserve_json_float(ngx_http_aiserve_json_t *j, double v)
{
    int        e, i, n;
    u_char    *p, digits[9];
    uint64_t   m;

    if (!isfinite(v)) {
        ngx_http_aiserve_json_lit(j, "null");
        return;
    }

    if (ngx_http_aiserve_json_reserve(j, 32) != NGX_OK) {
        return;
    }

    p = j->pos;

    if (signbit(v)) {
        *p++ = '-';
        v = -v;
    }

    if (v == 0) {
        *p++ = '0';
        j->pos = p;
        return;
    }

    e = (int) floor(log10(v));
    m = (uint64_t) llrint(v * ngx_http_aiserve_pow10(8 - e));

    /* log10() or the rounding may be one decade off */

    if (m >= 1000000000) {
        e++;
        m = (uint64_t) llrint(v * ngx_http_aiserve_pow10(8 - e));

    } else if (m < 100000000) {
        e--;
        m = (uint64_t) llrint(v * ngx_http_aiserve_pow10(8 - e));
    }

    if (m >= 1000000000) {
        /* 9.999999995 -> 10.0000000 */
        m /= 10;
        e++;
    }

    for (i = 8; i >= 0; i--) {
        digits[i] = (u_char) ('0' + m % 10);
        m /= 10;
    }

    /* significant digits without trailing zeros */
    for (n = 9; n > 1 && digits[n - 1] == '0'; n--) {
        /* void */
    }

    if (e < -4 || e >= 9) {
        *p++ = digits[0];

        if (n > 1) {
            *p++ = '.';
            p = ngx_cpymem(p, digits + 1, n - 1);
        }

        p = ngx_sprintf(p, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);

    } else if (e < 0) {
        *p++ = '0';
        *p++ = '.';

        for (i = -1; i > e; i--) {
            *p++ = '0';
        }

        p = ngx_cpymem(p, digits, n);

    } else {
        p = ngx_cpymem(p, digits, e + 1);

        if (n > e + 1) {
            *p++ = '.';
            p = ngx_cpymem(p, digits + e + 1, n - e - 1);
        }
    }

    j->pos = p;
}


/* 10^k for the exponents a float32 needs, -50 .. 50 */

static double
ngx_http_aiserve_pow10(int k)
{
    static double  table[101];
    static int     ready;
    int            i;

    if (!ready) {
        for (i = 0; i <= 100; i++) {
            table[i] = pow(10, i - 50);
        }

        ready = 1;
    }

    if (k < -50 || k > 50) {
        return pow(10, k);
    }

    return table[50 + k];
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
ngx_http_aiserve_json_floats(ngx_http_aiserve_json_t *j, const float *v,
    size_t n)
{
    size_t  i;

    ngx_http_aiserve_json_lit(j, "[");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_http_aiserve_json_lit(j, ",");
        }

        ngx_http_aiserve_json_float(j, v[i]);
    }

    ngx_http_aiserve_json_lit(j, "]");
}


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


ngx_int_t
ngx_http_aiserve_send_json(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_aiserve_json_t *j, const char *content_type)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (j->failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = status;

    /* nginx 1.22 has no reason phrase for 422 ("HTTP/1.1 422 ") */

    switch (status) {

    case NGX_HTTP_AISERVE_UNPROCESSABLE:
        ngx_str_set(&r->headers_out.status_line, "422 Unprocessable Entity");
        break;

    case NGX_HTTP_TOO_MANY_REQUESTS:
        ngx_str_set(&r->headers_out.status_line, "429 Too Many Requests");
        break;
    }

    r->headers_out.content_length_n = j->pos - j->start;

    if (content_type) {
        r->headers_out.content_type.data = (u_char *) content_type;
        r->headers_out.content_type.len = ngx_strlen(content_type);

    } else {
        ngx_str_set(&r->headers_out.content_type, "application/json");
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = j->start;
    b->last = j->pos;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_aiserve_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *code, const char *param,
    const char *fmt, ...)
{
    u_char                   msg[NGX_MAX_ERROR_STR], *last;
    va_list                  args;
    ngx_http_aiserve_json_t  j;

    va_start(args, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "aiserve error %ui: %*s", status, last - msg, msg);

    ngx_http_aiserve_json_init(&j, r->pool, 256 + 2 * (last - msg));
    ngx_http_aiserve_json_lit(&j, "{\"error\":{\"message\":");
    ngx_http_aiserve_json_string(&j, (char *) msg, last - msg);
    ngx_http_aiserve_json_lit(&j, ",\"type\":");
    ngx_http_aiserve_json_string(&j, type, ngx_strlen(type));
    ngx_http_aiserve_json_lit(&j, ",\"param\":");

    if (param) {
        ngx_http_aiserve_json_string(&j, param, ngx_strlen(param));
    } else {
        ngx_http_aiserve_json_lit(&j, "null");
    }

    ngx_http_aiserve_json_lit(&j, ",\"code\":");

    if (code) {
        ngx_http_aiserve_json_string(&j, code, ngx_strlen(code));
    } else {
        ngx_http_aiserve_json_lit(&j, "null");
    }

    ngx_http_aiserve_json_lit(&j, "}}\n");

    return ngx_http_aiserve_send_json(r, status, &j, NULL);
}


ngx_int_t
ngx_http_aiserve_retry_after(ngx_http_request_t *r, ngx_uint_t seconds)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    h->value.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    h->value.len = ngx_sprintf(h->value.data, "%ui", seconds)
                   - h->value.data;

    return NGX_OK;
}


ngx_int_t
ngx_http_aiserve_not_allowed(ngx_http_request_t *r, const char *allow,
    const char *use)
{
    ngx_int_t         rc;
    ngx_table_elt_t  *h;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Allow");
    h->value.data = (u_char *) allow;
    h->value.len = ngx_strlen(allow);

    return ngx_http_aiserve_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                       "invalid_request_error",
                                       "method_not_allowed", NULL,
                                       "method %V is not allowed, use %s",
                                       &r->method_name, use);
}


void
ngx_http_aiserve_json_page_headers(ngx_http_request_t *r, ngx_str_t *page)
{
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = page->len;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }
}


ngx_int_t
ngx_http_aiserve_json_page_body(ngx_http_request_t *r, ngx_chain_t *in,
    ngx_str_t *page, ngx_uint_t *sent, ngx_chain_t **out)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    *out = NULL;

    if (*sent) {
        return NGX_OK;
    }

    *sent = 1;

    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);
    if (b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    b->pos = page->data;
    b->last = page->data + page->len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    cl->buf = b;
    cl->next = NULL;
    *out = cl;

    return NGX_OK;
}
