/*
 * libFuzzer target for the safetensors parser: the input is a whole file
 * (8-byte header size, JSON header, data).  Accepted files must describe
 * tensors that lie inside the input; rejected ones must come with a
 * message.  Build and run: make fuzz-safetensors FUZZ_SECONDS=30
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aiserve_safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aiserve_st_file_t  *st;
    char                err[512];
    size_t              i;
    volatile uint8_t    sink = 0;

    err[0] = '\0';
    st = aiserve_st_parse(data, size, "fuzz", err, sizeof(err));
    if (st == NULL) {
        if (err[0] == '\0') {
            abort();
        }
        return 0;
    }
    for (i = 0; i < st->n_tensors; i++) {
        const aiserve_st_tensor_t  *t = &st->tensors[i];

        if (t->data < data || t->data + t->n_bytes > data + size
            || aiserve_st_find(st, t->name) != t)
        {
            abort();
        }
        if (t->n_bytes > 0) {
            sink ^= t->data[0] ^ t->data[t->n_bytes - 1];
        }
    }
    (void) sink;
    aiserve_st_close(st);
    return 0;
}
