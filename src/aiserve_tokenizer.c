/*
 * aiserve tokenizer: BERT WordPiece, identical to Hugging Face `tokenizers`
 * driven by a model's tokenizer.json.  This file loads a tokenizer
 * (tokenizer.json or vocab.txt + tokenizer_config.json) and answers
 * vocabulary questions; aiserve_tok_encode.c encodes.
 *
 * Sources followed (tokenizers 0.23): tokenizer/serialization.rs,
 * models/wordpiece/mod.rs, normalizers/bert.rs, processors/template.rs and
 * bert.rs, tokenizer/added_vocabulary.rs; transformers'
 * models/bert/tokenization_bert.py for the vocab.txt fallback.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "aiserve_tok_internal.h"
#include "aiserve_tok_unicode.h"


/* --- string pool and hash maps ------------------------------------------ */

static int
aiserve_tok_pool_add(aiserve_tok_t *tok, const char *s, size_t len,
    uint32_t *off)
{
    size_t  cap;
    char   *p;

    if (tok->pool_len + len + 1 > tok->pool_cap) {
        cap = tok->pool_cap ? tok->pool_cap * 2 : 65536;
        while (cap < tok->pool_len + len + 1) {
            cap *= 2;
        }
        if (cap > UINT32_MAX) {
            return -1;
        }
        p = realloc(tok->pool, cap);
        if (p == NULL) {
            return -1;
        }
        tok->pool = p;
        tok->pool_cap = cap;
    }

    memcpy(tok->pool + tok->pool_len, s, len);
    tok->pool[tok->pool_len + len] = '\0';
    *off = (uint32_t) tok->pool_len;
    tok->pool_len += len + 1;

    return 0;
}


static int
aiserve_tok_map_init(aiserve_tok_map_t *m, size_t n)
{
    size_t  cap, i;

    cap = 16;
    while (cap < n * 2) {
        cap *= 2;
    }

    m->slots = malloc(cap * sizeof(aiserve_tok_slot_t));
    if (m->slots == NULL) {
        return -1;
    }
    for (i = 0; i < cap; i++) {
        m->slots[i].id = -1;
    }
    m->mask = cap - 1;
    m->max_len = 0;

    return 0;
}


/* inserts or replaces (a later duplicate wins, as in a Rust HashMap
 * built from the vocabulary in order) */
static void
aiserve_tok_map_put(aiserve_tok_map_t *m, const char *pool, uint32_t off,
    uint32_t len, int32_t id)
{
    uint32_t             h;
    size_t               i;
    aiserve_tok_slot_t  *sl;

    h = aiserve_tok_hash_step(AISERVE_TOK_FNV_BASIS, pool + off, len);

    for (i = h & m->mask; ; i = (i + 1) & m->mask) {
        sl = &m->slots[i];
        if (sl->id < 0) {
            break;
        }
        if (sl->hash == h && sl->len == len
            && memcmp(pool + sl->off, pool + off, len) == 0)
        {
            sl->id = id;
            return;
        }
    }

    sl->hash = h;
    sl->id = id;
    sl->off = off;
    sl->len = len;
    if (len > m->max_len) {
        m->max_len = len;
    }
}

/* --- loading ------------------------------------------------------------- */

typedef struct {
    char    *s;
    size_t   len;
    int32_t  id;
} aiserve_tok_entry_t;


/*
 * Builds the vocabulary from (token, id) entries: id table, the full map
 * and the continuation map (entries starting with prefix, keyed without
 * it).
 */
