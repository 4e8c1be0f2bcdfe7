/*
 * Prometheus metrics of aiserve, counted in one shared memory zone
 * ("aiserve_metrics") by every worker with atomic additions, so that one
 * scrape of any worker sees the sums of all; the zone is reused across
 * reloads, so counters stay monotonic.  Includes nginx's headers only: the
 * meter and the inference handler both report here.
 */
#ifndef NGX_HTTP_AISERVE_METRICS_H
#define NGX_HTTP_AISERVE_METRICS_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/*
 * A flush of the usage ledger ended (ok: committed, else failed); called
 * by the meter in the worker that flushed.  A no-op without the zone.
 */
void ngx_http_aiserve_metrics_ledger_flush(ngx_cycle_t *cycle,
    ngx_uint_t ok);

/*
 * A metered request was settled for API key key_id: one request, and
 * prompt_tokens charged (0 for a failed request, which is counted in
 * errors).  The first NGX_HTTP_AISERVE_METRICS_KEYS keys seen get their
 * own series; later ones are summed under key="other", so a scrape stays
 * bounded whatever the number of keys.
 */
void ngx_http_aiserve_metrics_key(ngx_http_request_t *r, uint32_t key_id,
    uint64_t prompt_tokens, ngx_uint_t failed);

#define NGX_HTTP_AISERVE_METRICS_KEYS  256

#endif /* NGX_HTTP_AISERVE_METRICS_H */
