/*
 * aiserve tokenizer: encoding, identical to Hugging Face `tokenizers`.
 *
 * One pass over the input: each code point is validated, classified
 * (aiserve_tok_unicode.c), normalized (BertNormalizer), split into words
 * (BertPreTokenizer) and every finished word goes through WordPiece at
 * once.  Per call the memory is the token list, one word buffer of at most
 * max_input_chars_per_word + 1 code points and the current run of
 * combining marks; only a tokenizer with normalized added tokens, or
 * without a pre-tokenizer, keeps a whole normalized piece.  Time and
 * memory are linear in the input (WordPiece tries at most as many
 * candidates per position as the longest vocabulary entry has bytes).
 *
 * Sources followed (tokenizers 0.23): normalizers/bert.rs,
 * pre_tokenizers/bert.rs, models/wordpiece/mod.rs,
 * processors/template.rs, utils/truncation.rs,
 * tokenizer/added_vocabulary.rs, tokenizer/normalizer.rs (alignments),
 * tokenizer/mod.rs (post_process).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "aiserve_tok_internal.h"
#include "aiserve_tok_unicode.h"


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


/* one code point of the normalized piece, when it must be kept whole */
typedef struct {
    uint32_t  c;
    uint32_t  cs;
    uint32_t  bs, be;
} aiserve_tok_sch_t;


typedef struct {
    const aiserve_tok_t  *tok;
    aiserve_tok_vec_t    *out;
    /* with normalized added tokens, the normalized piece is collected in
     * seg and matched before pre-tokenization; otherwise it streams */
    int                   seg_on;
    aiserve_tok_sch_t    *seg;
    size_t                n_seg, seg_cap;
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
        /* an empty continuing_subword_prefix looks pieces up as they are */
        map = (start && tok->prefix_len) ? &tok->cont : &tok->full;
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


static void
aiserve_tok_seg_push(aiserve_tok_word_t *w, uint32_t c, uint32_t cs,
    uint32_t bs, uint32_t be)
{
    aiserve_tok_sch_t  *ns;
    size_t              cap;

    if (w->n_seg == w->seg_cap) {
        cap = w->seg_cap ? w->seg_cap * 2 : 256;
        ns = realloc(w->seg, cap * sizeof(*ns));
        if (ns == NULL) {
            w->oom = 1;
            return;
        }
        w->seg = ns;
        w->seg_cap = cap;
    }

    w->seg[w->n_seg].c = c;
    w->seg[w->n_seg].cs = cs;
    w->seg[w->n_seg].bs = bs;
    w->seg[w->n_seg].be = be;
    w->n_seg++;
}


/* a normalized code point goes to the pre-tokenizer, or to the piece */
static inline void
aiserve_tok_sink(aiserve_tok_word_t *w, uint32_t c, unsigned cls,
    uint32_t cs, uint32_t bs, uint32_t be)
{
    if (w->seg_on) {
        aiserve_tok_seg_push(w, c, cs, bs, be);
    } else {
        aiserve_tok_pretok(w, c, cls, cs, bs, be);
    }
}


/* after NFD: drop Mn (strip_accents), lowercase, on to the sink */
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
            aiserve_tok_sink(w, l[j], aiserve_tok_uni_class(l[j]), cs, bs,
                             be);
        }
        return;
    }

    aiserve_tok_sink(w, c, cls, cs, bs, be);
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
        /* a singleton decomposition (U+1FEF -> '`') changes the class */
        dc = (nd == 1 && d[0] == c) ? cls : aiserve_tok_uni_class(d[i]);
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
 * leftmost-longest over the raw text).  Returns its index, or -1 with
 * *skip set to the bytes a match rejected by single_word covers (the
 * reference's matcher moves past it) or 1.
 */
static long
aiserve_tok_added_match(const aiserve_tok_t *tok, const char *text,
    size_t len, size_t i, uint32_t prev, size_t *skip)
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
            *skip = a->len;
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

    *skip = 1;
    return -1;
}


/*
 * One original code point c (index ci, bytes [i, i + n)) through
 * BertNormalizer: clean_text drops controls and turns whitespace into a
 * space, handle_chinese_chars pads CJK ideographs with spaces, then NFD /
 * Mn removal / lowercase (aiserve_tok_normalize).  Streaming, a space just
 * ends the word.
 */