static int
aiserve_tok_build_vocab(aiserve_tok_t *tok, aiserve_tok_entry_t *e,
    size_t n, const char *prefix, char *err, size_t err_len)
{
    size_t    i, plen, n_cont;
    int32_t   max_id;
    uint32_t  off;

    plen = strlen(prefix);
    tok->prefix_len = plen;
    max_id = -1;
    n_cont = 0;
    for (i = 0; i < n; i++) {
        if (e[i].id < 0) {
            aiserve_err(err, err_len, "negative id for token \"%s\"",
                            e[i].s);
            return -1;
        }
        if (e[i].id > max_id) {
            max_id = e[i].id;
        }
        if (plen && e[i].len >= plen && memcmp(e[i].s, prefix, plen) == 0) {
            n_cont++;
        }
    }

    tok->n_ids = (size_t) max_id + 1;
    tok->id_off = malloc(tok->n_ids * sizeof(uint32_t) + 1);
    if (tok->id_off == NULL
        || aiserve_tok_map_init(&tok->full, n) != 0
        || aiserve_tok_map_init(&tok->cont, n_cont) != 0)
    {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    for (i = 0; i < tok->n_ids; i++) {
        tok->id_off[i] = AISERVE_TOK_NONE;
    }

    for (i = 0; i < n; i++) {
        if (aiserve_tok_pool_add(tok, e[i].s, e[i].len, &off) != 0) {
            aiserve_err(err, err_len, "out of memory");
            return -1;
        }
        tok->id_off[e[i].id] = off;
    }

    /* the pool no longer moves: fill the maps */
    for (i = 0; i < n; i++) {
        off = tok->id_off[e[i].id];
        aiserve_tok_map_put(&tok->full, tok->pool, off, (uint32_t) e[i].len,
                            e[i].id);
        if (plen && e[i].len >= plen
            && memcmp(e[i].s, prefix, plen) == 0)
        {
            aiserve_tok_map_put(&tok->cont, tok->pool, off + (uint32_t) plen,
                                (uint32_t) (e[i].len - plen), e[i].id);
        }
    }
    tok->vocab_size = n;

    return 0;
}


static int
aiserve_tok_added_cmp(const void *a, const void *b, void *arg)
{
    const aiserve_tok_added_t  *x = a, *y = b;
    const char                 *pool = arg;
    uint8_t                     fx, fy;

    fx = (uint8_t) pool[x->off];
    fy = (uint8_t) pool[y->off];
    if (fx != fy) {
        return fx - fy;
    }

    return (x->len < y->len) - (x->len > y->len);
}


/* gives id the token at off in the pool unless the vocabulary has it */
static int
aiserve_tok_reserve_id(aiserve_tok_t *tok, int32_t id, uint32_t off)
{
    uint32_t  *ids;
    size_t     i, n;

    if (id < 0) {
        return -1;
    }

    if ((size_t) id >= tok->n_ids) {
        n = (size_t) id + 1;
        ids = realloc(tok->id_off, n * sizeof(uint32_t));
        if (ids == NULL) {
            return -1;
        }
        for (i = tok->n_ids; i < n; i++) {
            ids[i] = AISERVE_TOK_NONE;
        }
        tok->id_off = ids;
        tok->n_ids = n;
    }
    if (tok->id_off[id] == AISERVE_TOK_NONE) {
        tok->id_off[id] = off;
        tok->vocab_size++;
    }

    return 0;
}


/*
 * Registers an added token (content matched in raw text).  Tokens whose
 * content is not in the vocabulary keep the id tokenizer.json gives.
 * Returns -1 on memory error.
 */
static int
aiserve_tok_add_token(aiserve_tok_t *tok, const char *content, size_t len,
    int32_t id, int lstrip, int rstrip, int single_word)
{
    aiserve_tok_added_t  *a, *na;
    uint32_t              off;

    if (len == 0) {
        return 0;
    }

    if (aiserve_tok_pool_add(tok, content, len, &off) != 0
        || aiserve_tok_reserve_id(tok, id, off) != 0)
    {
        return -1;
    }

    na = realloc(tok->added, (tok->n_added + 1) * sizeof(*na));
    if (na == NULL) {
        return -1;
    }
    tok->added = na;
    a = &na[tok->n_added++];
    a->off = off;
    a->len = (uint32_t) len;
    a->id = id;
    a->lstrip = lstrip ? 1 : 0;
    a->rstrip = rstrip ? 1 : 0;
    a->single_word = single_word ? 1 : 0;
    tok->added_first[(uint8_t) content[0]] = 1;
    tok->any_lstrip |= a->lstrip;

    return 0;
}


/*
 * Registers an added token with normalized=true: matched after
 * normalization, as its own content normalized (added_vocabulary.rs
 * refresh_added_tokens).  Returns -1 on error.
 */
static int
aiserve_tok_add_normalized(aiserve_tok_t *tok, const char *content,
    size_t len, int32_t id, int lstrip, int rstrip, int single_word)
{
    aiserve_tok_nadded_t  *na, *a;
    uint32_t               off, *cps;
    size_t                 n;

    if (len == 0) {
        return 0;
    }

    if (aiserve_tok_normalize_string(tok, content, len, &cps, &n) != 0) {
        return -1;
    }
    if (n == 0) {
        free(cps);
        return 0;
    }

    if (aiserve_tok_pool_add(tok, content, len, &off) != 0
        || aiserve_tok_reserve_id(tok, id, off) != 0)
    {
        free(cps);
        return -1;
    }

    na = realloc(tok->nadded, (tok->n_nadded + 1) * sizeof(*na));
    if (na == NULL) {
        free(cps);
        return -1;
    }
    tok->nadded = na;
    a = &na[tok->n_nadded++];
    a->off = off;
    a->len = (uint32_t) len;
    a->cps = cps;
    a->n = n;
    a->id = id;
    a->lstrip = lstrip ? 1 : 0;
    a->rstrip = rstrip ? 1 : 0;
    a->single_word = single_word ? 1 : 0;

    return 0;
}


static int
aiserve_tok_json_bool(json_t *obj, const char *key, int dflt)
{
    json_t  *v;

    v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) {
        return dflt;
    }

    return json_is_true(v);
}


