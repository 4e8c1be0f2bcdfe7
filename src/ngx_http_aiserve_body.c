/*
 * The request body before the request side reads it: the buffers nginx
 * read it into (memory, or the client body temporary file) joined into
 * one, parsed by jansson, and parsed again with invalid UTF-8 repaired
 * when jansson refused it for that.  The code allocates through the
 * allocator it is given and reads the temporary file through the reader it
 * is given (the module: the request's pool and ngx_read_file()); it calls
 * no function of nginx, so the module (ngx_http_aiserve_module.c) and the
 * libFuzzer target t/fuzz/fuzz_body.c run the same code.  UTF-8 is
 * utf8proc's (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF).
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <utf8proc.h>

#include "ngx_http_aiserve_infer.h"


size_t
ngx_http_aiserve_utf8_seq(const u_char *p, size_t n)
{
    utf8proc_int32_t  cp;
    utf8proc_ssize_t  k;

    if (*p < 0x80) {
        return 1;
    }

    k = utf8proc_iterate(p, n < 4 ? (utf8proc_ssize_t) n : 4, &cp);

    return k > 0 ? (size_t) k : 0;
}


size_t
ngx_http_aiserve_utf8_repair(u_char *out, const u_char *in, size_t len)
{
    size_t   i, n;
    u_char  *p;

    p = out;

    for (i = 0; i < len; i += n) {
        n = ngx_http_aiserve_utf8_seq(in + i, len - i);

        if (n == 0) {
            p = ngx_cpymem(p, NGX_HTTP_AISERVE_UTF8_MARK, 4);
            n = 1;
            continue;
        }

        p = ngx_cpymem(p, in + i, n);
    }

    return p - out;
}


ngx_int_t
ngx_http_aiserve_body_join(ngx_chain_t *bufs, ngx_http_aiserve_alloc_pt alloc,
    void *alloc_data, ngx_http_aiserve_read_file_pt read_file, ngx_str_t *body)
{
    off_t         len;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = (u_char *) "";

    if (bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? b->file_last - b->file_pos : b->last - b->pos;
    }

    if (bufs->next == NULL && !bufs->buf->in_file) {
        body->data = bufs->buf->pos;
        body->len = len;
        return NGX_OK;
    }

    p = alloc(alloc_data, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = len;

    for (cl = bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        n = read_file(b->file, p, b->file_last - b->file_pos, b->file_pos);
        if (n != b->file_last - b->file_pos) {
            return NGX_DECLINED;
        }

        p += n;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_aiserve_body_parse(const u_char *body, size_t len,
    ngx_http_aiserve_alloc_pt alloc, void *alloc_data, json_t **doc,
    ngx_uint_t *repaired, json_error_t *err)
{
    u_char  *copy;
    size_t   n;

    *repaired = 0;
    *doc = json_loadb((const char *) body, len, JSON_ALLOW_NUL, err);

    if (*doc != NULL || json_error_code(err) != json_error_invalid_utf8) {
        return NGX_OK;
    }

    /* each byte becomes at most the 4 of the marker */

    copy = alloc(alloc_data, len * 4);
    if (copy == NULL) {
        return NGX_ERROR;
    }

    n = ngx_http_aiserve_utf8_repair(copy, body, len);

    *repaired = 1;
    *doc = json_loadb((const char *) copy, n, JSON_ALLOW_NUL, err);

    return NGX_OK;
}
