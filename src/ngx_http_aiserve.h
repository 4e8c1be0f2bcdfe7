/*
 * Declarations shared by the two modules of the aiserve .so:
 * ngx_http_aiserve_module (ngx_http_aiserve_module.c and the files of
 * ngx_http_aiserve_infer.h: models, content handlers, batching) and
 * ngx_http_aiserve_meter_module (ngx_http_aiserve_meter*.c: API keys, usage
 * ledger, quotas, rate limits).  Both send their answers through the
 * lowest layer, ngx_http_aiserve_json.h, and count in
 * ngx_http_aiserve_metrics.h.
 */
#ifndef NGX_HTTP_AISERVE_H
#define NGX_HTTP_AISERVE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

/*
 * Meter hooks called by the content handler (no-ops returning NGX_OK when
 * aiserve_meter is off for the location).
 *
 * reserve: right after tokenization, before any compute.  model: the
 * aiserve_model NAME; prompt_tokens: exact token count of the request.
 * Returns NGX_OK (admitted), or NGX_DECLINED after it has itself sent the
 * error response (401/403/429/503); the handler then returns NGX_DONE
 * semantics as for any sent response.
 *
 * settle: once, when the response is complete (also for errors after
 * admission).  compute_usec: microseconds of encoder time charged to the
 * request; bytes_in / bytes_out: request body and response body bytes;
 * failed: 1 if the request ended in an error after admission.
 */
ngx_int_t ngx_http_aiserve_meter_reserve(ngx_http_request_t *r,
    ngx_str_t *model, ngx_uint_t prompt_tokens);
void ngx_http_aiserve_meter_settle(ngx_http_request_t *r,
    ngx_msec_int_t compute_usec, off_t bytes_in, off_t bytes_out,
    ngx_uint_t failed);

extern ngx_module_t  ngx_http_aiserve_module;
extern ngx_module_t  ngx_http_aiserve_meter_module;

#endif /* NGX_HTTP_AISERVE_H */