/* id of an added token by content, or -1 */
static int32_t
aiserve_tok_added_id(const aiserve_tok_t *tok, const char *token, size_t len)
{
    size_t  i;

    for (i = 0; i < tok->n_added; i++) {
        if (tok->added[i].len == len
            && memcmp(tok->pool + tok->added[i].off, token, len) == 0)
        {
            return tok->added[i].id;
        }
    }

    for (i = 0; i < tok->n_nadded; i++) {
        if (tok->nadded[i].len == len
            && memcmp(tok->pool + tok->nadded[i].off, token, len) == 0)
        {
            return tok->nadded[i].id;
        }
    }

    return -1;
}


/*
 * One AddedToken object (tokenizer.json "added_tokens", or
 * tokenizer_config.json "added_tokens_decoder") with the given id; a
 * content already added is skipped.  Returns -1 with msg set on error.
 */
static int
aiserve_tok_add_json(aiserve_tok_t *tok, json_t *v, int32_t id, char *msg,
    size_t msg_len)
{
    const char  *content;

    content = json_string_value(json_object_get(v, "content"));
    if (content == NULL
        || aiserve_tok_added_id(tok, content, strlen(content)) >= 0)
    {
        return 0;
    }

    /* AddedToken's serde default for "normalized" is !special */
    if ((aiserve_tok_json_bool(v, "normalized",
                               !aiserve_tok_json_bool(v, "special", 0))
         ? aiserve_tok_add_normalized : aiserve_tok_add_token)
            (tok, content, strlen(content), id,
             aiserve_tok_json_bool(v, "lstrip", 0),
             aiserve_tok_json_bool(v, "rstrip", 0),
             aiserve_tok_json_bool(v, "single_word", 0)) != 0)
    {
        snprintf(msg, msg_len, "added token \"%.64s\": bad id or out of "
                 "memory", content);
        return -1;
    }

    if (aiserve_tok_json_bool(v, "special", 0)
        && aiserve_tok_mark_special(tok, id) != 0)
    {
        snprintf(msg, msg_len, "out of memory");
        return -1;
    }

    return 0;
}


static void
aiserve_tok_added_sort(aiserve_tok_t *tok)
{
    if (tok->n_added > 1) {
        qsort_r(tok->added, tok->n_added, sizeof(aiserve_tok_added_t),
                aiserve_tok_added_cmp, tok->pool);
    }
}


static int
aiserve_tok_load_normalizer(aiserve_tok_t *tok, json_t *n, char *err,
    size_t err_len)
{
    const char  *type;
    json_t      *sa;

    if (n == NULL || json_is_null(n)) {
        return 0;
    }

    type = json_string_value(json_object_get(n, "type"));
    if (type == NULL || strcmp(type, "BertNormalizer") != 0) {
        aiserve_err(err, err_len, "normalizer \"%s\" is not supported "
                        "(aiserve implements BertNormalizer)",
                        type ? type : "?");
        return -1;
    }

    tok->clean_text = aiserve_tok_json_bool(n, "clean_text", 1);
    tok->chinese = aiserve_tok_json_bool(n, "handle_chinese_chars", 1);
    tok->lowercase = aiserve_tok_json_bool(n, "lowercase", 1);
    /* bert.rs: strip_accents None follows lowercase */
    sa = json_object_get(n, "strip_accents");
    tok->strip_accents = (sa == NULL || json_is_null(sa)) ? tok->lowercase
                                                          : json_is_true(sa);

    return 0;
}


