/*
 * The allocator of the libFuzzer targets that drive the module's
 * nginx-free code (an ngx_http_aiserve_alloc_pt): one malloc() a block,
 * so ASan sees each block's bounds, all freed by fuzz_free_all() after the
 * input.  fuzz_alloc_fail makes every allocation fail (NULL), as an
 * exhausted pool does.
 */
#ifndef FUZZ_ALLOC_H
#define FUZZ_ALLOC_H

#include <stddef.h>
#include <stdlib.h>

typedef struct fuzz_block_s  fuzz_block_t;

struct fuzz_block_s {
    fuzz_block_t  *next;
    max_align_t    data[];
};

static fuzz_block_t  *fuzz_blocks;
static int            fuzz_alloc_fail;


static void *
fuzz_alloc(void *data, size_t size)
{
    fuzz_block_t  *b;

    (void) data;

    if (fuzz_alloc_fail) {
        return NULL;
    }

    b = malloc(sizeof(fuzz_block_t) + size);
    if (b == NULL) {
        return NULL;
    }
    b->next = fuzz_blocks;
    fuzz_blocks = b;
    return b->data;
}


static void
fuzz_free_all(void)
{
    fuzz_block_t  *b;

    while (fuzz_blocks) {
        b = fuzz_blocks;
        fuzz_blocks = b->next;
        free(b);
    }
}

#endif /* FUZZ_ALLOC_H */
