/*
 * ngx_http_aiserve_meter_module: the flush of the shared zone's settled
 * usage into the LMDB ledger.
 *
 * Flush protocol (exactly-once into LMDB, see flush()): with LMDB's writer
 * lock held, a worker moves each row's "pending" counters to "inflight"
 * under the zone mutex and stamps the zone with inflight_seq = S + 1,
 * where S is the ledger's committed flush_seq read in the same write
 * transaction; it adds the inflight counters to the ledger and commits
 * them together with flush_seq = S + 1 (synced).  Then it clears inflight.
 * A worker killed anywhere in between leaves inflight set: the next flusher
 * (holding the writer lock, so nobody else is mid-flush) compares
 * inflight_seq with the committed flush_seq and either drops inflight
 * (committed) or flushes it again (not committed).  Nothing settled is lost
 * or counted twice while the zone lives; the zone dies only when every
 * nginx process does, which loses at most one flush interval.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_aiserve_meter.h"


static ngx_uint_t
ngx_http_aiserve_meter_usage_zero(const aiserve_usage_t *u)
{
    return u->requests == 0 && u->errors == 0 && u->bytes_in == 0
           && u->bytes_out == 0 && u->compute_usec == 0
           && u->refused_401 == 0 && u->refused_403 == 0
           && u->refused_429 == 0;
}


/* --- flush ---------------------------------------------------------------- */

typedef struct {
    aiserve_row_key_t  rk;
    aiserve_usage_t    u;
} ngx_http_aiserve_meter_flush_row_t;


/* Releases reservations of processes that died (SIGKILL, crash). */
static void
ngx_http_aiserve_meter_reap(ngx_cycle_t *cycle,
    ngx_http_aiserve_meter_zone_t *z)
{
    ngx_uint_t                      i;
    ngx_queue_t                    *q, *next;
    ngx_http_aiserve_meter_key_t   *st;
    ngx_http_aiserve_meter_resv_t  *resv;

    for (q = ngx_queue_head(&z->sh->resv);
         q != ngx_queue_sentinel(&z->sh->resv);
         q = next)
    {
        next = ngx_queue_next(q);
        resv = ngx_queue_data(q, ngx_http_aiserve_meter_resv_t, queue);

        if (resv->pid == ngx_pid
            || kill(resv->pid, 0) == 0 || ngx_errno != NGX_ESRCH)
        {
            continue;
        }

        for (i = 0; i < 2; i++) {
            st = ngx_http_aiserve_meter_key_lookup(z, i == 0 ? resv->key_id
                                                         : resv->account_node);
            if (st == NULL || (i == 1 && resv->account_node == 0)) {
                continue;
            }
            st->reserved -= ngx_min(st->reserved, resv->tokens);
            if (st->active) {
                st->active--;
            }
        }

        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "aiserve meter: released a reservation of key_%uD "
                      "held by dead process %P", resv->key_id, resv->pid);

        ngx_queue_remove(q);
        ngx_slab_free_locked(z->shpool, resv);
    }
}


/*
 * Flushes the zone's settled usage to the ledger (see the protocol at the
 * top of this file).  exiting: the worker is going away; flush whatever
 * the interval, and grow the map past max_map_size if it must: the cap
 * exists to refuse new work, not to drop settled usage when the last
 * process holding the zone exits.
 */
void
ngx_http_aiserve_meter_flush(ngx_cycle_t *cycle, ngx_uint_t exiting)
{
    int                                  rc;
    uint32_t                             today;
    uint64_t                             seq;
    ngx_uint_t                           n, i, grown;
    ngx_queue_t                         *q, *next;
    ngx_http_aiserve_meter_row_t        *row;
    ngx_http_aiserve_meter_zone_t       *z;
    ngx_http_aiserve_meter_flush_row_t  *rows;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_aiserve_meter_module);
    if (mcf == NULL || mcf->shm_zone == NULL
        || ngx_http_aiserve_meter_ledger == NULL)
    {
        return;
    }

    z = mcf->shm_zone->data;

    ngx_shmtx_lock(&z->shpool->mutex);

    if (!exiting
        && (ngx_msec_int_t) (ngx_current_msec - z->sh->next_flush) < 0)
    {
        ngx_shmtx_unlock(&z->shpool->mutex);
        return;
    }

    z->sh->next_flush = ngx_current_msec + mcf->flush;

    ngx_http_aiserve_meter_reap(cycle, z);

    ngx_shmtx_unlock(&z->shpool->mutex);

    aiserve_ledger_reader_check(ngx_http_aiserve_meter_ledger);

    grown = 0;