static int
aiserve_tok_load_pretok(aiserve_tok_t *tok, json_t *p, char *err,
    size_t err_len)
{
    const char  *type;

    if (p == NULL || json_is_null(p)) {
        tok->bert_pretok = 0;
        return 0;
    }

    type = json_string_value(json_object_get(p, "type"));
    if (type == NULL || strcmp(type, "BertPreTokenizer") != 0) {
        aiserve_err(err, err_len, "pre_tokenizer \"%s\" is not supported "
                        "(aiserve implements BertPreTokenizer)",
                        type ? type : "?");
        return -1;
    }
    tok->bert_pretok = 1;

    return 0;
}


static int
aiserve_tok_piece_special(aiserve_tok_piece_t *p, const int32_t *ids,
    size_t n, uint32_t type_id)
{
    p->seq = -1;
    p->type_id = type_id;
    p->n_ids = n;
    p->ids = malloc((n ? n : 1) * sizeof(int32_t));
    if (p->ids == NULL) {
        return -1;
    }
    memcpy(p->ids, ids, n * sizeof(int32_t));

    return 0;
}


/* BertProcessing / default: [CLS] A [SEP] (B [SEP]) */
static int
aiserve_tok_bert_template(aiserve_tok_t *tok, int32_t cls, int32_t sep)
{
    aiserve_tok_piece_t  *s, *p;

    s = calloc(3, sizeof(*s));
    p = calloc(5, sizeof(*p));
    if (s == NULL || p == NULL) {
        free(s);
        free(p);
        return -1;
    }
    tok->tmpl[0] = s;
    tok->tmpl[1] = p;
    tok->n_tmpl[0] = 3;
    tok->n_tmpl[1] = 5;

    if (aiserve_tok_piece_special(&s[0], &cls, 1, 0) != 0
        || aiserve_tok_piece_special(&s[2], &sep, 1, 0) != 0
        || aiserve_tok_piece_special(&p[0], &cls, 1, 0) != 0
        || aiserve_tok_piece_special(&p[2], &sep, 1, 0) != 0
        || aiserve_tok_piece_special(&p[4], &sep, 1, 1) != 0)
    {
        return -1;
    }
    s[1].seq = 0;
    s[1].type_id = 0;
    p[1].seq = 0;
    p[1].type_id = 0;
    p[3].seq = 1;
    p[3].type_id = 1;
    tok->n_special[0] = 2;
    tok->n_special[1] = 3;
    tok->has_template = 1;

    return 0;
}


static int
aiserve_tok_load_template(aiserve_tok_t *tok, json_t *pp, int which,
    json_t *specials, char *err, size_t err_len)
{
    json_t               *tpl, *item, *sq, *st, *def, *ids, *v;
    size_t                i, j, n;
    const char           *sid;
    aiserve_tok_piece_t  *pieces;
    int32_t               buf[64];

    tpl = json_object_get(pp, which ? "pair" : "single");
    if (!json_is_array(tpl)) {
        aiserve_err(err, err_len, "TemplateProcessing without \"%s\"",
                        which ? "pair" : "single");
        return -1;
    }

    n = json_array_size(tpl);
    pieces = calloc(n ? n : 1, sizeof(*pieces));
    if (pieces == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }
    tok->tmpl[which] = pieces;
    tok->n_tmpl[which] = n;
    tok->n_special[which] = 0;

    json_array_foreach(tpl, i, item) {
        sq = json_object_get(item, "Sequence");
        st = json_object_get(item, "SpecialToken");
        if (sq != NULL) {
            sid = json_string_value(json_object_get(sq, "id"));
            pieces[i].seq = (sid != NULL && strcmp(sid, "B") == 0) ? 1 : 0;
            pieces[i].type_id = (uint32_t) json_integer_value(
                                    json_object_get(sq, "type_id"));
            continue;
        }
        if (st == NULL) {
            aiserve_err(err, err_len, "bad TemplateProcessing piece");
            return -1;
        }
        sid = json_string_value(json_object_get(st, "id"));
        def = sid ? json_object_get(specials, sid) : NULL;
        ids = def ? json_object_get(def, "ids") : NULL;
        if (!json_is_array(ids) || json_array_size(ids) > 64) {
            aiserve_err(err, err_len, "TemplateProcessing: special token "
                            "\"%s\" is not defined", sid ? sid : "?");
            return -1;
        }
        json_array_foreach(ids, j, v) {
            buf[j] = (int32_t) json_integer_value(v);
        }
        if (aiserve_tok_piece_special(&pieces[i], buf, json_array_size(ids),
                (uint32_t) json_integer_value(json_object_get(st, "type_id")))
            != 0)
        {
            aiserve_err(err, err_len, "out of memory");
            return -1;
        }
        tok->n_special[which] += json_array_size(ids);
    }

    return 0;
}


