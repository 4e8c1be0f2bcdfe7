/*
 * Token ids back to text, as Hugging Face tokenizers' Tokenizer.decode():
 * ids -> tokens (special tokens skipped on request), then the decoder of
 * tokenizer.json.  Follows tokenizers/src/tokenizer/mod.rs (decode) and
 * tokenizers/src/decoders/wordpiece.rs (WordPiece: the continuing-subword
 * prefix glues a token to the previous one, other tokens get a leading
 * space, and "cleanup" removes the spaces before punctuation and English
 * contractions, token by token).
 */

#include <stdlib.h>
#include <string.h>

#include "aiserve_tok_internal.h"


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
    prefix = prefix ? prefix : "##";

    if (type == NULL || strcmp(type, "WordPiece") != 0
        || strlen(prefix) >= sizeof(tok->dec_prefix))
    {
        tok->dec_type = AISERVE_TOK_DEC_OTHER;
        return;
    }

    tok->dec_type = AISERVE_TOK_DEC_WORDPIECE;
    memcpy(tok->dec_prefix, prefix, strlen(prefix) + 1);

    v = json_object_get(decoder, "cleanup");
    tok->dec_cleanup = json_is_boolean(v) ? json_is_true(v) : 1;
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


/*
 * wordpiece.rs cleanup() on one token (with its leading space): each pair
 * replaced everywhere, in this order.  Rewrites s[0 .. *len) in place
 * (every replacement is shorter, but " do not" -> " don't", equal length).
 */
static void
aiserve_tok_cleanup(char *s, size_t *len)
{
    static const char  *from[] = {
        " .", " ?", " !", " ,", " ' ", " n't", " 'm", " do not", " 's",
        " 've", " 're", NULL
    };
    static const char  *to[] = {
        ".", "?", "!", ",", "'", "n't", "'m", " don't", "'s", "'ve", "'re",
        NULL
    };

    size_t  i, k, n, flen, tlen;

    for (k = 0; from[k]; k++) {
        flen = strlen(from[k]);
        tlen = strlen(to[k]);
        n = 0;

        for (i = 0; i < *len; /* void */) {
            if (i + flen <= *len && memcmp(s + i, from[k], flen) == 0) {
                memcpy(s + n, to[k], tlen);
                n += tlen;
                i += flen;
                continue;
            }

            s[n++] = s[i++];
        }

        *len = n;
    }
}


int
aiserve_tok_decode(const aiserve_tok_t *tok, const int32_t *ids, size_t n,
    int skip_special_tokens, char **out, size_t *out_len, char *err,
    size_t err_len)
{
    char        *buf, *p;
    size_t       i, cap, len, plen, first, tl;
    const char  *t;

    *out = NULL;
    *out_len = 0;

    if (tok->dec_type == AISERVE_TOK_DEC_OTHER) {
        aiserve_err(err, err_len, "the tokenizer's decoder is not "
                    "supported (aiserve implements WordPiece)");
        return -1;
    }

    cap = 1;
    for (i = 0; i < n; i++) {
        t = aiserve_tok_id_to_token(tok, ids[i]);
        cap += t ? strlen(t) + 1 : 0;
    }

    buf = malloc(cap);
    if (buf == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }

    plen = strlen(tok->dec_prefix);
    len = 0;
    first = 1;

    for (i = 0; i < n; i++) {
        t = aiserve_tok_id_to_token(tok, ids[i]);

        if (t == NULL
            || (skip_special_tokens && aiserve_tok_is_special(tok, ids[i])))
        {
            continue;
        }

        p = buf + len;

        if (tok->dec_type == AISERVE_TOK_DEC_NONE) {
            /* no decoder: tokens joined with spaces */
            if (!first) {
                *p++ = ' ';
            }

            memcpy(p, t, strlen(t));
            len = p - buf + strlen(t);
            first = 0;
            continue;
        }

        if (!first && strncmp(t, tok->dec_prefix, plen) == 0) {
            t += plen;

        } else if (!first) {
            *p++ = ' ';
        }

        memcpy(p, t, strlen(t));
        p += strlen(t);

        tl = p - (buf + len);

        if (tok->dec_cleanup) {
            aiserve_tok_cleanup(buf + len, &tl);
        }

        len += tl;
        first = 0;
    }

    buf[len] = '\0';
    *out = buf;
    *out_len = len;

    return 0;
}
