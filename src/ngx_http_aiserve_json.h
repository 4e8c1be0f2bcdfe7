/*
 * The lowest layer of the aiserve module: a JSON response writer and the
 * senders of JSON answers, errors included.  Every other file of the
 * module (inference handler, API shapes, batching, meter, operator routes)
 * includes this header; it includes nginx's headers only.
 */
#ifndef NGX_HTTP_AISERVE_JSON_H
#define NGX_HTTP_AISERVE_JSON_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* validation errors; nginx has no NGX_HTTP_ constant for it */
#define NGX_HTTP_AISERVE_UNPROCESSABLE  422


/* Growable response buffer in a request pool. */
typedef struct {
    ngx_pool_t                      *pool;
    u_char                          *start;
    u_char                          *pos;
    u_char                          *end;
    ngx_uint_t                       failed;
} ngx_http_aiserve_json_t;


/*
 * The writer: init with a first size in bytes (it doubles as needed); a
 * failed allocation sets j->failed and makes every later call a no-op.
 * Strings are escaped per RFC 8259 section 7, floats round-trip float32
 * (non-finite: null), base64 floats are little-endian float32.
 */
void ngx_http_aiserve_json_init(ngx_http_aiserve_json_t *j, ngx_pool_t *pool,
    size_t size);
void ngx_http_aiserve_json_raw(ngx_http_aiserve_json_t *j, const char *s,
    size_t len);
/* s must be a string literal */
#define ngx_http_aiserve_json_lit(j, s)                                      \
    ngx_http_aiserve_json_raw(j, "" s, sizeof(s) - 1)
void ngx_http_aiserve_json_string(ngx_http_aiserve_json_t *j, const char *s,
    size_t len);
void ngx_http_aiserve_json_float(ngx_http_aiserve_json_t *j, double v);
void ngx_http_aiserve_json_int(ngx_http_aiserve_json_t *j, int64_t v);
/* [v[0],v[1],...] */
void ngx_http_aiserve_json_floats(ngx_http_aiserve_json_t *j, const float *v,
    size_t n);
void ngx_http_aiserve_json_base64_floats(ngx_http_aiserve_json_t *j,
    const float *v, size_t n);

/*
 * Sends the body written into j (Content-Type application/json, or
 * content_type when not NULL) with the given status.  Returns what
 * ngx_http_send_header() / ngx_http_output_filter() return, or
 * NGX_HTTP_INTERNAL_SERVER_ERROR when j failed; the caller finalizes the
 * request with it.
 */
/*
 * nginx's own error page (413, 400, 500 ...) as JSON, from a module's
 * output filters: json_page_headers() in the header filter makes PAGE the
 * response's body (Content-Type application/json, its length);
 * json_page_body() in the body filter swallows nginx's HTML and sets *OUT
 * to PAGE once (*SENT remembers), NULL after; NGX_ERROR without memory.
 */
void ngx_http_aiserve_json_page_headers(ngx_http_request_t *r,
    ngx_str_t *page);
ngx_int_t ngx_http_aiserve_json_page_body(ngx_http_request_t *r,
    ngx_chain_t *in, ngx_str_t *page, ngx_uint_t *sent, ngx_chain_t **out);

ngx_int_t ngx_http_aiserve_send_json(ngx_http_request_t *r,
    ngx_uint_t status, ngx_http_aiserve_json_t *j, const char *content_type);

/*
 * Sends {"error": {"message", "type", "param", "code"}} with the given
 * status (shared/DESIGN.md).  param may be NULL (JSON null).  A 503 or 429
 * that tells when to retry has its Retry-After set by the caller first
 * (ngx_http_aiserve_retry_after()).  Returns as ngx_http_aiserve_send_json().
 */
ngx_int_t ngx_http_aiserve_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, const char *code,
    const char *param, const char *fmt, ...);

/*
 * A 405 for a method the location does not answer: discards the body,
 * adds "Allow: allow" and sends the JSON error "method M is not allowed,
 * use <use>".  Returns as ngx_http_aiserve_send_json().
 */
ngx_int_t ngx_http_aiserve_not_allowed(ngx_http_request_t *r,
    const char *allow, const char *use);

/* Adds "Retry-After: seconds" to the response headers; NGX_OK or NGX_ERROR */
ngx_int_t ngx_http_aiserve_retry_after(ngx_http_request_t *r,
    ngx_uint_t seconds);

#endif /* NGX_HTTP_AISERVE_JSON_H */