static void
aiserve_tok_char(aiserve_tok_word_t *w, uint32_t c, unsigned cls,
    uint32_t ci, size_t i, size_t n)
{
    const aiserve_tok_t  *tok = w->tok;
    uint32_t              bs, be;

    bs = (uint32_t) i;
    be = (uint32_t) (i + n);

    if (tok->clean_text && (cls & AISERVE_TOK_U_CONTROL)) {
        return;
    }

    /* the spaces: with BertPreTokenizer and no normalized added tokens
     * they just end the word */
    if (tok->clean_text && (cls & AISERVE_TOK_U_SPACE)) {
        aiserve_tok_run_end(w);
        aiserve_tok_sink(w, ' ', AISERVE_TOK_U_SPACE, ci, bs, be);
        return;
    }

    if (tok->chinese && (cls & AISERVE_TOK_U_CHINESE)) {
        aiserve_tok_run_end(w);
        aiserve_tok_sink(w, ' ', AISERVE_TOK_U_SPACE, ci, bs, be);
        aiserve_tok_normalize(w, c, cls, ci, bs, be);
        aiserve_tok_sink(w, ' ', AISERVE_TOK_U_SPACE, ci, bs, be);
        return;
    }

    if (c < 0x80 && !(cls & (AISERVE_TOK_U_SPACE | AISERVE_TOK_U_PUNCT))
        && tok->bert_pretok && !w->seg_on)
    {
        /* ASCII letters and digits: no decomposition, no class lookups */
        aiserve_tok_run_end(w);
        if (tok->lowercase && c >= 'A' && c <= 'Z') {
            c += 'a' - 'A';
        }
        aiserve_tok_word_add(w, c, ci, bs, be);
        return;
    }

    aiserve_tok_normalize(w, c, cls, ci, bs, be);
}


static inline int
aiserve_tok_seg_is_word(const aiserve_tok_word_t *w, size_t k)
{
    return aiserve_tok_uni_is_word(w->seg[k].c);
}


static inline int
aiserve_tok_seg_is_space(const aiserve_tok_word_t *w, size_t k)
{
    return (aiserve_tok_uni_class(w->seg[k].c) & AISERVE_TOK_U_SPACE) != 0;
}


/* normalized code points [from, to) of the piece to the pre-tokenizer */
static void
aiserve_tok_seg_pretok(aiserve_tok_word_t *w, size_t from, size_t to)
{
    const aiserve_tok_sch_t  *sc;

    for (/* void */; from < to; from++) {
        sc = &w->seg[from];
        aiserve_tok_pretok(w, sc->c, aiserve_tok_uni_class(sc->c), sc->cs,
                           sc->bs, sc->be);
    }
    aiserve_tok_word_flush(w);
}


/*
 * Ends a normalized piece: finds the normalized added tokens in it
 * (added_vocabulary.rs find_matches on the normalized string:
 * leftmost-longest, single_word, lstrip, rstrip, a rejected match still
 * consumed), pre-tokenizes what lies between them.  A match's offsets are
 * those of its first and last normalized code points.
 */
