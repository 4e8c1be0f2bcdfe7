/*
 * What ngx_http_aiserve_files_module gives the other modules of the .so:
 * the fine-tuning module reads the training files of its jobs through the
 * worker's handle of the files store, stores their results there and
 * records the storage in the ledger.
 */
#ifndef NGX_HTTP_AISERVE_FILES_H
#define NGX_HTTP_AISERVE_FILES_H

#include <ngx_config.h>
#include <ngx_core.h>

#include "aiserve_files.h"

typedef struct {
    ngx_str_t                    dir;         /* NULL data: no store */
    ngx_str_t                    tokenizer;
    size_t                       map_size;
    off_t                        quota;       /* bytes per account, 0: off */
    aiserve_tok_t               *tok;         /* read only once loaded */
} ngx_http_aiserve_files_main_conf_t;


/* The worker's handle of the files store (opened in init_process), NULL
 * when there is no aiserve_files_store or it could not be opened; its
 * functions may be called from the thread pool's threads. */
extern aiserve_files_t  *ngx_http_aiserve_files_store_handle;

extern ngx_module_t  ngx_http_aiserve_files_module;


/*
 * Records in the ledger the bytes account_id now stores (its files, a
 * fine-tuning job's results included), on the storage row of key_id
 * (aiserve_ledger_storage(): a synced write, so on the event loop only).
 * Nothing without a ledger or a store; a failure is logged.
 */
void ngx_http_aiserve_files_storage_of(uint32_t account_id, uint32_t key_id,
    ngx_log_t *log);

#endif /* NGX_HTTP_AISERVE_FILES_H */