again:

    rc = aiserve_ledger_wbegin(ngx_http_aiserve_meter_ledger, &seq);
    if (rc != AISERVE_LEDGER_OK) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0, "aiserve meter: %s",
                      aiserve_ledger_error(ngx_http_aiserve_meter_ledger));
        ngx_http_aiserve_metrics_ledger_flush(cycle, 0);
        return;
    }

    /* the writer lock is ours: nobody else is between snapshot and commit */

    ngx_shmtx_lock(&z->shpool->mutex);

    if (z->sh->inflight_seq && z->sh->inflight_seq <= seq) {
        /* a flusher committed and died (or is late) before clearing */
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "aiserve meter: flush %uL was committed but not "
                      "cleared (its worker was killed or is late): "
                      "dropping its copy", z->sh->inflight_seq);

        for (q = ngx_queue_head(&z->sh->rows_queue);
             q != ngx_queue_sentinel(&z->sh->rows_queue);
             q = ngx_queue_next(q))
        {
            row = ngx_queue_data(q, ngx_http_aiserve_meter_row_t, queue);
            ngx_memzero(&row->inflight, sizeof(aiserve_usage_t));
        }

        z->sh->committed_seq = z->sh->inflight_seq;
        z->sh->inflight_seq = 0;

    } else if (z->sh->inflight_seq) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "aiserve meter: flush %uL did not commit (its worker "
                      "was killed, or the ledger refused it): writing it "
                      "again", z->sh->inflight_seq);
    }

    n = 0;

    for (q = ngx_queue_head(&z->sh->rows_queue);
         q != ngx_queue_sentinel(&z->sh->rows_queue);
         q = ngx_queue_next(q))
    {
        n++;
    }

    rows = n ? ngx_alloc(n * sizeof(ngx_http_aiserve_meter_flush_row_t),
                         cycle->log)
             : NULL;

    if (n && rows == NULL) {
        ngx_shmtx_unlock(&z->shpool->mutex);
        aiserve_ledger_wabort(ngx_http_aiserve_meter_ledger);
        return;
    }

    i = 0;

    for (q = ngx_queue_head(&z->sh->rows_queue);
         q != ngx_queue_sentinel(&z->sh->rows_queue);
         q = ngx_queue_next(q))
    {
        row = ngx_queue_data(q, ngx_http_aiserve_meter_row_t, queue);

        ngx_http_aiserve_meter_usage_add(&row->inflight, &row->pending);
        ngx_memzero(&row->pending, sizeof(aiserve_usage_t));

        if (!ngx_http_aiserve_meter_usage_zero(&row->inflight)) {
            rows[i].rk = row->rk;
            rows[i].u = row->inflight;
            i++;
        }
    }

    n = i;

    if (n) {
        z->sh->inflight_seq = seq + 1;
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    if (n == 0) {
        aiserve_ledger_wabort(ngx_http_aiserve_meter_ledger);
        ngx_free(rows);
        return;
    }

    rc = AISERVE_LEDGER_OK;

    for (i = 0; i < n && rc == AISERVE_LEDGER_OK; i++) {
        rc = aiserve_ledger_wadd(ngx_http_aiserve_meter_ledger, &rows[i].rk,
                                 &rows[i].u);
    }

    ngx_free(rows);

    if (rc == AISERVE_LEDGER_OK) {
        rc = aiserve_ledger_wcommit(ngx_http_aiserve_meter_ledger, seq + 1);
    }

    if (rc == AISERVE_LEDGER_FULL && grown < 8) {
        /* the transaction is aborted, inflight stays for the next try */
        grown++;

        if (aiserve_ledger_grow(ngx_http_aiserve_meter_ledger,
                                exiting ? 0 : mcf->max_map_size)
            == AISERVE_LEDGER_OK)
        {
            size_t  map, used;

            aiserve_ledger_map_info(ngx_http_aiserve_meter_ledger, &map,
                                    &used);
            ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                          "aiserve meter: ledger map grown to %uz bytes",
                          map);
            goto again;
        }
    }

    ngx_http_aiserve_metrics_ledger_flush(cycle, rc == AISERVE_LEDGER_OK);

    if (rc != AISERVE_LEDGER_OK) {
        ngx_log_error((rc == AISERVE_LEDGER_FULL ? NGX_LOG_CRIT
                                                 : NGX_LOG_ERR),
                      cycle->log, 0, "aiserve meter: flush failed, usage "
                      "kept in the zone: %s",
                      aiserve_ledger_error(ngx_http_aiserve_meter_ledger));

        if (rc == AISERVE_LEDGER_FULL) {
            ngx_shmtx_lock(&z->shpool->mutex);
            z->sh->full = 1;
            ngx_shmtx_unlock(&z->shpool->mutex);
        }

        return;
    }

    today = ngx_http_aiserve_meter_today();

    ngx_shmtx_lock(&z->shpool->mutex);

    z->sh->full = 0;

    if (z->sh->inflight_seq == seq + 1) {
        z->sh->committed_seq = seq + 1;
        z->sh->inflight_seq = 0;

        for (q = ngx_queue_head(&z->sh->rows_queue);
             q != ngx_queue_sentinel(&z->sh->rows_queue);
             q = next)
        {
            next = ngx_queue_next(q);
            row = ngx_queue_data(q, ngx_http_aiserve_meter_row_t, queue);

            ngx_memzero(&row->inflight, sizeof(aiserve_usage_t));

            if (row->rk.day != today
                && ngx_http_aiserve_meter_usage_zero(&row->pending))
            {
                ngx_queue_remove(q);
                ngx_rbtree_delete(&z->sh->rows, &row->node);
                ngx_slab_free_locked(z->shpool, row);
            }
        }
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, cycle->log, 0,
                   "aiserve meter: flushed %ui rows, seq %uL", n, seq + 1);
}