static void
aiserve_tok_seg_flush(aiserve_tok_word_t *w)
{
    const aiserve_tok_t         *tok = w->tok;
    const aiserve_tok_nadded_t  *a, *best;
    size_t                       i, j, k, n, from, start, stop, skip;

    if (!w->seg_on) {
        return;
    }

    n = w->n_seg;
    from = 0;
    skip = 0;
    for (i = 0; i < n; i++) {
        if (i < skip) {
            continue;
        }
        best = NULL;
        for (k = 0; k < tok->n_nadded; k++) {
            a = &tok->nadded[k];
            if (a->cps[0] != w->seg[i].c || a->n > n - i
                || (best != NULL && a->n <= best->n))
            {
                continue;
            }
            for (j = 1; j < a->n && a->cps[j] == w->seg[i + j].c; j++) {
                /* void */
            }
            if (j == a->n) {
                best = a;
            }
        }
        if (best == NULL) {
            continue;
        }

        /* the search goes on after the match itself: a match may begin in
         * the spaces rstrip took (the offsets then overlap, as in the
         * reference) */
        start = i;
        stop = i + best->n;
        skip = stop;
        if (best->single_word
            && ((start > 0 && aiserve_tok_seg_is_word(w, start - 1))
                || (stop < n && aiserve_tok_seg_is_word(w, stop))))
        {
            continue;
        }
        if (best->lstrip) {
            /* max(start of the spaces before it, end of the last match) */
            if (start < from) {
                start = from;
            }
            while (start > from && aiserve_tok_seg_is_space(w, start - 1)) {
                start--;
            }
        }
        if (best->rstrip) {
            while (stop < n && aiserve_tok_seg_is_space(w, stop)) {
                stop++;
            }
        }

        if (from < start) {
            aiserve_tok_seg_pretok(w, from, start);
        }
        if (aiserve_tok_vec_push(w->out, best->id, w->seg[start].cs,
                                 w->seg[stop - 1].cs + 1, w->seg[start].bs,
                                 w->seg[stop - 1].be) != 0)
        {
            w->oom = 1;
        }
        from = stop;
        i = skip - 1;
    }

    aiserve_tok_seg_pretok(w, from, n);
    w->n_seg = 0;
}


/* the last code point of the UTF-8 string s (len > 0 bytes) */
static uint32_t
aiserve_tok_last_cp(const char *s, size_t len)
{
    size_t            i;
    utf8proc_int32_t  cp;

    for (i = len - 1; i > 0 && ((uint8_t) s[i] & 0xC0) == 0x80; i--) {
        /* void */
    }
    if (utf8proc_iterate((const utf8proc_uint8_t *) s + i,
                         (utf8proc_ssize_t) (len - i), &cp) < 0)
    {
        return 0;
    }

    return (uint32_t) cp;
}


/*
 * Tokenizes one sequence into out (no special tokens).  Raw added tokens
 * are found in the original text first (added_vocabulary.rs: the pieces
 * between them are normalized one by one).  Returns 0, or -1 with err set
 * on invalid UTF-8 (naming the byte) or memory exhaustion.
 */
static int
aiserve_tok_sequence(const aiserve_tok_t *tok, aiserve_tok_word_t *w,
    const char *text, size_t len, const char *what, char *err,
    size_t err_len)
{
    const uint8_t              *bmp, *s;
    size_t                      i, j, skip_until, skip = 0, dead_until;
    uint32_t                    ci, c, prev, ws_bs, ws_cs;
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
    /* start of the trailing whitespace run, or end of the last added
     * token if later */
    ws_bs = ws_cs = 0;
    skip_until = 0;
    dead_until = 0;

    for (i = 0; i < len; /* void */) {

        if (tok->n_added && tok->added_first[s[i]] && i >= skip_until) {
            k = aiserve_tok_added_match(tok, text, len, i, prev, &skip);
            if (k >= 0) {
                a = &tok->added[k];
                aiserve_tok_run_end(w);
                mbs = (uint32_t) i;
                mcs = ci;
                mbe = (uint32_t) (i + a->len);
                mce = ci;
                for (k = 0; k < (long) a->len; k++) {
                    mce += (s[i + (size_t) k] & 0xC0) != 0x80;
                }
                if (a->lstrip) {
                    /* max(start of the spaces before it, end of the last
                     * token): ws_* never fall below the last token's end.
                     * The spaces leave the piece before it (streaming,
                     * they only ended a word) */
                    mbs = ws_bs;
                    mcs = ws_cs;
                    while (w->n_seg && w->seg[w->n_seg - 1].bs >= mbs) {
                        w->n_seg--;
                    }
                }
                aiserve_tok_seg_flush(w);
                aiserve_tok_word_flush(w);
                i = mbe;
                ci = mce;
                prev = aiserve_tok_last_cp(tok->pool + a->off, a->len);
                if (a->rstrip) {
                    /* the spaces after it join the token, but the search
                     * goes on right after the match (they are "dead") */
                    for (j = i; j < len; j += (size_t) n) {
                        n = utf8proc_iterate(s + j, (utf8proc_ssize_t)
                                             (len - j), &cp);
                        if (n < 0 || !(aiserve_tok_uni_class((uint32_t) cp)
                                       & AISERVE_TOK_U_SPACE))
                        {
                            break;
                        }
                        mce++;
                    }
                    mbe = (uint32_t) j;
                }
                if (aiserve_tok_vec_push(w->out, a->id, mcs, mce, mbs, mbe)
                    != 0)
                {
                    w->oom = 1;
                }
                dead_until = mbe;
                ws_bs = mbe;
                ws_cs = mce;
                continue;
            }
            skip_until = i + skip;
        }

        if (s[i] < 0x80) {
            c = s[i];
            cls = bmp[c];
            n = 1;
        } else {
            n = utf8proc_iterate(s + i, (utf8proc_ssize_t) (len - i), &cp);
            if (n < 0) {
                aiserve_err(err, err_len, "invalid UTF-8 %sat byte %zu",
                                what, i);
                return -1;
            }
            c = (uint32_t) cp;
            cls = c < 0x10000 ? bmp[c] : aiserve_tok_uni_class(c);
        }

        if (i < dead_until) {
            /* taken by an rstrip token: not text any more */
            prev = c;
            i += (size_t) n;
            ci++;
            continue;
        }

        if (!(cls & AISERVE_TOK_U_SPACE)) {
            ws_bs = (uint32_t) (i + (size_t) n);
            ws_cs = ci + 1;
        }

        aiserve_tok_char(w, c, cls, ci, i, (size_t) n);

        prev = c;
        i += (size_t) n;
        ci++;
    }

    aiserve_tok_run_end(w);
    aiserve_tok_seg_flush(w);
    aiserve_tok_word_flush(w);

    if (w->oom) {
        aiserve_err(err, err_len, "out of memory");
        return -1;
    }

    return 0;
}


