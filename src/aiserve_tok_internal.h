/*
 * aiserve tokenizer internals shared by aiserve_tokenizer.c (loading,
 * vocabulary) and aiserve_tok_encode.c (encoding).  Not an interface.
 */
#ifndef AISERVE_TOK_INTERNAL_H
#define AISERVE_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "aiserve_err.h"
#include "aiserve_tokenizer.h"


#define AISERVE_TOK_FNV_BASIS  2166136261u
#define AISERVE_TOK_FNV_PRIME  16777619u
#define AISERVE_TOK_NONE       UINT32_MAX

enum {
    AISERVE_TRUNC_LONGEST_FIRST = 0,
    AISERVE_TRUNC_ONLY_FIRST,
    AISERVE_TRUNC_ONLY_SECOND
};


typedef struct {
    uint32_t  hash;
    int32_t   id;           /* -1: empty slot */
    uint32_t  off;          /* key bytes in tok->pool */
    uint32_t  len;
} aiserve_tok_slot_t;


/* open-addressing hash map: token bytes -> id */
typedef struct {
    aiserve_tok_slot_t  *slots;
    size_t               mask;
    size_t               max_len;     /* longest key, bytes */
} aiserve_tok_map_t;


/* an added token (tokenizer.json "added_tokens") matched in raw text */
typedef struct {
    uint32_t  off;          /* content in tok->pool */
    uint32_t  len;
    int32_t   id;
    unsigned  lstrip:1;
    unsigned  rstrip:1;
    unsigned  single_word:1;
} aiserve_tok_added_t;


/* an added token with normalized=true: matched in the normalized text of
 * each piece between raw matches (added_vocabulary.rs
 * extract_and_normalize), as its content normalized */
typedef struct {
    uint32_t  off;          /* raw content in tok->pool */
    uint32_t  len;
    uint32_t *cps;          /* normalized content */
    size_t    n;
    int32_t   id;
    unsigned  lstrip:1;
    unsigned  rstrip:1;
    unsigned  single_word:1;
} aiserve_tok_nadded_t;


/* one piece of a TemplateProcessing template */
typedef struct {
    int       seq;          /* 0: $A, 1: $B, -1: special token */
    uint32_t  type_id;
    int32_t  *ids;          /* special token ids */
    size_t    n_ids;
} aiserve_tok_piece_t;


struct aiserve_tok_s {
    char                 *pool;
    size_t                pool_len, pool_cap;

    uint32_t             *id_off;       /* id -> key in pool, or NONE */
    size_t                n_ids;
    size_t                vocab_size;

    aiserve_tok_map_t     full;         /* every vocabulary entry */
    aiserve_tok_map_t     cont;         /* "##x" entries, keyed by "x" */

    int32_t               unk_id;
    size_t                prefix_len;   /* continuing_subword_prefix */
    size_t                max_chars;    /* max_input_chars_per_word */

    int                   clean_text;
    int                   chinese;
    int                   strip_accents;
    int                   lowercase;
    int                   bert_pretok;

    aiserve_tok_piece_t  *tmpl[2];      /* single, pair */
    size_t                n_tmpl[2];
    size_t                n_special[2]; /* special tokens added */
    int                   has_template;

    aiserve_tok_added_t  *added;        /* sorted by first byte, longest first */
    size_t                n_added;
    uint8_t               added_first[256];
    int                   any_lstrip;   /* a raw added token has lstrip */

    aiserve_tok_nadded_t *nadded;       /* normalized=true added tokens */
    size_t                n_nadded;

    size_t                trunc_max;
    int                   trunc_strategy;

    int32_t              *special_ids;  /* added tokens with special=true */
    size_t                n_special_ids;

    /* tokenizer.json "decoder": BERT's WordPiece (prefix "##", cleanup),
     * or none (tokens joined with spaces); another cannot decode */
    int                   dec_type;
};

#define AISERVE_TOK_DEC_NONE       0
#define AISERVE_TOK_DEC_WORDPIECE  1
#define AISERVE_TOK_DEC_OTHER      2


/* Marks id as a special token (skipped by decode with skip_special_tokens);
 * returns -1 when out of memory. */
int aiserve_tok_mark_special(aiserve_tok_t *tok, int32_t id);
/* Reads tokenizer.json's "decoder" (NULL: none) into tok. */
void aiserve_tok_load_decoder(aiserve_tok_t *tok, json_t *decoder);


static inline uint32_t
aiserve_tok_hash_step(uint32_t h, const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        h = (h ^ (uint8_t) s[i]) * AISERVE_TOK_FNV_PRIME;
    }

    return h;
}


static inline int32_t
aiserve_tok_map_get(const aiserve_tok_map_t *m, const char *pool,
    uint32_t h, const char *s, size_t len)
{
    size_t                    i;
    const aiserve_tok_slot_t *sl;

    for (i = h & m->mask; ; i = (i + 1) & m->mask) {
        sl = &m->slots[i];
        if (sl->id < 0) {
            return -1;
        }
        if (sl->hash == h && sl->len == len
            && memcmp(pool + sl->off, s, len) == 0)
        {
            return sl->id;
        }
    }
}


/*
 * Runs the tokenizer's normalizer (BertNormalizer, or none) over len bytes
 * of UTF-8: *out gets the normalized code points (malloc'ed), *n their
 * count.  Returns 0, or -1 on invalid UTF-8 or memory exhaustion.
 */
int aiserve_tok_normalize_string(const aiserve_tok_t *tok, const char *s,
    size_t len, uint32_t **out, size_t *n);


#endif /* AISERVE_TOK_INTERNAL_H */