static int
aiserve_tok_load_post(aiserve_tok_t *tok, json_t *pp, char *err,
    size_t err_len)
{
    const char  *type;
    json_t      *cls, *sep;

    if (pp == NULL || json_is_null(pp)) {
        return 0;
    }

    type = json_string_value(json_object_get(pp, "type"));
    if (type != NULL && strcmp(type, "TemplateProcessing") == 0) {
        if (aiserve_tok_load_template(tok, pp, 0,
                json_object_get(pp, "special_tokens"), err, err_len) != 0
            || aiserve_tok_load_template(tok, pp, 1,
                json_object_get(pp, "special_tokens"), err, err_len) != 0)
        {
            return -1;
        }
        tok->has_template = 1;
        return 0;
    }

    if (type != NULL && strcmp(type, "BertProcessing") == 0) {
        cls = json_object_get(pp, "cls");
        sep = json_object_get(pp, "sep");
        if (json_array_size(cls) != 2 || json_array_size(sep) != 2) {
            aiserve_err(err, err_len, "BertProcessing without cls/sep");
            return -1;
        }
        if (aiserve_tok_bert_template(tok,
                (int32_t) json_integer_value(json_array_get(cls, 1)),
                (int32_t) json_integer_value(json_array_get(sep, 1))) != 0)
        {
            aiserve_err(err, err_len, "out of memory");
            return -1;
        }
        return 0;
    }

    aiserve_err(err, err_len, "post_processor \"%s\" is not supported "
                    "(aiserve implements TemplateProcessing, BertProcessing)",
                    type ? type : "?");
    return -1;
}


static int
aiserve_tok_load_truncation(aiserve_tok_t *tok, json_t *t, char *err,
    size_t err_len)
{
    const char  *s;

    if (t == NULL || json_is_null(t)) {
        return 0;
    }

    tok->trunc_max = (size_t) json_integer_value(
                                  json_object_get(t, "max_length"));
    s = json_string_value(json_object_get(t, "strategy"));
    if (s == NULL || strcmp(s, "LongestFirst") == 0) {
        tok->trunc_strategy = AISERVE_TRUNC_LONGEST_FIRST;
    } else if (strcmp(s, "OnlyFirst") == 0) {
        tok->trunc_strategy = AISERVE_TRUNC_ONLY_FIRST;
    } else if (strcmp(s, "OnlySecond") == 0) {
        tok->trunc_strategy = AISERVE_TRUNC_ONLY_SECOND;
    } else {
        aiserve_err(err, err_len, "truncation strategy \"%s\" unknown", s);
        return -1;
    }

    return 0;
}