int
aiserve_tok_normalize_string(const aiserve_tok_t *tok, const char *s,
    size_t len, uint32_t **out, size_t *n)
{
    aiserve_tok_word_t  w;
    size_t              i, k;
    utf8proc_int32_t    cp;
    utf8proc_ssize_t    r;

    memset(&w, 0, sizeof(w));
    w.tok = tok;
    w.seg_on = 1;

    for (i = 0, k = 0; i < len; i += (size_t) r, k++) {
        r = utf8proc_iterate((const utf8proc_uint8_t *) s + i,
                             (utf8proc_ssize_t) (len - i), &cp);
        if (r < 0) {
            w.oom = 1;
            break;
        }
        aiserve_tok_char(&w, (uint32_t) cp,
                         aiserve_tok_uni_class((uint32_t) cp), (uint32_t) k,
                         i, (size_t) r);
    }
    aiserve_tok_run_end(&w);

    *out = malloc((w.n_seg ? w.n_seg : 1) * sizeof(uint32_t));
    if (*out == NULL || w.oom) {
        free(*out);
        *out = NULL;
        w.oom = 1;
    } else {
        for (k = 0; k < w.n_seg; k++) {
            (*out)[k] = w.seg[k].c;
        }
        *n = w.n_seg;
    }
    free(w.seg);
    free(w.run);
    free(w.order);

    return w.oom ? -1 : 0;
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
        aiserve_err(err, err_len, "truncation only_second needs a "
                        "text_pair");
        return -1;
    }
    if (target->n <= to_remove) {
        aiserve_err(err, err_len, "sequence too short to remove %zu "
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
        aiserve_err(err, err_len, "text longer than 4 GB");
        return -1;
    }

    is_pair = pair != NULL;
    memset(&va, 0, sizeof(va));
    memset(&vb, 0, sizeof(vb));
    memset(&w, 0, sizeof(w));
    w.tok = tok;
    /* the normalized piece is kept whole for normalized added tokens, and
     * without a pre-tokenizer when an lstrip added token may take back
     * spaces (word characters there) */
    w.seg_on = tok->n_nadded > 0 || (!tok->bert_pretok && tok->any_lstrip);
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
        aiserve_err(err, err_len, "out of memory");
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
            aiserve_err(err, err_len, "max_length %zu is less than the "
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
        aiserve_err(err, err_len, "out of memory");
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
    free(w.seg);

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
