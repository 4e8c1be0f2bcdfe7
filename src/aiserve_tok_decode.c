/*
 * Token ids back to text, as Hugging Face tokenizers' Tokenizer.decode():
 * ids -> tokens (special tokens skipped on request), then the decoder of
 * tokenizer.json.  Follows tokenizers/src/tokenizer/mod.rs (decode); the
 * WordPiece decoder itself is aiserve_wordpiece_decode()
 * (src/aiserve_pipeline.c, tokenizers/src/decoders/wordpiece.rs).
 */

#include <stdlib.h>
#include <string.h>

#include "aiserve_tok_internal.h"
#include "aiserve_pipeline.h"


int
aiserve_tok_mark_special(aiserve_tok_t *tok, int32_t id)
{
    size_t    i;
    int32_t  *p;

    for (i = 0; i < tok->n_special_ids; i++) {
        if (tok->special_ids[i] == id) {
            return 0;
        }
    }

    p = realloc(tok->special_ids, (tok->n_special_ids + 1) * sizeof(*p));
    if (p == NULL) {
        return -1;
    }

    tok->special_ids = p;
    p[tok->n_special_ids++] = id;

    return 0;
}


void
aiserve_tok_load_decoder(aiserve_tok_t *tok, json_t *decoder)
{
    json_t      *v;
    const char  *type, *prefix;

    if (decoder == NULL || json_is_null(decoder)) {
        tok->dec_type = AISERVE_TOK_DEC_NONE;
        return;
    }

    type = json_string_value(json_object_get(decoder, "type"));
    prefix = json_string_value(json_object_get(decoder, "prefix"));
    v = json_object_get(decoder, "cleanup");

    /* BERT's: the one aiserve_wordpiece_decode() implements */
    tok->dec_type = (type != NULL && strcmp(type, "WordPiece") == 0
                     && (prefix == NULL || strcmp(prefix, "##") == 0)
                     && (v == NULL || json_is_true(v)))
                    ? AISERVE_TOK_DEC_WORDPIECE : AISERVE_TOK_DEC_OTHER;
}


static int
aiserve_tok_is_special(const aiserve_tok_t *tok, int32_t id)
{
    size_t  i;

    for (i = 0; i < tok->n_special_ids; i++) {
        if (tok->special_ids[i] == id) {
            return 1;
        }
    }

    return 0;
}


int
aiserve_tok_decode(const aiserve_tok_t *tok, const int32_t *ids, size_t n,
    int skip_special_tokens, char **out, size_t *out_len, char *err,
    size_t err_len)
{
    char         *buf, *p;
    size_t        i, m, cap, *lens;
    const char  **tokens;

    *out = NULL;
    *out_len = 0;

    if (tok->dec_type == AISERVE_TOK_DEC_OTHER) {
        aiserve_err(err, err_len, "the tokenizer's decoder is not "
                    "supported (aiserve implements WordPiece with prefix "
                    "\"##\" and cleanup)");
        return -1;
    }

    tokens = malloc((n + 1) * (sizeof(*tokens) + sizeof(*lens)));
    if (tokens == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }

    lens = (size_t *) (tokens + n + 1);
    cap = 1;
    m = 0;

    for (i = 0; i < n; i++) {
        tokens[m] = aiserve_tok_id_to_token(tok, ids[i]);

        if (tokens[m] == NULL
            || (skip_special_tokens && aiserve_tok_is_special(tok, ids[i])))
        {
            continue;
        }

        lens[m] = strlen(tokens[m]);
        cap += lens[m] + 1;
        m++;
    }

    buf = malloc(cap);
    if (buf == NULL) {
        free(tokens);
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }

    if (tok->dec_type == AISERVE_TOK_DEC_WORDPIECE) {
        *out_len = aiserve_wordpiece_decode(tokens, lens, m, buf);

    } else {
        /* no decoder: the tokens joined with spaces */
        p = buf;

        for (i = 0; i < m; i++) {
            if (i) {
                *p++ = ' ';
            }

            memcpy(p, tokens[i], lens[i]);
            p += lens[i];
        }

        *out_len = p - buf;
    }

    free(tokens);

    buf[*out_len] = '\0';
    *out = buf;

    return 0;
}
