/*
 * aiserve tokenizer: BERT WordPiece, identical to Hugging Face `tokenizers`
 * driven by a model's tokenizer.json.
 *
 * One pass over the input: each code point is validated, classified
 * (aiserve_tok_unicode.c), normalized (BertNormalizer), split into words
 * (BertPreTokenizer) and every finished word goes through WordPiece at
 * once.  The only per-call memory is the token list and one word buffer of
 * at most max_input_chars_per_word + 1 code points, so time and memory are
 * linear in the input.
 *
 * Sources followed (tokenizers 0.23): normalizers/bert.rs,
 * pre_tokenizers/bert.rs, models/wordpiece/mod.rs,
 * processors/template.rs and bert.rs, utils/truncation.rs,
 * tokenizer/added_vocabulary.rs, tokenizer/mod.rs (post_process).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <utf8proc.h>

#include "aiserve_tokenizer.h"
#include "aiserve_tok_unicode.h"


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

    size_t                trunc_max;
    int                   trunc_strategy;
};


/* a token while encoding: id and original offsets of its sequence */
typedef struct {
    int32_t   id;
    uint32_t  cs, ce;       /* code points */
    uint32_t  bs, be;       /* bytes */
} aiserve_tok_tk_t;


typedef struct {
    aiserve_tok_tk_t  *v;
    size_t             n, cap;
} aiserve_tok_vec_t;


/* one normalized code point of the current word */
typedef struct {
    uint32_t  cs;           /* original code point index */
    uint32_t  bs, be;       /* original bytes */
    uint32_t  wpos;         /* start in the word's UTF-8 buffer */
} aiserve_tok_wch_t;


/* a combining mark (ccc > 0) of the current run, before canonical
 * ordering, and the original code point it was decomposed from */
typedef struct {
    uint32_t  c;
    uint16_t  ccc;
    uint16_t  head;         /* first code point of its decomposition */
    uint32_t  cs;
    uint32_t  bs, be;
} aiserve_tok_mark_t;


typedef struct {
    const aiserve_tok_t  *tok;
    aiserve_tok_vec_t    *out;
    char                 *wbuf;         /* normalized word, UTF-8 */
    size_t                wlen;
    aiserve_tok_wch_t    *wch;          /* wcap entries */
    size_t                wcap;         /* min(max_chars, input) + 1 */
    size_t                wn;           /* stored code points */
    size_t                wtotal;       /* code points seen */
    uint32_t              last_ce, last_be;
    aiserve_tok_mark_t   *run;          /* marks awaiting canonical order */
    size_t                n_run, run_cap, run_kept;
    uint32_t             *order;
    uint32_t             *hs;           /* prefix hashes, max_chars + 1 */
    size_t               *ends;
    int                   oom;
} aiserve_tok_word_t;


static void
aiserve_tok_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL || err_len == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}


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


