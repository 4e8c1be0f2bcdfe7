/*
 * libFuzzer target for the whole model load: the input is a model
 * directory, its files one after the other, each ended by the separator
 * below, in the order of aiserve_fuzz_files[] (an empty file is left out
 * of the directory).  The target writes them to a directory of its own and
 * loads it as nginx does: aiserve_model_load() (config.json, modules.json
 * and the pooling config, aiserve_st_open() and the conversion of every
 * tensor's dtype) and aiserve_tok_load(); a model and tokenizer that load
 * then encode a fixed text and run one forward pass.  A failed load must
 * come with a message; AISERVE_FUZZ_VERBOSE=1 prints it (to see what a
 * seed or a reproducer reaches).
 *
 * Seeds: the models of models/tiny-* written in this format (make
 * fuzz-model).  Build and run: make fuzz-model FUZZ_SECONDS=300
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aiserve_model.h"
#include "aiserve_tokenizer.h"

#define AISERVE_FUZZ_SEP      "\n==aiserve-fuzz-file==\n"
#define AISERVE_FUZZ_SEP_LEN  (sizeof(AISERVE_FUZZ_SEP) - 1)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* the files of a model directory, in the order the input gives them */
static const char  *aiserve_fuzz_files[] = {
    "config.json", "model.safetensors", "tokenizer.json", "vocab.txt",
    "tokenizer_config.json", "special_tokens_map.json", "modules.json",
    "1_Pooling/config.json",
};
#define AISERVE_FUZZ_N_FILES \
    (sizeof(aiserve_fuzz_files) / sizeof(aiserve_fuzz_files[0]))

static char  aiserve_fuzz_dir[64];


static void
fuzz_write(const char *name, const uint8_t *p, size_t n)
{
    char   path[256];
    FILE  *f;

    snprintf(path, sizeof(path), "%s/%s", aiserve_fuzz_dir, name);
    unlink(path);
    if (n == 0) {
        return;
    }
    f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        abort();
    }
}


static void
fuzz_run(const aiserve_model_t *m, const aiserve_tok_t *tok)
{
    aiserve_encoding_t   enc;
    aiserve_batch_t      b;
    aiserve_scratch_t   *s;
    size_t               seq_len, n_out;
    float               *out;
    char                 err[512];
    static const char    text[] = "Hello, world! Caf\xc3\xa9 \xe5\x8c\x97";

    if (aiserve_tok_encode(tok, text, sizeof(text) - 1, NULL, 0, NULL, &enc,
                           err, sizeof(err)) != 0)
    {
        return;
    }
    seq_len = enc.n_tokens;
    b.input_ids = enc.input_ids;
    b.token_type_ids = enc.token_type_ids;
    b.seq_lens = &seq_len;
    b.n_seqs = 1;
    s = seq_len > 0 ? aiserve_scratch_create(m, seq_len, err, sizeof(err))
                    : NULL;
    if (s != NULL) {
        n_out = aiserve_model_output_len(m, &b);
        out = malloc((n_out + 1) * sizeof(float));
        if (out != NULL) {
            err[0] = '\0';
            if (aiserve_model_forward(m, &b, s, out, err, sizeof(err)) != 0
                && err[0] == '\0')
            {
                abort();
            }
            free(out);
        }
        aiserve_scratch_free(s);
    }
    aiserve_encoding_free(&enc);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aiserve_model_t  *m;
    aiserve_tok_t    *tok;
    const uint8_t    *p, *end, *sep;
    size_t            i;
    char              err[512], err_model[512], sub[128];

    if (aiserve_fuzz_dir[0] == '\0') {
        snprintf(aiserve_fuzz_dir, sizeof(aiserve_fuzz_dir),
                 "/tmp/aiserve-fuzz-model.XXXXXX");
        if (mkdtemp(aiserve_fuzz_dir) == NULL) {
            perror("mkdtemp");
            abort();
        }
        snprintf(sub, sizeof(sub), "%s/1_Pooling", aiserve_fuzz_dir);
        mkdir(sub, 0700);
    }

    p = data;
    end = data + size;
    for (i = 0; i < AISERVE_FUZZ_N_FILES; i++) {
        sep = p < end ? memmem(p, end - p, AISERVE_FUZZ_SEP,
                               AISERVE_FUZZ_SEP_LEN)
                      : NULL;
        fuzz_write(aiserve_fuzz_files[i], p, (sep ? sep : end) - p);
        p = sep ? sep + AISERVE_FUZZ_SEP_LEN : end;
    }

    err_model[0] = '\0';
    m = aiserve_model_load(aiserve_fuzz_dir, err_model, sizeof(err_model));
    if (m == NULL && err_model[0] == '\0') {
        abort();
    }
    err[0] = '\0';
    tok = aiserve_tok_load(aiserve_fuzz_dir, err, sizeof(err));
    if (tok == NULL && err[0] == '\0') {
        abort();
    }
    if (getenv("AISERVE_FUZZ_VERBOSE") != NULL) {
        fprintf(stderr, "model: %s\ntokenizer: %s\n",
                m ? "loaded" : err_model, tok ? "loaded" : err);
    }
    if (m != NULL && tok != NULL) {
        fuzz_run(m, tok);
    }
    aiserve_tok_free(tok);
    aiserve_model_free(m);
    return 0;
}