/*
 * Training charges are written into the ledger by the fine-tuning jobs,
 * not through the zone: when the ledger's training_gen moved, every
 * budget state of the zone is marked to be read again (its used tokens
 * then include what jobs trained and hold reserved).
 */
static void
ngx_http_aiserve_meter_training_check(ngx_cycle_t *cycle)
{
    uint64_t                             held, gen;
    ngx_rbtree_node_t                   *node, *root, *sentinel;
    ngx_http_aiserve_meter_key_t        *st;
    ngx_http_aiserve_meter_zone_t       *z;
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_aiserve_meter_module);

    if (ngx_http_aiserve_meter_ledger == NULL || mcf->shm_zone == NULL
        || aiserve_ledger_training_held(ngx_http_aiserve_meter_ledger, 0, 0,
                                        &held, &gen)
           != AISERVE_LEDGER_OK)
    {
        return;
    }

    z = mcf->shm_zone->data;

    ngx_shmtx_lock(&z->shpool->mutex);

    if (z->sh->training_gen != gen) {
        z->sh->training_gen = gen;

        root = z->sh->keys.root;
        sentinel = z->sh->keys.sentinel;

        if (root != sentinel) {
            for (node = ngx_rbtree_min(root, sentinel);
                 node;
                 node = ngx_rbtree_next(&z->sh->keys, node))
            {
                st = (ngx_http_aiserve_meter_key_t *) node;
                st->budget_period = 0;
            }
        }
    }

    ngx_shmtx_unlock(&z->shpool->mutex);
}


void
ngx_http_aiserve_meter_flush_timer(ngx_event_t *ev)
{
    ngx_http_aiserve_meter_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_aiserve_meter_module);

    if (ngx_http_aiserve_meter_ledger == NULL
        && ngx_http_aiserve_meter_open_ledger((ngx_cycle_t *) ngx_cycle, 0)
           == NGX_OK)
    {
        ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                      "aiserve meter: ledger \"%V\" opened", &mcf->db_path);
    }

    ngx_http_aiserve_meter_flush((ngx_cycle_t *) ngx_cycle, 0);
    ngx_http_aiserve_meter_training_check((ngx_cycle_t *) ngx_cycle);

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_add_timer(ev, mcf->flush);
}