static int
aiserve_tok_load_json(aiserve_tok_t *tok, const char *path, char *err,
    size_t err_len)
{
    json_t               *root, *model, *vocab, *v, *added;
    json_error_t          jerr;
    const char           *type, *key, *unk, *prefix;
    aiserve_tok_entry_t  *e;
    size_t                n, i;
    int                   rc;
    char                  msg[256];

    root = json_load_file(path, 0, &jerr);
    if (root == NULL) {
        aiserve_err(err, err_len, "%s: %s (line %d)", path, jerr.text,
                        jerr.line);
        return -1;
    }

    rc = -1;
    e = NULL;
    msg[0] = '\0';

    model = json_object_get(root, "model");
    type = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(model)) {
        snprintf(msg, sizeof(msg), "no \"model\"");
        goto done;
    }
    if (type != NULL && strcmp(type, "WordPiece") != 0) {
        snprintf(msg, sizeof(msg), "model type \"%s\" is not supported "
                 "(aiserve implements WordPiece)", type);
        goto done;
    }

    vocab = json_object_get(model, "vocab");
    unk = json_string_value(json_object_get(model, "unk_token"));
    if (type == NULL) {
        /* untagged models: tell them apart as tokenizers' serde does */
        type = json_object_get(model, "merges") ? "BPE"
               : json_is_array(vocab) ? "Unigram" : NULL;
    }
    if (type != NULL && strcmp(type, "WordPiece") != 0) {
        snprintf(msg, sizeof(msg), "model type \"%s\" is not supported "
                 "(aiserve implements WordPiece)", type);
        goto done;
    }
    if (!json_is_object(vocab) || unk == NULL) {
        snprintf(msg, sizeof(msg), "model type \"%s\" is not supported "
                 "(aiserve implements WordPiece)", type ? type : "unknown");
        goto done;
    }

    prefix = json_string_value(json_object_get(model,
                                               "continuing_subword_prefix"));
    if (prefix == NULL) {
        prefix = "##";
    }
    v = json_object_get(model, "max_input_chars_per_word");
    tok->max_chars = json_is_integer(v) ? (size_t) json_integer_value(v) : 100;

    n = json_object_size(vocab);
    e = calloc(n ? n : 1, sizeof(*e));
    if (e == NULL) {
        snprintf(msg, sizeof(msg), "out of memory");
        goto done;
    }
    i = 0;
    json_object_foreach(vocab, key, v) {
        e[i].s = (char *) key;
        e[i].len = strlen(key);
        e[i].id = (int32_t) json_integer_value(v);
        i++;
    }
    if (aiserve_tok_build_vocab(tok, e, n, prefix, msg, sizeof(msg)) != 0) {
        goto done;
    }

    tok->unk_id = aiserve_tok_token_to_id(tok, unk);
    if (tok->unk_id < 0) {
        snprintf(msg, sizeof(msg), "unk_token \"%s\" is not in the vocabulary",
                 unk);
        goto done;
    }

    if (aiserve_tok_load_normalizer(tok, json_object_get(root, "normalizer"),
                                    msg, sizeof(msg)) != 0
        || aiserve_tok_load_pretok(tok, json_object_get(root, "pre_tokenizer"),
                                   msg, sizeof(msg)) != 0
        || aiserve_tok_load_post(tok, json_object_get(root, "post_processor"),
                                 msg, sizeof(msg)) != 0
        || aiserve_tok_load_truncation(tok, json_object_get(root, "truncation"),
                                       msg, sizeof(msg)) != 0)
    {
        goto done;
    }

    aiserve_tok_load_decoder(tok, json_object_get(root, "decoder"));

    added = json_object_get(root, "added_tokens");
    json_array_foreach(added, i, v) {
        if (aiserve_tok_add_json(tok, v, (int32_t) json_integer_value(
                                     json_object_get(v, "id")),
                                 msg, sizeof(msg)) != 0)
        {
            goto done;
        }
    }
    aiserve_tok_added_sort(tok);

    rc = 0;

done:

    if (rc != 0) {
        aiserve_err(err, err_len, "%s: %s", path, msg);
    }
    free(e);
    json_decref(root);

    return rc;
}


static char *
aiserve_tok_read_file(const char *path, size_t *len)
{
    FILE    *f;
    char    *buf, *nb;
    size_t   cap, n, r;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    cap = 1 << 20;
    n = 0;
    buf = malloc(cap + 1);
    while (buf != NULL) {
        r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) {
            break;
        }
        cap *= 2;
        nb = realloc(buf, cap + 1);
        if (nb == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
    }
    fclose(f);

    if (buf != NULL) {
        buf[n] = '\0';
        *len = n;
    }

    return buf;
}


static const char *
aiserve_tok_config_token(json_t *cfg, const char *key, const char *dflt)
{
    json_t  *v;

    v = json_object_get(cfg, key);
    if (json_is_string(v)) {
        return json_string_value(v);
    }
    /* AddedToken serialized as an object */
    if (json_is_object(v) && json_is_string(json_object_get(v, "content"))) {
        return json_string_value(json_object_get(v, "content"));
    }

    return dflt;
}