static inline uint32_t
aiserve_tok_hash_step(uint32_t h, const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        h = (h ^ (uint8_t) s[i]) * AISERVE_TOK_FNV_PRIME;
    }

    return h;
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
    max_id = -1;
    n_cont = 0;
    for (i = 0; i < n; i++) {
        if (e[i].id < 0) {
            aiserve_tok_err(err, err_len, "negative id for token \"%s\"",
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
        aiserve_tok_err(err, err_len, "out of memory");
        return -1;
    }
    for (i = 0; i < tok->n_ids; i++) {
        tok->id_off[i] = AISERVE_TOK_NONE;
    }

    for (i = 0; i < n; i++) {
        if (aiserve_tok_pool_add(tok, e[i].s, e[i].len, &off) != 0) {
            aiserve_tok_err(err, err_len, "out of memory");
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
    uint32_t              off, *ids;
    size_t                i, n;

    if (len == 0) {
        return 0;
    }

    if (aiserve_tok_pool_add(tok, content, len, &off) != 0) {
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
aiserve_tok_json_bool(json_t *obj, const char *key, int dflt)
{
    json_t  *v;

    v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) {
        return dflt;
    }

    return json_is_true(v);
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
        aiserve_tok_err(err, err_len, "normalizer \"%s\" is not supported "
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
        aiserve_tok_err(err, err_len, "pre_tokenizer \"%s\" is not supported "
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
        aiserve_tok_err(err, err_len, "TemplateProcessing without \"%s\"",
                        which ? "pair" : "single");
        return -1;
    }

    n = json_array_size(tpl);
    pieces = calloc(n ? n : 1, sizeof(*pieces));
    if (pieces == NULL) {
        aiserve_tok_err(err, err_len, "out of memory");
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
            aiserve_tok_err(err, err_len, "bad TemplateProcessing piece");
            return -1;
        }
        sid = json_string_value(json_object_get(st, "id"));
        def = sid ? json_object_get(specials, sid) : NULL;
        ids = def ? json_object_get(def, "ids") : NULL;
        if (!json_is_array(ids) || json_array_size(ids) > 64) {
            aiserve_tok_err(err, err_len, "TemplateProcessing: special token "
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
            aiserve_tok_err(err, err_len, "out of memory");
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
            aiserve_tok_err(err, err_len, "BertProcessing without cls/sep");
            return -1;
        }
        if (aiserve_tok_bert_template(tok,
                (int32_t) json_integer_value(json_array_get(cls, 1)),
                (int32_t) json_integer_value(json_array_get(sep, 1))) != 0)
        {
            aiserve_tok_err(err, err_len, "out of memory");
            return -1;
        }
        return 0;
    }

    aiserve_tok_err(err, err_len, "post_processor \"%s\" is not supported "
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
        aiserve_tok_err(err, err_len, "truncation strategy \"%s\" unknown", s);
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
    const char           *type, *key, *unk, *prefix, *content;
    aiserve_tok_entry_t  *e;
    size_t                n, i;
    int                   rc;
    char                  msg[256];

    root = json_load_file(path, 0, &jerr);
    if (root == NULL) {
        aiserve_tok_err(err, err_len, "%s: %s (line %d)", path, jerr.text,
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

    added = json_object_get(root, "added_tokens");
    json_array_foreach(added, i, v) {
        content = json_string_value(json_object_get(v, "content"));
        if (content == NULL) {
            continue;
        }
        if (aiserve_tok_json_bool(v, "normalized", 0)) {
            /* matched on normalized text in added_vocabulary.rs; BERT
             * tokenizers ship none, so aiserve refuses rather than guess */
            snprintf(msg, sizeof(msg), "added token \"%.64s\" has "
                     "normalized=true, which is not supported", content);
            goto done;
        }
        if (aiserve_tok_add_token(tok, content, strlen(content),
                (int32_t) json_integer_value(json_object_get(v, "id")),
                aiserve_tok_json_bool(v, "lstrip", 0),
                aiserve_tok_json_bool(v, "rstrip", 0),
                aiserve_tok_json_bool(v, "single_word", 0)) != 0)
        {
            snprintf(msg, sizeof(msg), "out of memory");
            goto done;
        }
    }
    aiserve_tok_added_sort(tok);

    rc = 0;

done:

    if (rc != 0) {
        aiserve_tok_err(err, err_len, "%s: %s", path, msg);
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
    const char          *unk, *cls, *sep, *pad, *mask;
    const char          *specials[5];
    int32_t              id;
    int                  rc;

    snprintf(path, sizeof(path), "%s/vocab.txt", dir);
    text = aiserve_tok_read_file(path, &len);
    if (text == NULL) {
        aiserve_tok_err(err, err_len, "%s/tokenizer.json and %s: %s", dir,
                        path, strerror(errno ? errno : ENOENT));
        return -1;
    }

    cfg = NULL;
    snprintf(cpath, sizeof(cpath), "%s/tokenizer_config.json", dir);
    if (access(cpath, R_OK) == 0) {
        cfg = json_load_file(cpath, 0, &jerr);
        if (cfg == NULL) {
            aiserve_tok_err(err, err_len, "%s: %s (line %d)", cpath,
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

    specials[0] = pad;
    specials[1] = unk;
    specials[2] = cls;
    specials[3] = sep;
    specials[4] = mask;
    for (i = 0; i < 5; i++) {
        id = aiserve_tok_token_to_id(tok, specials[i]);
        if (id >= 0
            && aiserve_tok_add_token(tok, specials[i], strlen(specials[i]),
                                     id, 0, 0, 0) != 0)
        {
            snprintf(msg, sizeof(msg), "out of memory");
            goto done;
        }
    }
    aiserve_tok_added_sort(tok);

    rc = 0;

done:

    if (rc != 0) {
        aiserve_tok_err(err, err_len, "%s: %s", path, msg);
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
        aiserve_tok_err(err, err_len, "out of memory");
        return NULL;
    }
    tok->unk_id = -1;

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
    size_t  len, i;

    len = strlen(token);
    for (i = 0; i < tok->n_added; i++) {
        if (tok->added[i].len == len
            && memcmp(tok->pool + tok->added[i].off, token, len) == 0)
        {
            return tok->added[i].id;
        }
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


/* --- encoding ------------------------------------------------------------ */

static int
aiserve_tok_vec_push(aiserve_tok_vec_t *vec, int32_t id, uint32_t cs,
    uint32_t ce, uint32_t bs, uint32_t be)
{
    aiserve_tok_tk_t  *nv, *t;
    size_t             cap;

    if (vec->n == vec->cap) {
        cap = vec->cap ? vec->cap * 2 : 64;
        nv = realloc(vec->v, cap * sizeof(*nv));
        if (nv == NULL) {
            return -1;
        }
        vec->v = nv;
        vec->cap = cap;
    }

    t = &vec->v[vec->n++];
    t->id = id;
    t->cs = cs;
    t->ce = ce;
    t->bs = bs;
    t->be = be;

    return 0;
}


/*
 * WordPiece over the finished word (models/wordpiece/mod.rs): longer than
 * max_input_chars_per_word code points -> one unk; else greedy longest
 * match first, pieces after the first looked up with the "##" prefix; a
 * position where nothing matches turns the whole word into one unk.
 * Candidates are limited to the longest vocabulary entry, and the hashes of
 * all candidate prefixes come from one forward pass.
 */
static void
aiserve_tok_word_flush(aiserve_tok_word_t *w)
{
    const aiserve_tok_t      *tok = w->tok;
    const aiserve_tok_map_t  *map;
    size_t                    start, ci, k, j, sb, eb, mark, wn;
    uint32_t                  h;
    int32_t                   id;
    const aiserve_tok_wch_t  *ch;

    if (w->wtotal == 0) {
        return;
    }

    ch = w->wch;
    wn = w->wn;
    mark = w->out->n;

    if (w->wtotal > tok->max_chars) {
        goto unk;
    }

    start = 0;
    while (start < wn) {
        map = start ? &tok->cont : &tok->full;
        sb = ch[start].wpos;
        h = AISERVE_TOK_FNV_BASIS;
        k = 0;
        for (ci = start; ci < wn; ci++) {
            eb = (ci + 1 < wn) ? ch[ci + 1].wpos : w->wlen;
            if (eb - sb > map->max_len) {
                break;
            }
            h = aiserve_tok_hash_step(h, w->wbuf + ch[ci].wpos,
                                      eb - ch[ci].wpos);
            w->hs[k] = h;
            w->ends[k] = ci + 1;
            k++;
        }

        id = -1;
        j = k;
        while (j > 0) {
            j--;
            eb = (w->ends[j] < wn) ? ch[w->ends[j]].wpos : w->wlen;
            id = aiserve_tok_map_get(map, tok->pool, w->hs[j], w->wbuf + sb,
                                     eb - sb);
            if (id >= 0) {
                break;
            }
        }
        if (id < 0) {
            w->out->n = mark;
            goto unk;
        }

        ci = w->ends[j] - 1;
        if (aiserve_tok_vec_push(w->out, id, ch[start].cs, ch[ci].cs + 1,
                                 ch[start].bs, ch[ci].be) != 0)
        {
            w->oom = 1;
        }
        start = w->ends[j];
    }

    goto reset;

unk:

    if (aiserve_tok_vec_push(w->out, tok->unk_id, ch[0].cs, w->last_ce,
                             ch[0].bs, w->last_be) != 0)
    {
        w->oom = 1;
    }

reset:

    w->wlen = 0;
    w->wn = 0;
    w->wtotal = 0;
}


/* appends normalized code point c, from original code point cs at bytes
 * [bs, be), to the current word */
static inline void
aiserve_tok_word_add(aiserve_tok_word_t *w, uint32_t c, uint32_t cs,
    uint32_t bs, uint32_t be)
{
    aiserve_tok_wch_t  *ch;

    if (w->wn < w->wcap) {
        ch = &w->wch[w->wn++];
        ch->cs = cs;
        ch->bs = bs;
        ch->be = be;
        ch->wpos = (uint32_t) w->wlen;
        if (c < 0x80) {
            w->wbuf[w->wlen++] = (char) c;
        } else {
            w->wlen += (size_t) utf8proc_encode_char((utf8proc_int32_t) c,
                                   (utf8proc_uint8_t *) w->wbuf + w->wlen);
        }
    }
    w->wtotal++;
    w->last_ce = cs + 1;
    w->last_be = be;
}


/* BertPreTokenizer on one normalized code point: whitespace ends the word,
 * punctuation is a word of its own */
static inline void
aiserve_tok_pretok(aiserve_tok_word_t *w, uint32_t c, unsigned cls,
    uint32_t cs, uint32_t bs, uint32_t be)
{
    if (w->tok->bert_pretok) {
        if (cls & AISERVE_TOK_U_SPACE) {
            aiserve_tok_word_flush(w);
            return;
        }
        if (cls & AISERVE_TOK_U_PUNCT) {
            aiserve_tok_word_flush(w);
            aiserve_tok_word_add(w, c, cs, bs, be);
            aiserve_tok_word_flush(w);
            return;
        }
    }

    aiserve_tok_word_add(w, c, cs, bs, be);
}


/* after NFD: drop Mn (strip_accents), lowercase, pre-tokenize */
static void
aiserve_tok_normalized(aiserve_tok_word_t *w, uint32_t c, unsigned cls,
    uint32_t cs, uint32_t bs, uint32_t be)
{
    const aiserve_tok_t  *tok = w->tok;
    uint32_t              l[3];
    size_t                nl, j;

    if (tok->strip_accents && (cls & AISERVE_TOK_U_MN)) {
        return;
    }

    if (tok->lowercase && (cls & AISERVE_TOK_U_LOWER)) {
        nl = aiserve_tok_uni_lower(c, l);
        for (j = 0; j < nl; j++) {
            aiserve_tok_pretok(w, l[j], aiserve_tok_uni_class(l[j]), cs, bs,
                               be);
        }
        return;
    }

    aiserve_tok_pretok(w, c, cls, cs, bs, be);
}


/*
 * Ends a run of combining marks: NFD's canonical ordering sorts it by
 * combining class (stable).  Alignments then follow the reference's
 * NormalizedString::transform_range (tokenizer/normalizer.rs): the marks
 * move with their "change" (0 for the first code point of a
 * decomposition, +1 for the rest); a 0 takes the next original code point
 * in order, a +1 repeats the alignment before it.  A run whose marks
 * strip_accents all removes leaves nothing to order.
 */
static void
aiserve_tok_run_flush(aiserve_tok_word_t *w)
{
    aiserve_tok_mark_t  *r = w->run, *m;
    size_t               n = w->n_run, i, k, hp, count[256], pos;
    uint32_t             c, cs, bs, be;

    w->n_run = 0;
    if (w->run_kept == 0) {
        return;
    }
    w->run_kept = 0;

    /* counting sort of positions by class: linear in the run */
    memset(count, 0, sizeof(count));
    for (i = 0; i < n; i++) {
        count[r[i].ccc & 0xFF]++;
    }
    pos = 0;
    for (k = 0; k < 256; k++) {
        i = count[k];
        count[k] = pos;
        pos += i;
    }
    for (i = 0; i < n; i++) {
        w->order[count[r[i].ccc & 0xFF]++] = (uint32_t) i;
    }

    /* before the first head, a +1 can only belong to the starter that
     * precedes the run, whose alignment its first mark carries */
    cs = r[0].cs;
    bs = r[0].bs;
    be = r[0].be;
    hp = 0;
    for (k = 0; k < n; k++) {
        m = &r[w->order[k]];
        if (m->head) {
            while (!r[hp].head) {
                hp++;
            }
            cs = r[hp].cs;
            bs = r[hp].bs;
            be = r[hp].be;
            hp++;
        }
        c = m->c;
        aiserve_tok_normalized(w, c, aiserve_tok_uni_class(c), cs, bs, be);
    }
}


static inline void
aiserve_tok_run_end(aiserve_tok_word_t *w)
{
    if (w->n_run) {
        aiserve_tok_run_flush(w);
    }
}


static void
aiserve_tok_run_push(aiserve_tok_word_t *w, uint32_t c, unsigned cls,
    int head, uint32_t cs, uint32_t bs, uint32_t be)
{
    aiserve_tok_mark_t  *nr, *m;
    uint32_t            *no;
    size_t               cap;

    if (w->n_run == w->run_cap) {
        cap = w->run_cap ? w->run_cap * 2 : 16;
        nr = realloc(w->run, cap * sizeof(*nr));
        if (nr == NULL) {
            w->oom = 1;
            return;
        }
        w->run = nr;
        no = realloc(w->order, cap * sizeof(*no));
        if (no == NULL) {
            w->oom = 1;
            return;
        }
        w->order = no;
        w->run_cap = cap;
    }

    m = &w->run[w->n_run++];
    m->c = c;
    m->ccc = (uint16_t) aiserve_tok_uni_ccc(c);
    m->head = (uint16_t) head;
    m->cs = cs;
    m->bs = bs;
    m->be = be;
    if (!(cls & AISERVE_TOK_U_MN)) {
        w->run_kept++;
    }
}


/*
 * strip_accents (NFD: decomposition and canonical ordering, then drop Mn)
 * then lowercase, as bert.rs orders them, then the pre-tokenizer; every
 * result aligns to an original code point.
 */
static void
aiserve_tok_normalize(aiserve_tok_word_t *w, uint32_t c, unsigned cls,
    uint32_t cs, uint32_t bs, uint32_t be)
{
    const aiserve_tok_t  *tok = w->tok;
    uint32_t              d[8];
    size_t                nd, i;
    unsigned              dc;

    if (!tok->strip_accents) {
        aiserve_tok_normalized(w, c, cls, cs, bs, be);
        return;
    }

    if (cls & AISERVE_TOK_U_NFD) {
        nd = aiserve_tok_uni_nfd(c, d);
    } else {
        d[0] = c;
        nd = 1;
    }

    for (i = 0; i < nd; i++) {
        dc = (i == 0 && nd == 1) ? cls : aiserve_tok_uni_class(d[i]);
        if (dc & AISERVE_TOK_U_MARK) {
            aiserve_tok_run_push(w, d[i], dc, i == 0, cs, bs, be);
            continue;
        }
        aiserve_tok_run_end(w);
        aiserve_tok_normalized(w, d[i], dc, cs, bs, be);
    }
}


/*
 * Longest added token matching at text[i] (added_vocabulary.rs find_matches:
 * leftmost-longest over the raw text), honouring single_word.  Returns its
 * index or -1.
 */
static long
aiserve_tok_added_match(const aiserve_tok_t *tok, const char *text,
    size_t len, size_t i, uint32_t prev)
{
    size_t                      k, end;
    const aiserve_tok_added_t  *a;
    utf8proc_int32_t            next;

    for (k = 0; k < tok->n_added; k++) {
        a = &tok->added[k];
        if ((uint8_t) tok->pool[a->off] != (uint8_t) text[i]) {
            continue;
        }
        if (a->len > len - i
            || memcmp(tok->pool + a->off, text + i, a->len) != 0)
        {
            continue;
        }
        if (a->single_word) {
            end = i + a->len;
            if (i > 0 && aiserve_tok_uni_is_word(prev)) {
                return -1;
            }
            if (end < len
                && utf8proc_iterate((const utf8proc_uint8_t *) text + end,
                                    (utf8proc_ssize_t) (len - end), &next) > 0
                && aiserve_tok_uni_is_word((uint32_t) next))
            {
                return -1;
            }
        }
        return (long) k;
    }

    return -1;
}


/*
 * Tokenizes one sequence into out (no special tokens).  Returns 0, or -1
 * with err set on invalid UTF-8 (naming the byte) or memory exhaustion.
 */
static int
aiserve_tok_sequence(const aiserve_tok_t *tok, aiserve_tok_word_t *w,
    const char *text, size_t len, const char *what, char *err,
    size_t err_len)
{
    const uint8_t              *bmp, *s;
    size_t                      i, skip_until;
    uint32_t                    ci, c, prev, ws_bs, ws_cs, floor_bs, floor_cs;
    uint32_t                    mbs, mcs, mbe, mce;
    utf8proc_int32_t            cp;
    utf8proc_ssize_t            n;
    unsigned                    cls;
    long                        k;
    const aiserve_tok_added_t  *a;

    bmp = aiserve_tok_uni_bmp();
    s = (const uint8_t *) text;
    ci = 0;
    prev = 0;
    ws_bs = ws_cs = 0;              /* start of the trailing whitespace run */
    floor_bs = floor_cs = 0;        /* end of the last added token */
    skip_until = 0;

    for (i = 0; i < len; /* void */) {

        if (tok->n_added && tok->added_first[s[i]] && i >= skip_until) {
            k = aiserve_tok_added_match(tok, text, len, i, prev);
            if (k >= 0) {
                a = &tok->added[k];
                aiserve_tok_run_end(w);
                aiserve_tok_word_flush(w);
                mbs = (uint32_t) i;
                mcs = ci;
                mbe = (uint32_t) (i + a->len);
                mce = ci;
                for (k = 0; k < (long) a->len; k++) {
                    mce += (s[i + (size_t) k] & 0xC0) != 0x80;
                }
                if (a->lstrip && ws_bs < mbs) {
                    mbs = ws_bs > floor_bs ? ws_bs : floor_bs;
                    mcs = ws_cs > floor_cs ? ws_cs : floor_cs;
                }
                i = mbe;
                ci = mce;
                if (a->rstrip) {
                    while (i < len) {
                        n = utf8proc_iterate(s + i, (utf8proc_ssize_t)
                                             (len - i), &cp);
                        if (n < 0 || !(aiserve_tok_uni_class((uint32_t) cp)
                                       & AISERVE_TOK_U_SPACE))
                        {
                            break;
                        }
                        i += (size_t) n;
                        ci++;
                        prev = (uint32_t) cp;
                    }
                    mbe = (uint32_t) i;
                    mce = ci;
                }
                if (aiserve_tok_vec_push(w->out, a->id, mcs, mce, mbs, mbe)
                    != 0)
                {
                    w->oom = 1;
                }
                prev = (uint32_t) tok->pool[a->off + a->len - 1];
                floor_bs = ws_bs = (uint32_t) i;
                floor_cs = ws_cs = ci;
                continue;
            }
            skip_until = i + 1;
        }

        if (s[i] < 0x80) {
            c = s[i];
            cls = bmp[c];
            n = 1;
        } else {
            n = utf8proc_iterate(s + i, (utf8proc_ssize_t) (len - i), &cp);
            if (n < 0) {
                aiserve_tok_err(err, err_len, "invalid UTF-8 %sat byte %zu",
                                what, i);
                return -1;
            }
            c = (uint32_t) cp;
            cls = c < 0x10000 ? bmp[c] : aiserve_tok_uni_class(c);
        }

        if (!(cls & AISERVE_TOK_U_SPACE)) {
            ws_bs = (uint32_t) (i + (size_t) n);
            ws_cs = ci + 1;
        }

        if (tok->clean_text && (cls & AISERVE_TOK_U_CONTROL)) {
            /* dropped */

        } else if (tok->clean_text && (cls & AISERVE_TOK_U_SPACE)) {
            aiserve_tok_run_end(w);
            aiserve_tok_word_flush(w);

        } else if (tok->chinese && (cls & AISERVE_TOK_U_CHINESE)) {
            aiserve_tok_run_end(w);
            aiserve_tok_word_flush(w);
            aiserve_tok_normalize(w, c, cls, ci, (uint32_t) i,
                                  (uint32_t) (i + (size_t) n));
            aiserve_tok_word_flush(w);

        } else if (c < 0x80 && !(cls & (AISERVE_TOK_U_SPACE
                                        | AISERVE_TOK_U_PUNCT))
                   && w->tok->bert_pretok)
        {
            aiserve_tok_run_end(w);
            if (tok->lowercase && c >= 'A' && c <= 'Z') {
                c += 'a' - 'A';
            }
            aiserve_tok_word_add(w, c, ci, (uint32_t) i, (uint32_t) i + 1);

        } else {
            aiserve_tok_normalize(w, c, cls, ci, (uint32_t) i,
                                  (uint32_t) (i + (size_t) n));
        }

        prev = c;
        i += (size_t) n;
        ci++;
    }

    aiserve_tok_run_end(w);
    aiserve_tok_word_flush(w);

    if (w->oom) {
        aiserve_tok_err(err, err_len, "out of memory");
        return -1;
    }

    return 0;
}


/* Encoding::truncate: keep max_len tokens from the right or the left end */
static void
aiserve_tok_truncate(aiserve_tok_vec_t *v, size_t max_len,
    aiserve_truncate_direction_e dir)
{
    if (v->n <= max_len) {
        return;
    }

    if (dir == AISERVE_TRUNCATE_LEFT) {
        memmove(v->v, v->v + (v->n - max_len), max_len * sizeof(*v->v));
    }
    v->n = max_len;
}


/* utils/truncation.rs truncate_encodings, max_length without the special
 * tokens */
static int
aiserve_tok_truncate_pair(const aiserve_tok_t *tok, aiserve_tok_vec_t *a,
    aiserve_tok_vec_t *b, size_t max_length,
    aiserve_truncate_direction_e dir, char *err, size_t err_len)
{
    size_t              total, to_remove, n1, n2, t;
    int                 swap;
    aiserve_tok_vec_t  *target;

    if (max_length == 0) {
        a->n = 0;
        if (b != NULL) {
            b->n = 0;
        }
        return 0;
    }

    total = a->n + (b ? b->n : 0);
    if (total <= max_length) {
        return 0;
    }
    to_remove = total - max_length;

    if (tok->trunc_strategy == AISERVE_TRUNC_LONGEST_FIRST) {
        if (b == NULL) {
            aiserve_tok_truncate(a, total - to_remove, dir);
            return 0;
        }
        n1 = a->n;
        n2 = b->n;
        swap = 0;
        if (n1 > n2) {
            swap = 1;
            t = n1;
            n1 = n2;
            n2 = t;
        }
        if (n1 > max_length) {
            n2 = n1;
        } else {
            n2 = (n1 > max_length - n1) ? n1 : max_length - n1;
        }
        if (n1 + n2 > max_length) {
            n1 = max_length / 2;
            n2 = n1 + max_length % 2;
        }
        if (swap) {
            t = n1;
            n1 = n2;
            n2 = t;
        }
        aiserve_tok_truncate(a, n1, dir);
        aiserve_tok_truncate(b, n2, dir);
        return 0;
    }

    if (tok->trunc_strategy == AISERVE_TRUNC_ONLY_FIRST) {
        target = a;
    } else if (b != NULL) {
        target = b;
    } else {
        aiserve_tok_err(err, err_len, "truncation only_second needs a "
                        "text_pair");
        return -1;
    }
    if (target->n <= to_remove) {
        aiserve_tok_err(err, err_len, "sequence too short to remove %zu "
                        "tokens", to_remove);
        return -1;
    }
    aiserve_tok_truncate(target, target->n - to_remove, dir);

    return 0;
}


static int
aiserve_tok_emit(aiserve_encoding_t *out, size_t k, int32_t id,
    uint32_t type_id, int special, int seq, const aiserve_tok_tk_t *t)
{
    out->input_ids[k] = id;
    out->token_type_ids[k] = (int32_t) type_id;
    out->special_tokens_mask[k] = (uint8_t) special;
    out->sequence_ids[k] = (int8_t) seq;
    out->offsets[2 * k] = t ? t->cs : 0;
    out->offsets[2 * k + 1] = t ? t->ce : 0;
    out->byte_offsets[2 * k] = t ? t->bs : 0;
    out->byte_offsets[2 * k + 1] = t ? t->be : 0;

    return 0;
}


int
aiserve_tok_encode(const aiserve_tok_t *tok, const char *text, size_t len,
    const char *pair, size_t pair_len, const aiserve_tok_opts_t *opts,
    aiserve_encoding_t *out, char *err, size_t err_len)
{
    aiserve_tok_word_t          w;
    aiserve_tok_vec_t           va, vb;
    aiserve_tok_opts_t          dflt;
    aiserve_tok_vec_t          *seqs[2];
    const aiserve_tok_piece_t  *pc;
    size_t                      n_special, max_length, n, k, i, j, p, np;
    size_t                      wcap;
    int                         is_pair, rc;

    memset(out, 0, sizeof(*out));
    if (opts == NULL) {
        aiserve_tok_opts_default(&dflt);
        opts = &dflt;
    }
    if (len >= UINT32_MAX || pair_len >= UINT32_MAX) {
        aiserve_tok_err(err, err_len, "text longer than 4 GB");
        return -1;
    }

    is_pair = pair != NULL;
    memset(&va, 0, sizeof(va));
    memset(&vb, 0, sizeof(vb));
    memset(&w, 0, sizeof(w));
    w.tok = tok;
    /* a word holds at most max_chars + 1 code points, and never more than
     * the normalized input has: NFD and lowercasing make at most 4 code
     * points of one input byte) */
    wcap = 4 * (len + pair_len);
    wcap = (tok->max_chars < wcap ? tok->max_chars : wcap) + 1;
    w.wbuf = malloc(4 * wcap + 4);
    w.wch = malloc(wcap * sizeof(*w.wch));
    w.hs = malloc(wcap * sizeof(*w.hs));
    w.ends = malloc(wcap * sizeof(*w.ends));
    w.wcap = wcap;
    rc = -1;
    if (w.wbuf == NULL || w.wch == NULL || w.hs == NULL || w.ends == NULL) {
        aiserve_tok_err(err, err_len, "out of memory");
        goto done;
    }

    w.out = &va;
    if (aiserve_tok_sequence(tok, &w, text, len, "", err, err_len) != 0) {
        goto done;
    }
    if (is_pair) {
        w.out = &vb;
        if (aiserve_tok_sequence(tok, &w, pair, pair_len, "in text_pair ",
                                 err, err_len) != 0)
        {
            goto done;
        }
    }

    n_special = (opts->add_special_tokens && tok->has_template)
                ? tok->n_special[is_pair] : 0;
    out->n_tokens_untruncated = va.n + vb.n + n_special;

    max_length = opts->max_length ? opts->max_length : tok->trunc_max;
    if (opts->truncation && max_length > 0) {
        if (max_length < n_special) {
            aiserve_tok_err(err, err_len, "max_length %zu is less than the "
                            "%zu special tokens", max_length, n_special);
            goto done;
        }
        if (aiserve_tok_truncate_pair(tok, &va, is_pair ? &vb : NULL,
                                      max_length - n_special, opts->direction,
                                      err, err_len) != 0)
        {
            goto done;
        }
    }

    n = va.n + vb.n + n_special;
    out->n_tokens = n;
    out->input_ids = malloc((n + 1) * sizeof(int32_t));
    out->token_type_ids = malloc((n + 1) * sizeof(int32_t));
    out->special_tokens_mask = malloc(n + 1);
    out->sequence_ids = malloc(n + 1);
    out->offsets = malloc((2 * n + 1) * sizeof(uint32_t));
    out->byte_offsets = malloc((2 * n + 1) * sizeof(uint32_t));
    if (out->input_ids == NULL || out->token_type_ids == NULL
        || out->special_tokens_mask == NULL || out->sequence_ids == NULL
        || out->offsets == NULL || out->byte_offsets == NULL)
    {
        aiserve_tok_err(err, err_len, "out of memory");
        goto done;
    }

    seqs[0] = &va;
    seqs[1] = &vb;
    k = 0;
    if (tok->has_template) {
        /* processors/template.rs apply_template: Sequence pieces set the
         * type id of their tokens; special pieces only with
         * add_special_tokens */
        np = tok->n_tmpl[is_pair];
        for (p = 0; p < np; p++) {
            pc = &tok->tmpl[is_pair][p];
            if (pc->seq >= 0) {
                for (i = 0; i < seqs[pc->seq]->n; i++) {
                    aiserve_tok_emit(out, k++, seqs[pc->seq]->v[i].id,
                                     pc->type_id, 0, pc->seq,
                                     &seqs[pc->seq]->v[i]);
                }
            } else if (opts->add_special_tokens) {
                for (j = 0; j < pc->n_ids; j++) {
                    aiserve_tok_emit(out, k++, pc->ids[j], pc->type_id, 1, -1,
                                     NULL);
                }
            }
        }
    } else {
        /* no post-processor: A then B, B with type id 1 (tokenizer/mod.rs
         * encodes the pair with type id 1) */
        for (i = 0; i < va.n; i++) {
            aiserve_tok_emit(out, k++, va.v[i].id, 0, 0, 0, &va.v[i]);
        }
        for (i = 0; i < vb.n; i++) {
            aiserve_tok_emit(out, k++, vb.v[i].id, 1, 0, 1, &vb.v[i]);
        }
    }
    out->n_tokens = k;
    rc = 0;

done:

    if (rc != 0) {
        aiserve_encoding_free(out);
    }
    free(va.v);
    free(vb.v);
    free(w.wbuf);
    free(w.wch);
    free(w.hs);
    free(w.ends);
    free(w.run);
    free(w.order);

    return rc;
}


void
aiserve_encoding_free(aiserve_encoding_t *enc)
{
    if (enc == NULL) {
        return;
    }

    free(enc->input_ids);
    free(enc->token_type_ids);
    free(enc->special_tokens_mask);
    free(enc->sequence_ids);
    free(enc->offsets);
    free(enc->byte_offsets);
    memset(enc, 0, sizeof(*enc));
}
