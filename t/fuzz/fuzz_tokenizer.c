/*
 * libFuzzer target for the tokenizer (make fuzz-tokenizer).
 *
 * Input: byte 0 selects options (bit 0: pair, bit 1: truncation to
 * 1 + byte 1 % 40 tokens, bit 2: left, bit 3: no special tokens, bit 4:
 * uncased model, bit 5: uncased with added tokens, when present); the
 * rest is the text, and with a pair,
 * the text up to the first 0xFF byte (never in UTF-8) and the pair after it.
 * Invalid UTF-8 must give an error, never a crash; a success must give
 * offsets inside the text, on code point boundaries, byte and code point
 * offsets agreeing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "aiserve_tokenizer.h"
#include "tok_golden.h"

static aiserve_tok_t  *tok_chinese, *tok_uncased, *tok_added;


/* MiniLM's tokenizer.json with the added tokens of the parity test (raw
 * and normalized, lstrip, rstrip, single_word), or NULL */
static aiserve_tok_t *
load_added(void)
{
    json_t         *patches;
    json_error_t    jerr;
    char            err[256];
    aiserve_tok_t  *tok;

    patches = json_pack("[[[s]o]]", "added_tokens",
                        json_load_file("t/data/tokenizer/added-tokens.json",
                                       0, &jerr));
    tok = patches ? golden_minilm_patched(patches, err, sizeof(err)) : NULL;
    json_decref(patches);

    return tok;
}


static size_t
cp_to_byte(const uint8_t *s, size_t len, size_t cp)
{
    size_t  i, n;

    for (i = 0, n = 0; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            if (n++ == cp) {
                return i;
            }
        }
    }

    return n == cp ? len : (size_t) -1;
}


static void
check(const aiserve_encoding_t *enc, const uint8_t *text, size_t len,
    const uint8_t *pair, size_t pair_len)
{
    size_t          k, cs, ce, bs, be, tl;
    const uint8_t  *t;

    if (enc->n_tokens > enc->n_tokens_untruncated) {
        abort();
    }
    for (k = 0; k < enc->n_tokens; k++) {
        cs = enc->offsets[2 * k];
        ce = enc->offsets[2 * k + 1];
        bs = enc->byte_offsets[2 * k];
        be = enc->byte_offsets[2 * k + 1];
        if (enc->sequence_ids[k] < 0) {
            if (cs || ce || bs || be || !enc->special_tokens_mask[k]) {
                abort();
            }
            continue;
        }
        t = enc->sequence_ids[k] == 1 ? pair : text;
        tl = enc->sequence_ids[k] == 1 ? pair_len : len;
        if (cs > ce || bs > be || be > tl || enc->input_ids[k] < 0
            || cp_to_byte(t, tl, cs) != bs || cp_to_byte(t, tl, ce) != be)
        {
            abort();
        }
    }
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char  err[512];

    tok_chinese = aiserve_tok_load("t/data/tokenizers/bert-base-chinese", err,
                                   sizeof(err));
    if (tok_chinese == NULL) {
        fprintf(stderr, "fuzz_tokenizer: %s (run from the repository root)\n",
                err);
        exit(1);
    }
    tok_uncased = aiserve_tok_load("models/all-MiniLM-L6-v2", err,
                                   sizeof(err));
    tok_added = load_added();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aiserve_tok_opts_t   opts;
    aiserve_encoding_t   enc;
    const aiserve_tok_t *tok;
    const uint8_t       *text, *pair, *sep;
    size_t               len, pair_len;
    char                 err[256];
    uint8_t              flags;

    if (size < 2) {
        return 0;
    }

    flags = data[0];
    aiserve_tok_opts_default(&opts);
    opts.truncation = (flags & 2) != 0;
    opts.max_length = 1 + data[1] % 40;
    opts.direction = (flags & 4) ? AISERVE_TRUNCATE_LEFT
                                 : AISERVE_TRUNCATE_RIGHT;
    opts.add_special_tokens = !(flags & 8);
    tok = (flags & 32) && tok_added ? tok_added
          : (flags & 16) && tok_uncased ? tok_uncased : tok_chinese;

    text = data + 2;
    len = size - 2;
    pair = NULL;
    pair_len = 0;
    if (flags & 1) {
        sep = memchr(text, 0xFF, len);
        if (sep != NULL) {
            pair = sep + 1;
            pair_len = (size_t) (text + len - pair);
            len = (size_t) (sep - text);
        } else {
            pair = text + len;
        }
    }

    if (aiserve_tok_encode(tok, (const char *) text, len,
                           (const char *) pair, pair_len, &opts, &enc, err,
                           sizeof(err)) == 0)
    {
        check(&enc, text, len, pair, pair_len);
        aiserve_encoding_free(&enc);
    } else if (strncmp(err, "invalid UTF-8", 13) != 0
               && strncmp(err, "max_length", 10) != 0)
    {
        fprintf(stderr, "unexpected error: %s\n", err);
        abort();
    }

    return 0;
}