/*
 * vocab.txt + tokenizer_config.json, as transformers' BertTokenizer builds
 * it (models/bert/tokenization_bert.py): one token per line, id = line
 * number, a later duplicate line wins; BertNormalizer(clean_text,
 * tokenize_chinese_chars, strip_accents, do_lower_case), BertPreTokenizer,
 * WordPiece(unk_token, "##", 100), [CLS] A [SEP] / [CLS] A [SEP] B:1 [SEP]:1
 * and the special tokens as added tokens.
 */
static int
aiserve_tok_load_vocab_txt(aiserve_tok_t *tok, const char *dir, char *err,
    size_t err_len)
{
    char                 path[4096], cpath[4096], msg[256];
    char                *text, *p, *nl;
    size_t               len, n, i;
    aiserve_tok_entry_t *e;
    json_t              *cfg, *v;
    json_error_t         jerr;
    const char          *unk, *cls, *sep, *pad, *mask, *key;
    const char          *specials[5];
    int32_t              id;
    int                  rc;

    snprintf(path, sizeof(path), "%s/vocab.txt", dir);
    text = aiserve_tok_read_file(path, &len);
    if (text == NULL) {
        aiserve_err(err, err_len, "%s/tokenizer.json and %s: %s", dir,
                        path, strerror(errno ? errno : ENOENT));
        return -1;
    }

    cfg = NULL;
    snprintf(cpath, sizeof(cpath), "%s/tokenizer_config.json", dir);
    if (access(cpath, R_OK) == 0) {
        cfg = json_load_file(cpath, 0, &jerr);
        if (cfg == NULL) {
            aiserve_err(err, err_len, "%s: %s (line %d)", cpath,
                            jerr.text, jerr.line);
            free(text);
            return -1;
        }
    }

    n = 0;
    for (p = text; p < text + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t) (text + len - p));
        if (nl == NULL) {
            nl = text + len;
        }
        n++;
    }

    rc = -1;
    msg[0] = '\0';
    e = calloc(n ? n : 1, sizeof(*e));
    if (e == NULL) {
        snprintf(msg, sizeof(msg), "out of memory");
        goto done;
    }

    i = 0;
    for (p = text; p < text + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t) (text + len - p));
        if (nl == NULL) {
            nl = text + len;
        }
        *nl = '\0';
        e[i].s = p;
        e[i].len = (size_t) (nl - p);
        e[i].id = (int32_t) i;
        i++;
    }

    if (aiserve_tok_build_vocab(tok, e, n, "##", msg, sizeof(msg)) != 0) {
        goto done;
    }
    tok->max_chars = 100;

    tok->lowercase = aiserve_tok_json_bool(cfg, "do_lower_case", 1);
    tok->chinese = aiserve_tok_json_bool(cfg, "tokenize_chinese_chars", 1);
    v = json_object_get(cfg, "strip_accents");
    tok->strip_accents = (v == NULL || json_is_null(v)) ? tok->lowercase
                                                        : json_is_true(v);
    tok->clean_text = 1;
    tok->bert_pretok = 1;

    unk = aiserve_tok_config_token(cfg, "unk_token", "[UNK]");
    cls = aiserve_tok_config_token(cfg, "cls_token", "[CLS]");
    sep = aiserve_tok_config_token(cfg, "sep_token", "[SEP]");
    pad = aiserve_tok_config_token(cfg, "pad_token", "[PAD]");
    mask = aiserve_tok_config_token(cfg, "mask_token", "[MASK]");

    tok->unk_id = aiserve_tok_token_to_id(tok, unk);
    if (tok->unk_id < 0) {
        snprintf(msg, sizeof(msg), "unk_token \"%s\" is not in the vocabulary",
                 unk);
        goto done;
    }
    if (aiserve_tok_token_to_id(tok, cls) < 0
        || aiserve_tok_token_to_id(tok, sep) < 0)
    {
        snprintf(msg, sizeof(msg), "\"%s\" or \"%s\" is not in the "
                 "vocabulary", cls, sep);
        goto done;
    }
    if (aiserve_tok_bert_template(tok, aiserve_tok_token_to_id(tok, cls),
                                  aiserve_tok_token_to_id(tok, sep)) != 0)
    {
        snprintf(msg, sizeof(msg), "out of memory");
        goto done;
    }

    /* transformers >= 4.34 lists the added tokens, specials included,
     * with their flags */
    json_object_foreach(json_object_get(cfg, "added_tokens_decoder"), key, v)
    {
        if (aiserve_tok_add_json(tok, v, (int32_t) strtol(key, NULL, 10),
                                 msg, sizeof(msg)) != 0)
        {
            goto done;
        }
    }

    specials[0] = pad;
    specials[1] = unk;
    specials[2] = cls;
    specials[3] = sep;
    specials[4] = mask;
    for (i = 0; i < 5; i++) {
        id = aiserve_tok_token_to_id(tok, specials[i]);
        if (id >= 0
            && aiserve_tok_added_id(tok, specials[i], strlen(specials[i])) < 0
            && (aiserve_tok_add_token(tok, specials[i], strlen(specials[i]),
                                      id, 0, 0, 0) != 0
                || aiserve_tok_mark_special(tok, id) != 0))
        {
            snprintf(msg, sizeof(msg), "out of memory");
            goto done;
        }
    }
    aiserve_tok_added_sort(tok);

    rc = 0;

done:

    if (rc != 0) {
        aiserve_err(err, err_len, "%s: %s", path, msg);
    }
    free(e);
    free(text);
    json_decref(cfg);

    return rc;
}


aiserve_tok_t *
aiserve_tok_load(const char *model_dir, char *err, size_t err_len)
{
    aiserve_tok_t  *tok;
    char            path[4096];
    int             rc;

    tok = calloc(1, sizeof(*tok));
    if (tok == NULL) {
        aiserve_err(err, err_len, "out of memory");
        return NULL;
    }
    tok->unk_id = -1;

    /* BertTokenizer's convert_tokens_to_string and
     * clean_up_tokenization_spaces, for vocab.txt */
    tok->dec_type = AISERVE_TOK_DEC_WORDPIECE;

    snprintf(path, sizeof(path), "%s/tokenizer.json", model_dir);
    if (access(path, F_OK) == 0) {
        rc = aiserve_tok_load_json(tok, path, err, err_len);
    } else {
        rc = aiserve_tok_load_vocab_txt(tok, model_dir, err, err_len);
    }

    if (rc != 0) {
        aiserve_tok_free(tok);
        return NULL;
    }

    /* fills the code point class table now, not in the first request */
    (void) aiserve_tok_uni_bmp();

    return tok;
}


void
aiserve_tok_free(aiserve_tok_t *tok)
{
    size_t  i, k;

    if (tok == NULL) {
        return;
    }

    for (k = 0; k < 2; k++) {
        for (i = 0; i < tok->n_tmpl[k]; i++) {
            free(tok->tmpl[k][i].ids);
        }
        free(tok->tmpl[k]);
    }
    free(tok->added);
    free(tok->special_ids);
    for (i = 0; i < tok->n_nadded; i++) {
        free(tok->nadded[i].cps);
    }
    free(tok->nadded);
    free(tok->full.slots);
    free(tok->cont.slots);
    free(tok->id_off);
    free(tok->pool);
    free(tok);
}


void
aiserve_tok_opts_default(aiserve_tok_opts_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->truncation = 1;
    opts->direction = AISERVE_TRUNCATE_RIGHT;
    opts->add_special_tokens = 1;
}


const char *
aiserve_tok_id_to_token(const aiserve_tok_t *tok, int32_t id)
{
    if (id < 0 || (size_t) id >= tok->n_ids
        || tok->id_off[id] == AISERVE_TOK_NONE)
    {
        return NULL;
    }

    return tok->pool + tok->id_off[id];
}


int32_t
aiserve_tok_token_to_id(const aiserve_tok_t *tok, const char *token)
{
    size_t   len;
    int32_t  id;

    len = strlen(token);
    id = aiserve_tok_added_id(tok, token, len);
    if (id >= 0) {
        return id;
    }

    return aiserve_tok_map_get(&tok->full, tok->pool,
               aiserve_tok_hash_step(AISERVE_TOK_FNV_BASIS, token, len),
               token, len);
}


size_t
aiserve_tok_vocab_size(const aiserve_tok_t *tok)
{
    return tok->vocab_size;
}


size_t
aiserve_tok_model_max_length(const aiserve_tok_t *tok)
{
    return tok->trunc_max;
}
